"""Django's own middlewares whose hooks do no I/O: under ASGI, their hooks run on the event loop.

Under ASGI, Django runs each hook of a `MiddlewareMixin` middleware (process_request,
process_response) as a hop to the request's thread and back (`sync_to_async`): about a dozen
hops per request for the stock stack; an SSE chat request spent 6.4 ms of an idle server's time
before reaching its view (bench/RESULTS.md). The hooks of the middlewares below only read the
request and set headers or lazy attributes, so their async path calls them in place. Under WSGI
nothing changes. The session and message middlewares keep Django's path: their responses may
load or save the session, which is database work; so does CSRF when CSRF_USE_SESSIONS is on.

MIDDLEWARE keeps Django's own dotted paths (the deploy checks look for them); the classes get
the async path at start-up (`ChatConfig.ready`). A class that defines its own `__acall__` (a
future Django) is left alone.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.http import HttpRequest
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware
from django.utils.deprecation import MiddlewareMixin


async def _acall_on_loop(self: Any, request: HttpRequest) -> Any:
    """MiddlewareMixin.__acall__ without the two hops to a thread."""
    response = self.process_request(request) if hasattr(self, "process_request") else None
    response = response or await self.get_response(request)
    if hasattr(self, "process_response"):
        response = self.process_response(request, response)
    return response


def io_free_middlewares() -> list[type[MiddlewareMixin]]:
    """The middlewares whose hooks, with these settings, touch neither the database nor files."""
    classes: list[type[MiddlewareMixin]] = [
        SecurityMiddleware, CommonMiddleware, AuthenticationMiddleware, XFrameOptionsMiddleware,
    ]
    if not settings.CSRF_USE_SESSIONS:  # the secret is in a cookie, not the session
        classes.append(CsrfViewMiddleware)
    return classes


def run_hooks_on_loop() -> list[type[MiddlewareMixin]]:
    """Give the I/O-free middlewares the async path above; the classes changed."""
    changed = []
    for cls in io_free_middlewares():
        if cls.__dict__.get("__acall__") in (None, _acall_on_loop) and cls.__acall__ in (MiddlewareMixin.__acall__, _acall_on_loop):
            cls.__acall__ = _acall_on_loop  # type: ignore[method-assign]
            changed.append(cls)
    return changed
