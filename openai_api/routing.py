"""The OpenAI-compatible API's URLs, served by Channels ahead of Django (evaproject/asgi.py)."""

from __future__ import annotations

from typing import Any

from chat.routing import asgi_path, asgi_re_path
from openai_api.consumers import ChatCompletionsConsumer, ModelsConsumer, SpeechConsumer, UnknownPathConsumer


def http_urlpatterns() -> list[Any]:
    return [
        asgi_path("v1/chat/completions", ChatCompletionsConsumer.as_asgi()),
        asgi_path("v1/models", ModelsConsumer.as_asgi()),
        asgi_re_path(r"^v1/models/(?P<model_id>.+)$", ModelsConsumer.as_asgi()),
        asgi_path("v1/audio/speech", SpeechConsumer.as_asgi()),
        asgi_re_path(r"^v1/", UnknownPathConsumer.as_asgi()),
    ]
