"""EVA with some of its own parts turned into no-ops, for bench/chat_ablation.py only.

EVA_ABLATE lists the parts: `ratelimit` (no Redis scripts), `db` (no history read, no message
writes), `metrics` (no RequestMetric rows). What is left is the request's path through the
server, Channels, the generation and the httpx stream to Ollama. Never serve users with this.
"""

from __future__ import annotations

import os
from typing import Any

from evaproject.asgi import application  # the application served

__all__ = ["application"]

import chat.generation as generation  # noqa: E402

PARTS = {part for part in os.environ.get("EVA_ABLATE", "").split(",") if part}
UNKNOWN = PARTS - {"ratelimit", "db", "metrics"}
if UNKNOWN:
    raise SystemExit(f"EVA_ABLATE: unknown parts {sorted(UNKNOWN)}")


async def _no_rate_limit(**_: Any) -> None:
    return None


class _NoStore:
    async def history(self, **_: Any) -> list[dict[str, str]]:
        return []

    async def turn_begin(self, **_: Any) -> int:
        return 0

    async def turn_finish(self, **_: Any) -> None:
        return None


if "ratelimit" in PARTS:
    generation.rate_limit_check = _no_rate_limit
if "db" in PARTS:
    _store = _NoStore()
    generation.chat_store = lambda: _store
if "metrics" in PARTS:
    generation.record_metric = lambda **_: None
