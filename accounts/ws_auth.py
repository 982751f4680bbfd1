"""WebSocket authentication: an API key header (mobile apps) or the session cookie (browser).

A key in `X-API-Key` (or `Authorization: Bearer`) is checked for the chat scope. Without one,
Channels' session middleware resolves the user from the cookie; such a socket must also come
from an allowed Origin, since browsers attach cookies to cross-site WebSocket handshakes.
The outcome is left in the scope (`user`, `api_key`, `auth_error`): the consumer accepts and
then closes with 4401 (credential) or 4403 (origin) so that the client sees why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, cast
from urllib.parse import ParseResult, urlparse

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable
from asgiref.typing import Scope as ASGIScope
from channels.auth import AuthMiddlewareStack
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser

from accounts.api_keys import api_key_authenticate_async
from accounts.errors import EvaError
from accounts.models import ApiKey, Scope


class SocketApplication(Protocol):
    """The application a middleware wraps (Channels' URLRouter, a consumer, another middleware)."""

    # The scope is Any: what is passed down is a plain dict with EVA's keys added (`api_key`,
    # `auth_method`, `auth_error`), which no ASGI scope type declares.
    async def __call__(self, scope: Any, receive: ASGIReceiveCallable, send: ASGISendCallable) -> Any: ...


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", [])
    for key, value in headers:
        if key.lower() == name:
            try:
                return value.decode("latin1")
            except UnicodeDecodeError:
                return None
    return None


def presented_api_key(scope: Mapping[str, Any]) -> str | None:
    """The key a client sent in X-API-Key or as a Bearer token, if any."""
    key = _header(scope, b"x-api-key")
    if key:
        return key.strip()
    authorization = _header(scope, b"authorization") or ""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _parsed_origin(scope: Mapping[str, Any]) -> ParseResult | None:
    origin = _header(scope, b"origin")
    if not origin:
        return None
    try:
        return urlparse(origin)
    except ValueError:
        return None


async def _never_called(scope: ASGIScope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    raise AssertionError("origins are matched, never passed on, by origin_allowed")


def origin_allowed(scope: Mapping[str, Any]) -> bool:
    """Whether the handshake's Origin is one of ALLOWED_HOSTS or CSRF_TRUSTED_ORIGINS."""
    parsed = _parsed_origin(scope)
    if parsed is None:
        return False
    patterns = [*settings.ALLOWED_HOSTS, *settings.CSRF_TRUSTED_ORIGINS]
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        patterns += ["localhost", "127.0.0.1", "[::1]"]
    # Only Channels' origin matching is used: the validator's refusal (a handshake denied
    # without a reason) is not, so the application it wraps is never called.
    return OriginValidator(_never_called, patterns).valid_origin(parsed)


async def _authenticate_key(raw_key: str) -> tuple[AbstractBaseUser | AnonymousUser, ApiKey | None, str | None]:
    try:
        key = await api_key_authenticate_async(raw_key=raw_key, scope=Scope.CHAT)
    except EvaError as exc:
        return AnonymousUser(), None, exc.code
    return key.owner, key, None


class _CookieOriginGuard:
    """Runs after the session middleware: marks unauthenticated or cross-origin sockets."""

    def __init__(self, inner: SocketApplication) -> None:
        self.inner = inner

    async def __call__(self, scope: Mapping[str, Any], receive: ASGIReceiveCallable, send: ASGISendCallable) -> Any:
        inner_scope = dict(scope, api_key=None, auth_method="session")
        user = inner_scope.get("user")
        if user is None or not user.is_authenticated:
            inner_scope["auth_error"] = "unauthenticated"
        elif not origin_allowed(inner_scope):
            inner_scope["auth_error"] = "origin_not_allowed"
        return await self.inner(inner_scope, receive, send)


class WebsocketAuthMiddleware:
    """API key first; otherwise the session cookie with an Origin check."""

    def __init__(self, inner: SocketApplication) -> None:
        self.inner = inner
        # types-channels types the stack as any ASGI application, ASGI2's included; it is
        # Channels' chain of ASGI3 middleware around the guard.
        self.session_stack = cast(SocketApplication, AuthMiddlewareStack(_CookieOriginGuard(inner)))

    async def __call__(self, scope: Mapping[str, Any], receive: ASGIReceiveCallable, send: ASGISendCallable) -> Any:
        raw_key = presented_api_key(scope)
        if raw_key is None:
            return await self.session_stack(scope, receive, send)
        user, key, error = await _authenticate_key(raw_key)
        inner_scope = dict(scope, user=user, api_key=key, auth_method="api_key")
        if error:
            inner_scope["auth_error"] = error
        return await self.inner(inner_scope, receive, send)
