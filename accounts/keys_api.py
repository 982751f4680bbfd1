"""REST endpoints where a logged-in user (or a key holder) manages their own API keys."""

from __future__ import annotations

from datetime import datetime

from django.http import HttpRequest
from ninja import Router, Schema, Status

from accounts.api_keys import api_key_create, api_key_revoke, api_keys_of, key_display
from accounts.auth import BrowserSessionAuth, request_principal
from accounts.error_schemas import AUTH_ERRORS, BODY_ERRORS, error_responses
from accounts.models import ApiKey, Scope
from accounts.validation import StoredDatetime, StoredText

# Keys are managed from a logged-in browser session only: a leaked key must not be able
# to mint more keys.
router = Router(tags=["api keys"], auth=[BrowserSessionAuth(Scope.CHAT)])
KEY_ERRORS = error_responses(*AUTH_ERRORS, 404, 422)  # someone else's key, or none, is 404


class KeyIn(Schema):
    name: StoredText
    scopes: list[str] = [Scope.CHAT.value]
    expires_at: StoredDatetime | None = None


class KeyOut(Schema):
    id: int
    name: str
    display: str
    scopes: list[str]
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


class KeyCreatedOut(KeyOut):
    key: str


def _serialize(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.pk,
        "name": key.name,
        "display": key_display(key),
        "scopes": key.scopes,
        "expires_at": key.expires_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
        "created_at": key.created_at,
    }


@router.get("", response={200: list[KeyOut], **error_responses(*AUTH_ERRORS)}, summary="List my API keys")
def list_keys(request: HttpRequest) -> list[dict[str, object]]:
    return [_serialize(key) for key in api_keys_of(owner=request_principal(request).user)]


@router.post(
    "",
    response={201: KeyCreatedOut, **error_responses(*AUTH_ERRORS, *BODY_ERRORS)},
    summary="Create an API key (the secret is shown once)",
)
def create_key(request: HttpRequest, payload: KeyIn) -> Status[dict[str, object]]:
    key, plaintext = api_key_create(
        owner=request_principal(request).user, name=payload.name, scopes=payload.scopes, expires_at=payload.expires_at
    )
    return Status(201, {**_serialize(key), "key": plaintext})


@router.post("/{key_id}/revoke", response={200: KeyOut, **KEY_ERRORS}, summary="Revoke one of my API keys")
def revoke_key(request: HttpRequest, key_id: int) -> dict[str, object]:
    return _serialize(api_key_revoke(owner=request_principal(request).user, key_id=key_id))


@router.delete("/{key_id}", response={200: KeyOut, **KEY_ERRORS}, summary="Revoke one of my API keys")
def delete_key(request: HttpRequest, key_id: int) -> dict[str, object]:
    return _serialize(api_key_revoke(owner=request_principal(request).user, key_id=key_id))
