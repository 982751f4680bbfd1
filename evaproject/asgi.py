"""ASGI entry point: HTTP through Django, WebSockets through Channels' router, and the
"voice-tts" channel for `manage.py runworker voice-tts` (text-to-speech workers)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evaproject.settings")
# Django must be set up before anything imports models (routing, consumers); what
# get_asgi_application() does, with a handler that reuses its requests' threads.
django.setup(set_prefix=False)

from evaproject.asgi_handler import PooledThreadASGIHandler  # noqa: E402

django_asgi_app = PooledThreadASGIHandler()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.ws_auth import WebsocketAuthMiddleware  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from voice.config import TTS_CHANNEL  # noqa: E402
from voice.worker import TTSWorkerConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": WebsocketAuthMiddleware(URLRouter(websocket_urlpatterns)),
        "channel": ChannelNameRouter({TTS_CHANNEL: TTSWorkerConsumer.as_asgi()}),
    }
)

# Load the Ollama model in the background as the server starts (daphne has no lifespan
# events), so the first user does not pay the load. Never in a `runworker` process.
import sys  # noqa: E402

from chat.llm.ollama import start_warmup_in_background  # noqa: E402

if "runworker" not in sys.argv:
    start_warmup_in_background()

# Everything loaded so far lives as long as the process: moved out of the garbage collector's
# reach, so that its full collections (which walk every tracked object, and stop the event
# loop while they do) stay short. At 50 chat streams this took the first token's p99 from
# 338-408 ms to 176-255 ms in paired runs, p50 unchanged (bench/RESULTS.md).
import gc  # noqa: E402

gc.collect()
gc.freeze()
