"""Django's own middlewares: under ASGI, their hooks run on the event loop unless they need I/O.

Under ASGI, Django runs each hook of a `MiddlewareMixin` middleware (process_request,
process_response) as a hop to the request's thread and back (`sync_to_async`): about a dozen
hops per request for the stock stack; an SSE chat request spent 6.4 ms of an idle server's time
before reaching its view (bench/RESULTS.md). The hooks of the first group below only read the
request and set headers or lazy attributes, so their async path calls them in place. The
session and message middlewares' request hooks are as light (a lazy session store, a lazy
message store); their response hooks save the session or store messages, which can be database
work, so they hop to the request's thread when, and only when, there is something to save (the
session was modified, or SESSION_SAVE_EVERY_REQUEST; messages were added or read). An API
request that never touches the session makes no hop for them. CSRF joins the first group only
when its secret is in a cookie (not CSRF_USE_SESSIONS); the session and message middlewares
only with Django's own session engines and message storages. Under WSGI nothing changes.

MIDDLEWARE keeps Django's own dotted paths (the deploy checks look for them); the classes get
the async path at start-up (`ChatConfig.ready`). A class that defines its own `__acall__` (a
future Django) is left alone.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
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


async def _acall_hop_to_save(self: Any, request: HttpRequest) -> Any:
    """The request hook in place; the response hook in place too, unless it has something to save."""
    response = self.process_request(request)
    response = response or await self.get_response(request)
    if self.response_saves(request):
        return await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
    return self.process_response(request, response)


def _session_saves(request: HttpRequest) -> bool:
    """What SessionMiddleware.process_response checks before it saves (the rest reads flags)."""
    session = getattr(request, "session", None)
    if session is None:
        return False
    return bool((session.modified or settings.SESSION_SAVE_EVERY_REQUEST) and not session.is_empty())


def _messages_saves(request: HttpRequest) -> bool:
    """What the message storage's update() checks before it loads and stores messages."""
    storage = getattr(request, "_messages", None)
    return storage is not None and bool(storage.used or storage.added_new)


def io_free_middlewares() -> list[type[MiddlewareMixin]]:
    """The middlewares whose hooks, with these settings, touch neither the database nor files."""
    classes: list[type[MiddlewareMixin]] = [
        SecurityMiddleware, CommonMiddleware, AuthenticationMiddleware, XFrameOptionsMiddleware,
    ]
    if not settings.CSRF_USE_SESSIONS:  # the secret is in a cookie, not the session
        classes.append(CsrfViewMiddleware)
    return classes


def save_hopping_middlewares() -> dict[type[MiddlewareMixin], Any]:
    """The middlewares whose response hook needs the thread only to save; with what tells when."""
    classes: dict[type[MiddlewareMixin], Any] = {}
    if settings.SESSION_ENGINE.startswith("django.contrib.sessions.backends."):
        classes[SessionMiddleware] = _session_saves
        # Django's default message storage falls back to the session: only with its engines too.
        if settings.MESSAGE_STORAGE.startswith("django.contrib.messages.storage."):
            classes[MessageMiddleware] = _messages_saves
    return classes


def _replaceable(cls: type[MiddlewareMixin], acall: Any) -> bool:
    return cls.__dict__.get("__acall__") in (None, acall) and cls.__acall__ in (MiddlewareMixin.__acall__, acall)


def run_hooks_on_loop() -> list[type[MiddlewareMixin]]:
    """Give the middlewares above their async paths; the classes changed."""
    changed = []
    for cls in io_free_middlewares():
        if _replaceable(cls, _acall_on_loop):
            cls.__acall__ = _acall_on_loop  # type: ignore[method-assign]
            changed.append(cls)
    for cls, saves in save_hopping_middlewares().items():
        if _replaceable(cls, _acall_hop_to_save):
            cls.response_saves = staticmethod(saves)  # type: ignore[attr-defined]
            cls.__acall__ = _acall_hop_to_save  # type: ignore[method-assign]
            changed.append(cls)
    return changed
