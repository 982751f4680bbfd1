"""Liveness (/health) and readiness (/ready) probes.

/ready answers 503 when a part EVA cannot serve without is down: the database, the channel
layer, the TTS worker, or every LLM backend (Ollama with its model, else Groq configured).
Ollama being down while Groq is configured is reported but not fatal: chat still works.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse

READY_TIMEOUT_S = 3.0

Check = Callable[[], Awaitable[dict[str, Any]]]


async def health(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. No auth, no dependencies."""
    return JsonResponse({"status": "ok"})


def _database_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def check_database() -> dict[str, Any]:
    await sync_to_async(_database_ping)()
    return {"ok": True, "vendor": connection.vendor}


async def check_channel_layer() -> dict[str, Any]:
    layer = get_channel_layer()
    if layer is None:
        return {"ok": False, "error": "no channel layer configured"}
    channel = await layer.new_channel()
    token = uuid.uuid4().hex
    await layer.send(channel, {"type": "ready.ping", "token": token})
    message = await layer.receive(channel)
    return {"ok": message.get("token") == token, "backend": type(layer).__name__}


async def check_llm() -> dict[str, Any]:
    from chat.llm.registry import llm_readiness

    return await llm_readiness()


async def check_tts() -> dict[str, Any]:
    from voice.client import tts_readiness

    return await tts_readiness(timeout_s=READY_TIMEOUT_S)


READY_CHECKS: dict[str, Check] = {
    "database": check_database,
    "channel_layer": check_channel_layer,
    "llm": check_llm,
    "tts": check_tts,
}


async def _run_check(name: str, check: Check) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(check(), timeout=READY_TIMEOUT_S + 1)
    except TimeoutError:
        result = {"ok": False, "error": f"no answer within {READY_TIMEOUT_S + 1:.0f} s"}
    except Exception as exc:  # a probe reports failures, it never raises them
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


async def ready(request: HttpRequest) -> JsonResponse:
    """Readiness: every dependency checked concurrently; 503 names the parts that are down."""
    names = list(READY_CHECKS)
    results = await asyncio.gather(*(_run_check(name, READY_CHECKS[name]) for name in names))
    checks = dict(zip(names, results, strict=True))
    down = [name for name, result in checks.items() if not result["ok"]]
    body = {"status": "ok" if not down else "unavailable", "down": down, "checks": checks}
    return JsonResponse(body, status=200 if not down else 503)


