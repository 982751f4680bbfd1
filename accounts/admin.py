"""Admin for API keys. A key's secret is shown once, right after creation.

The secret is in the answer to the form's POST and nowhere else: the admin's usual "added"
message would put it in the `messages` cookie (signed, not encrypted), so the add form's
answer is the page that shows it (never cached: the admin sends no-store), and nothing stores it.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from accounts.api_keys import ALL_SCOPES, api_key_create, api_keys_revoke, key_display
from accounts.models import ApiKey

NEW_KEY_TEMPLATE = "admin/accounts/apikey/new_key.html"

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

    def __init__(self, model: type[ApiKey], admin_site: admin.AdminSite) -> None:
        super().__init__(model, admin_site)
        # A created key's secret, from save_model to response_add of the same request.
        self._new_keys: weakref.WeakKeyDictionary[HttpRequest, str] = weakref.WeakKeyDictionary()

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
        self._new_keys[request] = plaintext

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        """The new key's page, with its secret, instead of a redirect carrying a message."""
        plaintext = self._new_keys.pop(request, None)
        if plaintext is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": "New API key",
            "opts": self.opts,
            "original": obj,
            "plaintext": plaintext,
        }
        # The admin's views send never_cache headers (no-store): no browser or proxy keeps it.
        return TemplateResponse(request, NEW_KEY_TEMPLATE, context)

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = api_keys_revoke(keys=queryset)  # the one revocation service: it ends their sockets too
        self.message_user(request, f"Revoked {count} key(s).")
