"""WebSocket authentication: an API key header (mobile apps) or the session cookie (browser).

A key in `X-API-Key` (or `Authorization: Bearer`) is checked for the chat scope. Without one,
Channels' session middleware resolves the user from the cookie; such a socket must also come
from an allowed Origin, since browsers attach cookies to cross-site WebSocket handshakes.
The outcome is left in the scope (`user`, `api_key`, `auth_error`): the consumer accepts and
then closes with 4401 (credential) or 4403 (origin) so that the client sees why.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from channels.auth import AuthMiddlewareStack
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from accounts.api_keys import api_key_authenticate_async
from accounts.errors import EvaError
from accounts.models import Scope


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            try:
                return value.decode("latin1")
            except UnicodeDecodeError:
                return None
    return None


def presented_api_key(scope: dict[str, Any]) -> str | None:
    """The key a client sent in X-API-Key or as a Bearer token, if any."""
    key = _header(scope, b"x-api-key")
    if key:
        return key.strip()
    authorization = _header(scope, b"authorization") or ""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether the handshake's Origin is one of ALLOWED_HOSTS or CSRF_TRUSTED_ORIGINS."""
    origin = _header(scope, b"origin")
    if not origin:
        return False
    patterns = [*settings.ALLOWED_HOSTS, *settings.CSRF_TRUSTED_ORIGINS]
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        patterns += ["localhost", "127.0.0.1", "[::1]"]
    try:
        parsed = urlparse(origin)
    except ValueError:
        return False
    return OriginValidator(None, patterns).valid_origin(parsed)


async def _authenticate_key(raw_key: str) -> tuple[Any, Any, str | None]:
    try:
        key = await api_key_authenticate_async(raw_key=raw_key, scope=Scope.CHAT)
    except EvaError as exc:
        return AnonymousUser(), None, exc.code
    return key.owner, key, None


class _CookieOriginGuard(BaseMiddleware):
    """Runs after the session middleware: marks unauthenticated or cross-origin sockets."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope, api_key=None, auth_method="session")
        user = scope.get("user")
        if user is None or not user.is_authenticated:
            scope["auth_error"] = "unauthenticated"
        elif not origin_allowed(scope):
            scope["auth_error"] = "origin_not_allowed"
        return await super().__call__(scope, receive, send)


class WebsocketAuthMiddleware:
    """API key first; otherwise the session cookie with an Origin check."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.session_stack = AuthMiddlewareStack(_CookieOriginGuard(inner))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        raw_key = presented_api_key(scope)
        if raw_key is None:
            return await self.session_stack(scope, receive, send)
        user, key, error = await _authenticate_key(raw_key)
        scope = dict(scope, user=user, api_key=key, auth_method="api_key")
        if error:
            scope["auth_error"] = error
        return await self.inner(scope, receive, send)
