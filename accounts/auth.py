"""HTTP authentication for the REST API: API key (X-API-Key or Bearer) or Django session.

Each auth object is built for one scope. A browser session acts with every scope of a
normal user (chat, tts); the metrics scope needs a staff session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import close_old_connections, connection
from django.http import HttpRequest
from ninja.security import APIKeyHeader, HttpBearer, SessionAuth

from accounts.api_keys import api_key_authenticate, api_key_authenticate_bounded
from accounts.errors import AuthenticationFailed, PermissionDenied
from accounts.models import ApiKey, Scope


@dataclass(frozen=True)
class Principal:
    """Who is calling: always a user, and the key they used when not a browser session."""

    user: User
    api_key: ApiKey | None = None

    @property
    def user_id(self) -> int:
        return int(self.user.pk)

    @property
    def api_key_id(self) -> int | None:
        return None if self.api_key is None else int(self.api_key.pk)


def _authenticate_and_release(raw_key: str, scope: str) -> Principal:
    api_key = api_key_authenticate(raw_key=raw_key, scope=scope)
    # This runs in the request's own thread, which would otherwise keep its pooled database
    # connection until the response ends: for a long SSE stream, that starves the pool.
    # (Not inside a transaction: closing there would break it, e.g. ATOMIC_REQUESTS or a test.)
    if not connection.in_atomic_block:
        close_old_connections()
    return Principal(user=api_key.owner, api_key=api_key)


class _ScopedApiKeyHeader(APIKeyHeader):
    param_name = "X-API-Key"

    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__()


class _ScopedBearer(HttpBearer):
    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__()


class ApiKeyHeaderAuth(_ScopedApiKeyHeader):
    def authenticate(self, request: HttpRequest, key: str | None) -> Principal | None:
        if not key:
            return None  # let the next method try
        return _authenticate_and_release(key, self.scope)


class ApiKeyBearerAuth(_ScopedBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Principal | None:
        if not token:
            return None
        return _authenticate_and_release(token, self.scope)


async def _authenticate_async(raw_key: str | None, scope: str) -> Principal | None:
    if not raw_key:
        return None  # let the next method try
    api_key = await api_key_authenticate_bounded(raw_key=raw_key, scope=scope)
    return Principal(user=api_key.owner, api_key=api_key)


# Siblings of the sync classes, not subclasses: an async authenticate cannot stand in for a sync one.
class AsyncApiKeyHeaderAuth(_ScopedApiKeyHeader):
    """For async endpoints (chat): the key is checked on the event loop, not in a thread."""

    async def authenticate(self, request: HttpRequest, key: str | None) -> Principal | None:
        return await _authenticate_async(key, self.scope)


class AsyncApiKeyBearerAuth(_ScopedBearer):
    async def authenticate(self, request: HttpRequest, token: str) -> Principal | None:
        return await _authenticate_async(token, self.scope)


class BrowserSessionAuth(SessionAuth):
    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__(csrf=True)

    def __call__(self, request: HttpRequest) -> Principal | None:
        # No session cookie: not a browser call, so "no credentials" (401) rather than a CSRF 403.
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            return None
        principal = super().__call__(request)
        return principal if isinstance(principal, Principal) else None

    def authenticate(self, request: HttpRequest, key: str | None) -> Principal | None:
        user: Any = request.user
        if not user.is_authenticated:
            return None
        # Every user's metrics are for holders of metrics.view_latency (the dashboard's, the CSV's
        # and the admin's permission too); named as a string: accounts does not import metrics.
        if self.scope == Scope.METRICS and not user.has_perm("metrics.view_latency"):
            raise PermissionDenied(
                "The metrics API needs the metrics.view_latency permission.", code="missing_scope"
            )
        return Principal(user=user)


def request_principal(request: HttpRequest) -> Principal:
    """Who is calling: the Principal that auth_for's methods left in Ninja's `request.auth`."""
    principal = getattr(request, "auth", None)
    if isinstance(principal, Principal):
        return principal
    # Only an endpoint declared without auth_for gets here: refuse rather than act for nobody.
    raise AuthenticationFailed("Authentication is required.")


def auth_for(scope: str, *, for_async_view: bool = False) -> list[Any]:
    """The list of auth methods Ninja tries in order for an endpoint needing `scope`.

    An async view takes the async API key checks (on Postgres: no thread hop; Ninja would run
    the sync ones in a thread); a sync view keeps the sync ones (Ninja would run async ones
    through async_to_sync)."""
    if for_async_view:
        return [AsyncApiKeyHeaderAuth(scope), AsyncApiKeyBearerAuth(scope), BrowserSessionAuth(scope)]
    return [ApiKeyHeaderAuth(scope), ApiKeyBearerAuth(scope), BrowserSessionAuth(scope)]
