"""Forms of the pages (the REST API validates with its own schemas)."""

from __future__ import annotations

from django.contrib.auth.forms import UserCreationForm


class SignupForm(UserCreationForm):
    """Username and password twice, with the project's password validators."""

    class Meta(UserCreationForm.Meta):
        fields = ("username",)
