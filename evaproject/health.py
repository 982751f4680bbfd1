"""Liveness (/health) and readiness (/ready) probes.

/ready answers 503 when a part EVA cannot serve without is down: the database, the channel
layer, the TTS worker, or every LLM backend (Ollama with its model, else Groq configured).
Ollama being down while Groq is configured is reported but not fatal: chat still works.

Everyone gets the plain answer, `{"status": "ok"|"degraded", "parts": {name: "up"|"down"}}`,
from results at most READY_CACHE_S old: the checks run once per process at a time, however
many probes arrive, so that a flood of anonymous probes neither loads the dependencies nor
exhausts the channel layer's connections and makes readiness flap. The details (each check's
versions, hosts, pids, errors, URLs without credentials) are for staff sessions and for
`Authorization: Bearer <READY_TOKEN>`; those callers get fresh results.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.signals import setting_changed
from django.db import connection
from django.http import HttpRequest, JsonResponse

from accounts.layer_wait import receive_within
from accounts.redaction import redact, redact_data

READY_TIMEOUT_S = 3.0
READY_CACHE_S = 1.0

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
    message = await receive_within(layer, channel, READY_TIMEOUT_S)
    if message is None:
        return {"ok": False, "error": f"no message back within {READY_TIMEOUT_S:g} s", "backend": type(layer).__name__}
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


@dataclass(frozen=True, slots=True)
class Readiness:
    """One run of every check: when it finished (time.monotonic()) and each check's result."""

    checked_at: float
    checks: dict[str, dict[str, Any]]

    @property
    def parts(self) -> dict[str, str]:
        return {name: "up" if result["ok"] else "down" for name, result in self.checks.items()}

    @property
    def ok(self) -> bool:
        return all(result["ok"] for result in self.checks.values())


_latest: Readiness | None = None
# The run in progress, per event loop (a server has one loop; tests have many).
_running: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[Readiness]] = (
    weakref.WeakKeyDictionary()
)


async def _run_check(name: str, check: Check) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(check(), timeout=READY_TIMEOUT_S + 1)
    except TimeoutError:
        result = {"ok": False, "error": f"no answer within {READY_TIMEOUT_S + 1:.0f} s"}
    except Exception as exc:  # a probe reports failures, it never raises them
        result = {"ok": False, "error": redact(f"{type(exc).__name__}: {exc}")}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


async def _check_all() -> Readiness:
    global _latest
    names = list(READY_CHECKS)
    results = await asyncio.gather(*(_run_check(name, READY_CHECKS[name]) for name in names))
    readiness = Readiness(checked_at=time.monotonic(), checks=dict(zip(names, results, strict=True)))
    _latest = readiness
    return readiness


async def readiness(*, fresh: bool) -> Readiness:
    """The checks' results: at most READY_CACHE_S old unless `fresh`; never two runs at once."""
    latest = _latest
    if not fresh and latest is not None and time.monotonic() - latest.checked_at < READY_CACHE_S:
        return latest
    loop = asyncio.get_running_loop()
    task = _running.get(loop)
    if task is None:
        task = _running[loop] = loop.create_task(_check_all(), name="ready-checks")
        task.add_done_callback(lambda done: _running.pop(loop, None) if _running.get(loop) is done else None)
    # Shielded: a probe that gives up does not cancel the run the others wait for.
    return await asyncio.shield(task)


def forget_readiness() -> None:
    """Drop the kept results: the next probe runs the checks."""
    global _latest
    _latest = None


def _forget_on_setting_change(**kwargs: Any) -> None:
    forget_readiness()  # a changed setting (tests) may change every check's answer


setting_changed.connect(_forget_on_setting_change, dispatch_uid="evaproject.health.forget_readiness")


async def may_see_details(request: HttpRequest) -> bool:
    """A staff session, or `Authorization: Bearer <READY_TOKEN>` when READY_TOKEN is set."""
    token = str(settings.READY_TOKEN)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return True
    user = await request.auser()
    return bool(user.is_active and user.is_staff)


async def ready(request: HttpRequest) -> JsonResponse:
    """Readiness: status and parts for everyone, 503 when a part is down; details when allowed."""
    detailed = await may_see_details(request)
    result = await readiness(fresh=detailed)
    body: dict[str, Any] = {"status": "ok" if result.ok else "degraded", "parts": result.parts}
    if detailed:
        body["checks"] = redact_data(result.checks)
    return JsonResponse(body, status=200 if result.ok else 503)
