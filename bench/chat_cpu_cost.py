"""CPU time EVA spends per relayed token and per request (the capacity behind bench/chat_latency.py).

Same set-up as chat_latency.py (stand-in Ollama in its own process, EVA under daphne on
Postgres and Redis). N sockets each send R messages; the server process's CPU time (user +
system, from /proc) is divided by the tokens relayed. Run twice with replies of 20 and of 2
tokens: the difference isolates the per-token cost from the per-request cost.

Run: .venv/bin/python bench/chat_cpu_cost.py
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chat_latency import (
    DB_NAME,
    PG_ADMIN,
    ROOT,
    cpu_seconds,
    eva_env,
    free_port,
    measure,
    prepare_database,
    start_server,
    start_standin,
)

STREAMS = 10
REQUESTS = 20


async def one(tokens: int) -> tuple[float, int, int]:
    ollama, ollama_url = start_standin(tokens)
    env = eva_env(f"postgres://postgres@127.0.0.1:5432/{DB_NAME}", ollama_url)
    key = prepare_database(env)
    eva_port = free_port()
    server = start_server("daphne", eva_port, env, ROOT / "bench" / "out" / "cpu_daphne.log")
    url = f"http://127.0.0.1:{eva_port}"
    try:
        await measure("ws", 2, 2, ollama_url=ollama_url, eva_url=url, key=key)  # warm-up
        before = cpu_seconds(server.pid)
        run = await measure("ws", STREAMS, REQUESTS, ollama_url=ollama_url, eva_url=url, key=key)
        used = cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        ollama.terminate()
    return used, len(run.samples), sum(s.tokens for s in run.samples)


async def main() -> None:
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    long_cpu, long_requests, long_tokens = await one(20)
    short_cpu, short_requests, short_tokens = await one(2)
    per_token = (long_cpu / long_requests - short_cpu / short_requests) / (
        long_tokens / long_requests - short_tokens / short_requests
    )
    per_request = short_cpu / short_requests - per_token * short_tokens / short_requests
    print(f"20-token replies: {long_requests} requests, {long_tokens} tokens, {long_cpu:.2f} s CPU")
    print(f" 2-token replies: {short_requests} requests, {short_tokens} tokens, {short_cpu:.2f} s CPU")
    print(f"per token: {per_token * 1e6:.0f} µs CPU; per request (excluding tokens): {per_request * 1e3:.2f} ms CPU")
    print(
        f"one core relays about {1 / per_token:,.0f} tokens/s, i.e. {1 / per_token / 100:.0f} streams of 100 tokens/s"
    )
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
