"""WhiteNoise as an async-capable middleware.

WhiteNoise's own middleware is sync-only: in the ASGI stack, Django would then run every
request's middleware chain in a thread and call back into the event loop for the async
views (an extra async_to_sync round trip per request, and per SSE stream). This wrapper keeps
the chain async and touches WhiteNoise only for URLs under STATIC_URL.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware


def _never_called(request: HttpRequest) -> HttpResponseBase:
    raise AssertionError("static files are looked up, never passed on, by this wrapper")


class AsyncWhiteNoiseMiddleware:
    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.whitenoise = WhiteNoiseMiddleware(get_response=_never_called)
        markcoroutinefunction(self)

    def _lookup_and_serve(self, request: HttpRequest) -> HttpResponseBase | None:
        if self.whitenoise.autorefresh:
            static_file = self.whitenoise.find_file(request.path_info)
        else:
            static_file = self.whitenoise.files.get(request.path_info)
        return None if static_file is None else self.whitenoise.serve(static_file, request)

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.path_info.startswith(self.whitenoise.static_prefix):
            response = await sync_to_async(self._lookup_and_serve, thread_sensitive=False)(request)
            if response is not None:
                return response
        return await self.get_response(request)
