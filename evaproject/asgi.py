"""ASGI entry point: streamed chat replies and WebSockets through Channels, the rest of HTTP
through Django, and the "voice-tts" channel for `manage.py runworker voice-tts` (text-to-speech
workers)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evaproject.settings")
# Before anything imports models (routing, consumers): this sets Django up.
django_asgi_app = get_asgi_application()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.ws_auth import WebsocketAuthMiddleware  # noqa: E402
from chat.routing import asgi_re_path, http_urlpatterns, websocket_urlpatterns  # noqa: E402
from evaproject.restart import GracefulRestart  # noqa: E402
from openai_api.routing import http_urlpatterns as openai_urlpatterns  # noqa: E402
from voice.config import TTS_CHANNEL  # noqa: E402
from voice.worker import TTSWorkerConsumer  # noqa: E402

# GracefulRestart: on SIGTERM, drain the chat streams before the server stops (evaproject/restart.py).
application = GracefulRestart(ProtocolTypeRouter(
    {
        # Streamed chat replies first (chat/sse.py), the OpenAI-compatible API under /v1/
        # (openai_api), Django for everything else.
        "http": URLRouter(
            [*http_urlpatterns(django_app=django_asgi_app), *openai_urlpatterns(), asgi_re_path(r"", django_asgi_app)]
        ),
        "websocket": WebsocketAuthMiddleware(URLRouter(websocket_urlpatterns)),
        "channel": ChannelNameRouter({TTS_CHANNEL: TTSWorkerConsumer.as_asgi()}),
    }
))

# Load the Ollama model in the background as the server starts (daphne has no lifespan
# events), so the first user does not pay the load. Never in a `runworker` process.
import sys  # noqa: E402

from chat.llm.ollama import start_warmup_in_background  # noqa: E402

if "runworker" not in sys.argv:
    start_warmup_in_background()

# Everything loaded so far lives as long as the process: moved out of the garbage collector's
# reach, so that its full collections (which walk every tracked object, and stop the event
# loop while they do) stay short under many concurrent streams (see bench/RESULTS.md).
import gc  # noqa: E402

gc.collect()
gc.freeze()
