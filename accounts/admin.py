"""Admin for API keys. A key's secret is shown once, right after creation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from accounts.api_keys import ALL_SCOPES, api_key_create, key_display
from accounts.models import ApiKey

# Django's admin and form classes are generic only in django-stubs: subscripted for the type
# checker alone, since subscripting them at run time needs django_stubs_ext to patch them.
if TYPE_CHECKING:
    _ApiKeyForm = forms.ModelForm[ApiKey]
    _ApiKeyModelAdmin = admin.ModelAdmin[ApiKey]
else:
    _ApiKeyForm = forms.ModelForm
    _ApiKeyModelAdmin = admin.ModelAdmin


class ApiKeyCreationForm(_ApiKeyForm):
    scopes = forms.MultipleChoiceField(choices=[(s, s) for s in ALL_SCOPES], widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ["owner", "name", "scopes", "expires_at"]


@admin.register(ApiKey)
class ApiKeyAdmin(_ApiKeyModelAdmin):
    list_display = ["name", "owner", "display", "scopes", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix", "owner__username"]
    actions = ["revoke"]
    # The hash never leaves the database through the admin either.
    exclude = ["hashed_secret"]

    @admin.display(description="key")
    def display(self, obj: ApiKey) -> str:
        return key_display(obj)

    def get_form(
        self, request: HttpRequest, obj: ApiKey | None = None, change: bool = False, **kwargs: Any
    ) -> type[_ApiKeyForm]:
        if obj is None:
            kwargs["form"] = ApiKeyCreationForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:
            return []
        return ["owner", "prefix", "scopes", "created_at", "last_used_at", "revoked_at"]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, plaintext = api_key_create(
            owner=form.cleaned_data["owner"],
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            expires_at=form.cleaned_data.get("expires_at"),
        )
        obj.pk = key.pk
        obj.prefix = key.prefix
        obj.hashed_secret = key.hashed_secret
        obj.created_at = key.created_at
        obj._state.adding = False
        self.message_user(
            request, f"New key (copy it now, it will not be shown again): {plaintext}", level=messages.WARNING
        )

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} key(s).")
