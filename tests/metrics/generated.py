"""Generated request metrics with known answers: the data the percentile tests check against numpy."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np

BACKENDS = (("ollama", "phi3:mini"), ("groq", "llama-3.1-8b-instant"))
CHANNELS = ("ws", "rest", "sse", "tts")
STATUSES = ("ok", "ok", "ok", "ok", "ok", "ok", "error", "fallback", "cancelled")


def generated_rows(*, count: int, start: datetime, span: timedelta, seed: int = 7) -> list[dict[str, Any]]:
    """`count` rows spread over [start, start + span) with long-tailed latencies and some NULLs."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.uniform(0, span.total_seconds(), count))
    rows = []
    for index in range(count):
        backend, model = BACKENDS[int(rng.integers(len(BACKENDS)))]
        channel = CHANNELS[int(rng.integers(len(CHANNELS)))]
        ttft = float(rng.lognormal(6.0, 0.8))
        total = ttft + float(rng.lognormal(7.0, 0.6))
        tokens = int(rng.integers(1, 400))
        rows.append(
            {
                "created_at": start + timedelta(seconds=float(offsets[index])),
                "channel": channel,
                "backend": backend,
                "model": model,
                "status": STATUSES[int(rng.integers(len(STATUSES)))],
                # About one reply in ten never produced a token.
                "ttft_ms": None if rng.random() < 0.1 else round(ttft, 3),
                "total_ms": round(total, 3),
                "time_to_first_audio_ms": round(ttft * 1.7, 3) if channel == "tts" else None,
                # A spoken chat reply (one in five on the socket): its speech ends after its text.
                "speech_total_ms": round(total * 2.5, 3) if channel == "ws" and index % 5 == 0 else None,
                "tokens_out": tokens,
                "upstream_load_ms": None if backend == "groq" else round(float(rng.exponential(30.0)), 3),
                "upstream_prompt_ms": round(float(rng.lognormal(4.0, 0.5)), 3),
                "upstream_generation_ms": round(float(rng.lognormal(6.5, 0.5)), 3),
                "upstream_queue_ms": round(float(rng.exponential(20.0)), 3) if backend == "groq" else None,
            }
        )
    return rows


def expected_distribution(rows: list[dict[str, Any]], field: str) -> dict[str, Any]:
    """What numpy says the count, mean and P50/P95/P99 of `field` are (method="linear")."""
    values = np.array([row[field] for row in rows if row[field] is not None], dtype=float)
    if values.size == 0:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99], method="linear")
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
    }
