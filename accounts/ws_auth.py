"""WebSocket authentication: an API key header (mobile apps) or the session cookie (browser).

A key in `X-API-Key` (or `Authorization: Bearer`) is checked for the chat scope. Without one,
Channels' session middleware resolves the user from the cookie; such a socket must also come
from an allowed Origin, since browsers attach cookies to cross-site WebSocket handshakes.
The outcome is left in the scope (`user`, `api_key`, `session_key`, `auth_error`): the consumer
accepts and then closes with 4401 (credential) or 4403 (origin) so that the client sees why.
The consumer registers the socket under its credentials (accounts.revocation), so that revoking
the key, deactivating the user or logging the session out ends it.

The key lookup reaches the database; it may take WS_AUTH_TIMEOUT_S at most. When it takes longer
or the database fails, the handshake is answered here: the socket is accepted, gets an `error`
frame with the code `auth_unavailable`, and is closed with 4503 (like 4401/4403/4429, an HTTP
status plus 4000: the service is unavailable for now, try again; 1011 would say the server broke).
Never a handshake left hanging until the server's own timeout (reliability issue #16).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable
from channels.auth import AuthMiddlewareStack
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from accounts.api_keys import api_key_authenticate_bounded
from accounts.errors import EvaError
from accounts.models import ApiKey, Scope

logger = logging.getLogger("accounts.ws_auth")

AUTH_UNAVAILABLE = "auth_unavailable"
CLOSE_UNAVAILABLE = 4503


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


Origin = tuple[str, str, int]  # (scheme, host, port), lower case, the scheme's default port filled in
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_of(url: str) -> Origin | None:
    """`https://eva.example:8443` as ("https", "eva.example", 8443); None for anything but an origin."""
    try:
        parsed = urlsplit(url.strip())
        port = parsed.port
    except ValueError:
        return None
    scheme = parsed.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parsed.hostname or parsed.username is not None:
        return None
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
        return None
    return scheme, parsed.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _is_secure(scope: Mapping[str, Any]) -> bool:
    """Whether the client reached us over TLS, as Django's request.is_secure() decides it."""
    proxy_header = settings.SECURE_PROXY_SSL_HEADER  # set by BEHIND_TLS_PROXY
    if proxy_header:
        meta_name, secure_value = proxy_header
        # Django names the header as in META (HTTP_X_FORWARDED_PROTO); ASGI as sent.
        value = _header(scope, meta_name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin1"))
        if value is not None:
            return value.split(",")[0].strip() == secure_value
    return scope.get("scheme") in ("https", "wss")


def _allowed_hosts() -> list[str]:
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return [".localhost", "127.0.0.1", "[::1]"]  # Django's own default under DEBUG
    return list(settings.ALLOWED_HOSTS)


def _own_origin(scope: Mapping[str, Any]) -> Origin | None:
    """The origin the client addressed: the scope's scheme and its Host header, if ALLOWED_HOSTS has it."""
    host = _header(scope, b"x-forwarded-host") if settings.USE_X_FORWARDED_HOST else None
    host = (host or "").split(",")[0].strip() or _header(scope, b"host")
    if not host:
        return None
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return None
    return _origin_of(f"{'https' if _is_secure(scope) else 'http'}://{host}")


def _trusted(origin: Origin) -> bool:
    """Whether CSRF_TRUSTED_ORIGINS lists `origin`: exactly, or by a `https://*.example.com` wildcard."""
    scheme, host, port = origin
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        if "*" not in trusted:
            if _origin_of(trusted) == origin:
                return True
            continue
        pattern = _origin_of(trusted)
        if pattern is None or pattern[0] != scheme or pattern[2] != port or not pattern[1].startswith("*."):
            continue
        if is_same_domain(host, pattern[1][1:]):  # ".example.com": the domain and its subdomains
            return True
    return False


def origin_allowed(scope: Mapping[str, Any]) -> bool:
    """Whether the Origin is the request's own (scheme, Host, port; in ALLOWED_HOSTS) or a CSRF_TRUSTED_ORIGINS one."""
    raw = _header(scope, b"origin")
    origin = _origin_of(raw) if raw else None
    if origin is None:
        return False  # none (or "null", from a sandboxed page): a cookie alone is not enough
    return origin == _own_origin(scope) or _trusted(origin)


async def _authenticate_key(raw_key: str) -> tuple[AbstractBaseUser | AnonymousUser, ApiKey | None, str | None]:
    try:
        key = await api_key_authenticate_bounded(raw_key=raw_key, scope=Scope.CHAT)
    except EvaError as exc:  # AuthUnavailable included: its code is auth_unavailable
        return AnonymousUser(), None, exc.code
    return key.owner, key, None


async def _refuse_unavailable(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Accept the handshake, send the `auth_unavailable` error frame, close with 4503."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # the client went before its handshake was answered
    frame = {"type": "error", "code": AUTH_UNAVAILABLE, "message": "Authentication is unavailable; try again."}
    # The keys an ASGI server needs; Channels' test client wants only one of bytes and text.
    await send(cast(Any, {"type": "websocket.accept"}))
    await send(cast(Any, {"type": "websocket.send", "text": json.dumps(frame)}))
    await send(cast(Any, {"type": "websocket.close", "code": CLOSE_UNAVAILABLE}))


class _CookieOriginGuard:
    """Runs after the session middleware: marks unauthenticated or cross-origin sockets."""

    def __init__(self, inner: SocketApplication) -> None:
        self.inner = inner

    async def __call__(self, scope: Mapping[str, Any], receive: ASGIReceiveCallable, send: ASGISendCallable) -> Any:
        inner_scope = dict(scope, api_key=None, auth_method="session", session_key=None)
        user = inner_scope.get("user")
        if user is None or not user.is_authenticated:
            inner_scope["auth_error"] = "unauthenticated"
        elif not origin_allowed(inner_scope):
            inner_scope["auth_error"] = "origin_not_allowed"
        else:
            # The session the socket stands on: logging it out ends the socket (accounts.revocation).
            inner_scope["session_key"] = getattr(inner_scope.get("session"), "session_key", None)
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
        if error == AUTH_UNAVAILABLE:
            return await _refuse_unavailable(receive, send)
        inner_scope = dict(scope, user=user, api_key=key, auth_method="api_key", session_key=None)
        if error:
            inner_scope["auth_error"] = error
        return await self.inner(inner_scope, receive, send)
