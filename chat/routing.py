"""Routes served by Channels: the chat WebSocket, and the HTTP URLs that stream chat replies
around Django (chat/sse.py); evaproject/asgi.py puts Django behind the HTTP ones for the rest."""

from __future__ import annotations

from typing import Any

from django.urls import path, re_path

from chat.api import CHAT_STREAM_PATH
from chat.consumers import ChatConsumer
from chat.replay_sse import chat_resume_app
from chat.sse import AsgiApp, StreamSwitch, chat_stream_app


def asgi_path(route: str, app: AsgiApp) -> Any:
    """Django's path() around an ASGI app, as Channels' URLRouter takes it."""
    # Typed Any: django-stubs types path() for views, channels-stubs wants its own pattern type.
    return path(route, app)  # type: ignore[arg-type]


def asgi_re_path(route: str, app: AsgiApp) -> Any:
    """Django's re_path() around an ASGI app, as Channels' URLRouter takes it."""
    return re_path(route, app)  # type: ignore[arg-type]  # as in asgi_path


websocket_urlpatterns = [
    asgi_path("ws/chat", ChatConsumer.as_asgi()),
    asgi_path("ws/chat/", ChatConsumer.as_asgi()),
]


def http_urlpatterns(*, django_app: AsgiApp) -> list[Any]:
    """The streaming chat URLs; `django_app` answers their requests that do not stream."""
    stream = chat_stream_app(session_auth=True)
    legacy_stream = chat_stream_app(session_auth=False)  # the legacy POST /chat takes API keys only
    return [
        asgi_path(CHAT_STREAM_PATH.lstrip("/"), stream),
        asgi_path(CHAT_STREAM_PATH.lstrip("/") + "/<str:request_id>", chat_resume_app()),  # chat/replay_sse.py
        asgi_path("api/v1/chat", StreamSwitch(stream=stream, other=django_app)),
        asgi_path("chat", StreamSwitch(stream=legacy_stream, other=django_app)),
    ]
