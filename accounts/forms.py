"""Forms of the pages (the REST API validates with its own schemas)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User

# UserCreationForm is generic only in django-stubs: subscripted for the type checker alone,
# since subscripting it at run time needs django_stubs_ext to patch it.
if TYPE_CHECKING:
    _UserCreationForm = UserCreationForm[User]
else:
    _UserCreationForm = UserCreationForm


class SignupForm(_UserCreationForm):
    """Username and password twice, with the project's password validators."""

    class Meta(UserCreationForm.Meta):
        fields = ("username",)
