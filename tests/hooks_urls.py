"""Views for tests/test_middleware.py and tests/test_asgi_handler.py: sync views that use the
session and messages, or report the thread they ran on."""

from __future__ import annotations

import threading

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

threads: list[threading.Thread] = []
partners = threading.Barrier(2, timeout=10)


def nothing(request: HttpRequest) -> HttpResponse:
    threads.append(threading.current_thread())
    return HttpResponse("ok")


def meet(request: HttpRequest) -> HttpResponse:
    """Returns only once a second request is in this view at the same time."""
    threads.append(threading.current_thread())
    partners.wait()
    return HttpResponse("met")


def remember(request: HttpRequest) -> HttpResponse:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse("ok")


def recall(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"visits": request.session.get("visits")})


def tell(request: HttpRequest) -> HttpResponse:
    messages.info(request, "hello from the last request")
    return HttpResponse("ok")


def listen(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"messages": [m.message for m in messages.get_messages(request)]})


urlpatterns = [
    path("nothing", nothing),
    path("meet", meet),
    path("remember", remember),
    path("recall", recall),
    path("tell", tell),
    path("listen", listen),
]
