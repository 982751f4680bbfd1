"""Fault runs against a live EVA (#16): real daphne (or uvicorn), Postgres and Redis, the Ollama
stand-in in its own process. Each case counts what clients saw and what was stored:
requests sent, replies complete (`end`), errors by code, streams that ended with neither
(must be 0), metric rows (must equal requests), and chat messages.

Cases (the issue's numbers):
- 1/2 `terminate-once`: 10 SSE + 10 WebSocket replies (40 tokens, 25 ms apart); at 0.6 s every
  backend of EVA's database is terminated (pg_terminate_backend).
- 2 `terminate-every-second`: 50 WebSocket streams sending one message after another for 10 s;
  every EVA backend terminated once a second meanwhile.
- 4 `redis-restart`: EVA's Redis (a private redis-server) killed and started again between two
  bursts of 20 replies; the second burst's first requests must not be `rate_limit_unavailable`.
- 7 `sigterm`: 50 WebSocket + 10 SSE streams of 400 tokens at 25 ms (10 s) or 40 (1 s: half of
  the WebSocket ones); SIGTERM once every stream has its first token, DRAIN_TIMEOUT_S=3: each
  client's last frame, the exit status, rows, partial replies.
Metric rows that could not be written are logged ("request metric dropped", with the row) and
counted: the figures give them, from the server's log.
Cases 3 (rows), 5 (audio size) and 6 (fallback status) are tested in tests/ (metric rows are
counted here in every case).

Run: .venv/bin/python bench/faults.py [--server daphne|uvicorn] [--case NAME ...] [--root TREE]
(before/after: `git archive COMMIT | tar -x -C /tmp/eva-before`, then `--root /tmp/eva-before`)
(needs Postgres at BENCH_PG_ADMIN_URL and `redis-server` on PATH)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chat_latency import PG_ADMIN, PYTHON, ROOT, free_port, start_server, wait_http

from tests.voice.test_worker_redis import OwnRedis

DB_NAME = "eva_bench_faults"
SERVER_ROOT = ROOT  # --root: the EVA tree the server runs (an earlier commit, for a before/after)
DB_URL = PG_ADMIN.rsplit("/", 1)[0] + f"/{DB_NAME}"


@dataclass
class Tally:
    requests: int = 0
    complete: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    unended: int = 0  # streams that ended with neither `end` nor `error`
    closes: collections.Counter[str] = field(default_factory=collections.Counter)
    started: int = 0  # streams that received their first token
    all_started: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0

    def token(self, first: bool) -> None:
        if first:
            self.started += 1
            if self.expected and self.started >= self.expected:
                self.all_started.set()

    def line(self) -> str:
        errors = ", ".join(f"{code} {n}" for code, n in sorted(self.errors.items())) or "none"
        closes = ", ".join(f"{code} {n}" for code, n in sorted(self.closes.items()))
        return (
            f"requests {self.requests}, complete {self.complete}, errors: {errors}; "
            f"ended with neither end nor error: {self.unended}" + (f"; socket closes: {closes}" if closes else "")
        )


def env_for(ollama_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "evaproject.settings",
        "DATABASE_URL": DB_URL,
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER_PREFIX": "evafaults",
        "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "DEBUG": "false",
        "SECURE_SSL": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "OLLAMA_URL": ollama_url,
        "OLLAMA_MODEL": "phi3:mini",
        "OLLAMA_WARMUP": "false",
        "GROQ_API_KEY": "",
        "RATE_LIMIT_PER_KEY": "100000/minute",
        "RATE_LIMIT_PER_USER": "100000/minute",
        "WS_MAX_SOCKETS_PER_KEY": "0",
        "WS_MAX_SOCKETS_PER_USER": "0",
        "LOG_LEVEL": "warning",
        **extra,
    }


def prepare_database(env: dict[str, str]) -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [
            PYTHON,
            "-c",
            "import django; django.setup(); from django.contrib.auth.models import User; "
            "User.objects.create_user('faults')",
        ],
        cwd=ROOT,
        env=env,
        check=True,
    )
    out = subprocess.run(
        [PYTHON, "manage.py", "apikey", "create", "--user", "faults", "--name", "faults", "--scopes", "chat"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def counts(since: float) -> dict[str, Any]:
    """Metric rows and chat messages stored since `since` (epoch seconds)."""
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT status, error_code, count(*) FROM metrics_requestmetric WHERE created_at >= to_timestamp(%s) "
            "GROUP BY 1, 2 ORDER BY 1, 2",
            [since],
        ).fetchall()
        messages = conn.execute(
            "SELECT role, status, count(*) FROM chat_chatmessage WHERE created_at >= to_timestamp(%s) "
            "GROUP BY 1, 2 ORDER BY 1, 2",
            [since],
        ).fetchall()
        # Conversations whose stored turns do not alternate user/assistant (a reply missing).
        broken = conn.execute(
            "SELECT count(*) FROM (SELECT session_id, role, lag(role) OVER (PARTITION BY session_id "
            "ORDER BY created_at, id) AS before FROM chat_chatmessage WHERE created_at >= to_timestamp(%s)) t "
            "WHERE role = before",
            [since],
        ).fetchone()
    return {
        "rows": sum(n for *_, n in rows),
        "rows_by_status": {f"{s}/{c or '-'}": n for s, c, n in rows},
        "messages": {f"{r}/{s}": n for r, s, n in messages},
        "same_role_twice": broken[0] if broken else 0,
    }


def logged_drops(log: Path) -> int:
    return log.read_text(errors="replace").count("request metric dropped")


def stored(since: float, stack: Stack) -> str:
    return f"stored: {counts(since)}, rows logged as dropped: {logged_drops(stack.log)}"


def terminate_backends() -> int:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        return len(
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [DB_NAME],
            ).fetchall()
        )


# --- clients ----------------------------------------------------------------------------
async def ws_reply(ws: Any, tally: Tally, content: str, session_id: str) -> dict[str, Any] | None:
    """One message on an open socket; the last frame (end or error), None if the socket ended first."""
    tally.requests += 1
    with contextlib.suppress(websockets.ConnectionClosed):  # refused at once: its error frame is still there
        await ws.send(json.dumps({"type": "message", "content": content, "session_id": session_id}))
    seen_token = False
    while True:
        try:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
        except (websockets.ConnectionClosed, TimeoutError):
            tally.unended += 1
            return None
        if frame["type"] == "token":
            tally.token(first=not seen_token)
            seen_token = True
        if frame["type"] == "end":
            tally.complete += 1
            return frame
        if frame["type"] == "error":
            tally.errors[frame["code"]] += 1
            return frame


async def ws_client(url: str, key: str, tally: Tally, *, session_id: str, until: float | None, content: str) -> None:
    """A socket sending one message after another until `until` (or once); reconnects when closed."""
    while True:
        try:
            async with websockets.connect(url, additional_headers={"X-API-Key": key}, open_timeout=30) as ws:
                while True:
                    last = await ws_reply(ws, tally, content, session_id)
                    if last is None or until is None or time.monotonic() >= until:
                        if until is None:
                            try:  # a restart's close after the end: note its code
                                while True:
                                    frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                                    tally.errors[f"after-end:{frame.get('code')}"] += 1
                            except websockets.ConnectionClosed as closed:
                                tally.closes[str(closed.rcvd.code if closed.rcvd else None)] += 1
                            except TimeoutError:
                                pass
                        return
                    if last["type"] == "error" and last["code"] == "server_restarting":
                        return
        except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
            tally.errors[f"connect:{type(exc).__name__}"] += 1
            return
        if until is None or time.monotonic() >= until:
            return


async def sse_reply(client: httpx.AsyncClient, url: str, key: str, tally: Tally, content: str, session_id: str) -> None:
    tally.requests += 1
    last: dict[str, Any] | None = None
    seen_token = False
    try:
        async with client.stream(
            "POST",
            f"{url}/api/v1/chat/stream",
            json={"message": content, "session_id": session_id},
            headers={"X-API-Key": key},
        ) as response:
            if response.status_code != 200:
                body = json.loads(await response.aread())
                tally.errors[f"http{response.status_code}:{body.get('code')}"] += 1
                return
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    last = json.loads(line.removeprefix("data: "))
                    if last["type"] == "token":
                        tally.token(first=not seen_token)
                        seen_token = True
    except httpx.HTTPError as exc:
        tally.errors[f"http:{type(exc).__name__}"] += 1
        return
    if last is None or last["type"] not in ("end", "error"):
        tally.unended += 1
    elif last["type"] == "end":
        tally.complete += 1
    else:
        tally.errors[last["code"]] += 1


# --- cases ------------------------------------------------------------------------------
class Stack:
    """The stand-in, EVA's Redis and one EVA server, started for a case."""

    def __init__(self, server: str, tokens: int, interval_ms: float, **env: str) -> None:
        self.redis = OwnRedis()
        self.redis.start()
        port = free_port()
        self.standin = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "tests.standins.ollama_server",
                "--port",
                str(port),
                "--first-token-ms",
                "50",
                "--token-interval-ms",
                str(interval_ms),
                "--tokens",
                str(tokens),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_http(f"http://127.0.0.1:{port}")
        self.env = env_for(f"http://127.0.0.1:{port}", self.redis.url, **env)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws/chat"
        self.log = Path(f"/tmp/eva-faults-{server}-{self.port}.log")
        self.server = start_server(server, self.port, self.env, self.log, root=SERVER_ROOT)

    def stop(self) -> None:
        for process in (self.server, self.standin):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        self.redis.kill()


async def settle() -> None:
    await asyncio.sleep(1.5)  # the metric writer's batch wait and background writes (bench only)


async def case_terminate_once(server: str, key: str) -> str:
    stack = Stack(server, tokens=40, interval_ms=25)
    since = time.time()
    tally = Tally()
    try:
        async with httpx.AsyncClient(timeout=60) as client:

            async def fault() -> None:
                await asyncio.sleep(0.6)
                terminate_backends()

            await asyncio.gather(
                fault(),
                *(sse_reply(client, stack.url, key, tally, "x", f"t1-sse-{i}") for i in range(10)),
                *(
                    ws_client(stack.ws_url, key, tally, session_id=f"t1-ws-{i}", until=0, content="x")
                    for i in range(10)
                ),
            )
        await settle()
    finally:
        stack.stop()
    return f"{tally.line()}; {stored(since, stack)}"


async def case_terminate_every_second(server: str, key: str) -> str:
    stack = Stack(server, tokens=20, interval_ms=25)
    since = time.time()
    tally = Tally()
    terminated = []
    try:
        until = time.monotonic() + 10

        async def faults() -> None:
            while time.monotonic() < until:
                await asyncio.sleep(1)
                terminated.append(await asyncio.to_thread(terminate_backends))

        await asyncio.gather(
            faults(),
            *(ws_client(stack.ws_url, key, tally, session_id=f"t2-{i}", until=until, content="x") for i in range(50)),
        )
        await settle()
    finally:
        stack.stop()
    return f"{tally.line()}; backends terminated {sum(terminated)} in {len(terminated)} rounds; {stored(since, stack)}"


async def case_redis_restart(server: str, key: str) -> str:
    stack = Stack(server, tokens=5, interval_ms=5)
    since = time.time()
    before, after = Tally(), Tally()
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            await asyncio.gather(*(sse_reply(client, stack.url, key, before, "x", f"r-{i}") for i in range(20)))
            stack.redis.kill()
            stack.redis.start()
            # One at a time first: the very first requests after the restart are the ones at stake.
            for i in range(5):
                await sse_reply(client, stack.url, key, after, "x", f"r-after-{i}")
            await asyncio.gather(*(sse_reply(client, stack.url, key, after, "x", f"r-after-{i}") for i in range(15)))
        await settle()
    finally:
        stack.stop()
    return f"before: {before.line()}; after the restart: {after.line()}; {stored(since, stack)}"


async def case_sigterm(server: str, key: str) -> str:
    stack = Stack(server, tokens=0, interval_ms=25, DRAIN_TIMEOUT_S="3")  # the stand-in echoes the message
    short, long = " ".join(["court"] * 40), " ".join(["long"] * 400)
    since = time.time()
    tally = Tally()
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            tally.expected = 60

            async def fault() -> float:
                await asyncio.wait_for(tally.all_started.wait(), 120)  # every stream is mid-reply
                started = time.monotonic()
                stack.server.send_signal(signal.SIGTERM)
                await asyncio.to_thread(stack.server.wait, 60)
                return time.monotonic() - started

            results = await asyncio.gather(
                fault(),
                *(
                    ws_client(
                        stack.ws_url, key, tally, session_id=f"s-ws-{i}", until=None, content=short if i < 25 else long
                    )
                    for i in range(50)
                ),
                *(sse_reply(client, stack.url, key, tally, long, f"s-sse-{i}") for i in range(10)),
            )
        exit_s = results[0]
    finally:
        status = stack.server.returncode
        stack.stop()
    return f"{tally.line()}; exit status {status} {exit_s:.1f} s after SIGTERM; {stored(since, stack)}"


CASES = {
    "terminate-once": case_terminate_once,
    "terminate-every-second": case_terminate_every_second,
    "redis-restart": case_redis_restart,
    "sigterm": case_sigterm,
}


async def main_async(args: argparse.Namespace) -> None:
    env = env_for("http://127.0.0.1:9", "redis://127.0.0.1:6379/14")
    key = prepare_database(env)
    for name in args.case or list(CASES):
        started = time.monotonic()
        outcome = await CASES[name](args.server, key)
        print(f"{args.server} {name} ({time.monotonic() - started:.0f} s): {outcome}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne")
    parser.add_argument("--case", action="append", choices=list(CASES))
    parser.add_argument("--root", type=Path, help="serve EVA from this tree (e.g. `git archive` of an earlier commit)")
    args = parser.parse_args()
    if args.root is not None:
        global SERVER_ROOT
        SERVER_ROOT = args.root.resolve()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
