"""EVA with some of its own parts turned into no-ops, for bench/chat_ablation.py only.

EVA_ABLATE lists the parts: `ratelimit` (no Redis scripts), `history` (no history read),
`writes` (no message writes), `db` (both), `metrics` (no RequestMetric rows). What is left is
the request's path through the server, Channels, the generation and the httpx stream to Ollama.
Never serve users with this.
"""

from __future__ import annotations

import os
from typing import Any

from evaproject.asgi import application  # the application served

__all__ = ["application"]

import chat.generation as generation

PARTS = {part for part in os.environ.get("EVA_ABLATE", "").split(",") if part}
if "db" in PARTS:
    PARTS |= {"history", "writes"}
UNKNOWN = PARTS - {"ratelimit", "db", "history", "writes", "metrics"}
if UNKNOWN:
    raise SystemExit(f"EVA_ABLATE: unknown parts {sorted(UNKNOWN)}")


async def _no_rate_limit(**_: Any) -> None:
    return None


class _PartialStore:
    """The real store, with the history read and/or the message writes turned into no-ops."""

    def __init__(self, real: Any) -> None:
        self.real = real

    async def history(self, **kwargs: Any) -> list[dict[str, str]]:
        return [] if "history" in PARTS else await self.real.history(**kwargs)

    async def turn_begin(self, **kwargs: Any) -> int:
        return 0 if "writes" in PARTS else await self.real.turn_begin(**kwargs)

    async def turn_finish(self, **kwargs: Any) -> None:
        if "writes" not in PARTS:
            await self.real.turn_finish(**kwargs)


if "ratelimit" in PARTS:
    generation.rate_limit_check = _no_rate_limit
if PARTS & {"history", "writes"}:
    _real_store = generation.chat_store
    generation.chat_store = lambda: _PartialStore(_real_store())
if "metrics" in PARTS:
    generation.record_metric = lambda **_: None
