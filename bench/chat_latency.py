"""What EVA adds to time-to-first-token and per token, over a direct stream from the same stand-in.

Set-up, all on this machine: the Ollama-protocol stand-in in its own process (first token
after 50 ms, then one every 10 ms, 20 tokens); EVA served by daphne (and, side by side, by
uvicorn) on Postgres and the Redis channel layer. For each concurrency level, N clients each
send R requests one after another:
- direct: POST /api/chat to the stand-in with aiohttp, reading NDJSON lines;
- ws: a /ws/chat socket per client (X-API-Key), `message` in, `start`/`token`.../`end` out;
- sse: POST /api/v1/chat with stream=true, reading SSE events (aiohttp).
The clients are aiohttp and websockets on uvloop: the load generator shares the machine, so it
must cost little CPU.
TTFT is measured by the client from sending the request to receiving the first token; the
per-token cost is (last token - first token) / (tokens - 1). "Added" is EVA's percentile
minus the direct stream's percentile at the same concurrency, measured in the same run.

Run: .venv/bin/pip install -r bench/requirements.txt && .venv/bin/python bench/chat_latency.py [--quick]
(needs Postgres and Redis running)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psycopg
import websockets

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DB_NAME = os.environ.get("BENCH_DB_NAME", "eva_bench_chat")  # one per concurrent run
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
TOKENS = 20
ROUNDS = 3
UVICORN_WS = "websockets-sansio"
STAGGER_S = 0.05 + 0.01 * (TOKENS - 1)  # one reply: first token at 50 ms, then every 10 ms


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


@dataclass
class Sample:
    ttft_ms: float
    per_token_ms: float
    tokens: int


@dataclass
class Run:
    name: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0

    def pct(self, attr: str, q: float) -> float:
        values = sorted(getattr(s, attr) for s in self.samples)
        if not values:
            return float("nan")
        index = (len(values) - 1) * q
        low, high = int(index), min(int(index) + 1, len(values) - 1)
        return values[low] + (values[high] - values[low]) * (index - low)


def eva_env(port_db_url: str, ollama_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "evaproject.settings",
        "DATABASE_URL": port_db_url,
        "REDIS_URL": REDIS_URL,
        "CHANNEL_LAYER_PREFIX": "evabench",
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
        # One key opens every socket of the load: no per-key or per-user socket cap.
        "WS_MAX_SOCKETS_PER_KEY": "0",
        "WS_MAX_SOCKETS_PER_USER": "0",
        "LOG_LEVEL": "warning",
        "LLM_HISTORY_TURNS": "10",
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
            "User.objects.create_user('bench')",
        ],
        cwd=ROOT,
        env=env,
        check=True,
    )
    out = subprocess.run(
        [PYTHON, "manage.py", "apikey", "create", "--user", "bench", "--name", "bench", "--scopes", "chat"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


# --- clients ----------------------------------------------------------------------------
async def direct_once(client: aiohttp.ClientSession, url: str, text: str) -> Sample:
    body = {"model": "phi3:mini", "messages": [{"role": "user", "content": text}], "stream": True}
    start = time.perf_counter()
    first = last = None
    count = 0
    async with client.post(f"{url}/api/chat", json=body) as response:
        async for line in response.content:
            if not line.strip():
                continue
            data = json.loads(line)
            if data.get("message", {}).get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
                count += 1
    return Sample((first - start) * 1000, (last - first) * 1000 / max(1, count - 1), count)


async def staggered() -> None:
    """Clients start spread over one reply's duration, as independent users would, instead of
    all sending in the same millisecond (a burst measures queueing, not a steady state)."""
    await asyncio.sleep(random.uniform(0, STAGGER_S))


async def read_reply(ws: Any, start: float, run: Run) -> None:
    """Read one reply's frames up to its end (or error); its TTFT and per-token time go into run."""
    first = last = None
    count = 0
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == "token":
            now = time.perf_counter()
            first = first or now
            last = now
            count += 1
        elif frame["type"] == "end":
            break
        elif frame["type"] == "error":
            run.errors += 1
            break
    if first is not None and last is not None:
        run.samples.append(Sample((first - start) * 1000, (last - first) * 1000 / max(1, count - 1), count))


async def ws_conversation(ws: Any, index: int, requests: int, run: Run) -> None:
    await staggered()
    for turn in range(requests):
        start = time.perf_counter()
        await ws.send(json.dumps({"type": "message", "content": f"c{index} r{turn}", "session_id": f"b{index}"}))
        await read_reply(ws, start, run)


async def ws_new_socket_conversation(ws_url: str, key: str, index: int, requests: int, run: Run) -> None:
    """A mobile client that reconnects: a new socket for every message, the handshake included in TTFT."""
    await staggered()
    for turn in range(requests):
        start = time.perf_counter()
        async with websockets.connect(ws_url, additional_headers={"X-API-Key": key}, max_size=None) as ws:
            await ws.send(json.dumps({"type": "message", "content": f"c{index} r{turn}", "session_id": f"s{index}"}))
            await read_reply(ws, start, run)


async def sse_conversation(
    client: aiohttp.ClientSession, url: str, key: str, index: int, requests: int, run: Run, path: str = "/api/v1/chat"
) -> None:
    await staggered()
    for turn in range(requests):
        start = time.perf_counter()
        first = last = None
        count = 0
        body = {"message": f"c{index} r{turn}", "session_id": f"s{index}", "stream": True}
        async with client.post(f"{url}{path}", json=body, headers={"X-API-Key": key}) as response:
            if response.status != 200:
                run.errors += 1
                await response.read()
                continue
            async for raw in response.content:
                line = raw.decode()
                if line.startswith("event: token"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    count += 1
                elif line.startswith("event: error"):
                    run.errors += 1
        if first is not None:
            run.samples.append(Sample((first - start) * 1000, (last - first) * 1000 / max(1, count - 1), count))


async def measure(
    kind: str,
    concurrency: int,
    requests: int,
    *,
    ollama_url: str,
    eva_url: str,
    key: str,
    sse_path: str = "/api/v1/chat",
) -> Run:
    """kind: direct (the stand-in alone), ws (kept sockets), ws-new (a new socket per message), sse."""
    run = Run(kind, concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:
        if kind == "direct":

            async def loop(i: int) -> None:
                await staggered()
                for turn in range(requests):
                    try:
                        run.samples.append(await direct_once(client, ollama_url, f"c{i} r{turn}"))
                    except Exception:
                        run.errors += 1

            await asyncio.gather(*(loop(i) for i in range(concurrency)))
        elif kind == "ws-new":
            ws_url = eva_url.replace("http://", "ws://") + "/ws/chat"
            results = await asyncio.gather(
                *(ws_new_socket_conversation(ws_url, key, i, requests, run) for i in range(concurrency)),
                return_exceptions=True,
            )
            run.errors += sum(1 for r in results if isinstance(r, BaseException))
        elif kind.startswith("ws"):
            # The sockets are opened first: handshakes are not what is measured.
            ws_url = eva_url.replace("http://", "ws://") + "/ws/chat"
            sockets = await asyncio.gather(
                *(
                    websockets.connect(ws_url, additional_headers={"X-API-Key": key}, max_size=None)
                    for _ in range(concurrency)
                )
            )
            results = await asyncio.gather(
                *(ws_conversation(ws, i, requests, run) for i, ws in enumerate(sockets)), return_exceptions=True
            )
            run.errors += sum(1 for r in results if isinstance(r, BaseException))
            await asyncio.gather(*(ws.close() for ws in sockets))
        else:
            results = await asyncio.gather(
                *(sse_conversation(client, eva_url, key, i, requests, run, sse_path) for i in range(concurrency)),
                return_exceptions=True,
            )
            run.errors += sum(1 for r in results if isinstance(r, BaseException))
    return run


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds per wall second of each process (and of this client) over a measurement."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.wall = time.perf_counter()
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.client = sum(os.times()[:2])

    def report(self) -> str:
        wall = time.perf_counter() - self.wall
        parts = [f"{name} {(cpu_seconds(pid) - self.start[name]) / wall:.2f}" for name, pid in self.pids.items()]
        parts.append(f"client {(sum(os.times()[:2]) - self.client) / wall:.2f}")
        return ", ".join(parts)


def start_standin(tokens: int = TOKENS) -> tuple[subprocess.Popen, str]:
    """The Ollama-protocol stand-in in its own process: first token after 50 ms, then one every 10 ms."""
    port = free_port()
    process = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "tests.standins.ollama_server",
            "--port",
            str(port),
            "--first-token-ms",
            "50",
            "--token-interval-ms",
            "10",
            "--tokens",
            str(tokens),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url)
    return process, url


def start_server(
    kind: str, port: int, env: dict[str, str], log: Path, app: str = "evaproject.asgi:application", root: Path = ROOT
) -> subprocess.Popen:
    if kind == "daphne":
        cmd = [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]
    else:
        # websockets' sans-I/O implementation, and no per-message deflate: token frames are a few
        # dozen bytes, and daphne does not compress either (same work on both sides).
        cmd = [
            PYTHON,
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--lifespan",
            "off",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--ws",
            UVICORN_WS,
            "--ws-per-message-deflate",
            "false",
            app,
        ]
    process = subprocess.Popen(cmd, cwd=root, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/health")
    return process


def row(run: Run, base: Run) -> str:
    added_p50 = run.pct("ttft_ms", 0.5) - base.pct("ttft_ms", 0.5)
    added_p99 = run.pct("ttft_ms", 0.99) - base.pct("ttft_ms", 0.99)
    tok = run.pct("per_token_ms", 0.5) - base.pct("per_token_ms", 0.5)
    return (
        f"| {run.name} | {run.concurrency} | {len(run.samples)} | {run.errors} | "
        f"{run.pct('ttft_ms', 0.5):.1f} / {run.pct('ttft_ms', 0.99):.1f} | "
        f"{base.pct('ttft_ms', 0.5):.1f} / {base.pct('ttft_ms', 0.99):.1f} | "
        f"**{added_p50:+.1f}** / **{added_p99:+.1f}** | {tok:+.2f} |"
    )


async def main_async(args: argparse.Namespace) -> None:
    ollama, ollama_url = start_standin()
    db_url = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
    env = eva_env(db_url, ollama_url)
    key = prepare_database(env)
    levels = args.levels or ([1, 10, 50] if args.quick else [1, 10, 50, 200])
    requests = {1: 10, 10: 4, 50: 3, 200: 2}
    servers = ["daphne"] if args.quick or args.daphne_only else ["daphne", "uvicorn"]
    with_sse = not args.ws_only
    lines = []
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        for server in servers:
            port = free_port()
            process = start_server(server, port, env, out_dir / f"{server}.log")
            eva_url = f"http://127.0.0.1:{port}"
            try:
                # Warm both paths (imports, pools) before measuring.
                await measure("ws", 2, 2, ollama_url=ollama_url, eva_url=eva_url, key=key)
                await measure("direct", 2, 2, ollama_url=ollama_url, eva_url=eva_url, key=key)
                for level in levels:
                    # Rounds alternate direct and EVA so that drifts in the machine's load
                    # (it is shared) fall on both sides alike.
                    base, ws_run = Run("direct", level), Run(f"ws ({server})", level)
                    base_sse, sse_run = Run("direct", level), Run(f"sse ({server})", level)
                    for _ in range(args.rounds):
                        for target, kind in ((base, "direct"), (ws_run, "ws")):
                            cpu = CpuMeter({"eva": process.pid, "stand-in": ollama.pid})
                            part = await measure(
                                kind, level, requests.get(level, 3), ollama_url=ollama_url, eva_url=eva_url, key=key
                            )
                            print(f"  {kind} x{level}: CPU s/s {cpu.report()}", flush=True)
                            target.samples += part.samples
                            target.errors += part.errors
                        if level <= 50 and with_sse:
                            for target, kind in ((base_sse, "direct"), (sse_run, "sse")):
                                part = await measure(
                                    kind, level, requests[level], ollama_url=ollama_url, eva_url=eva_url, key=key
                                )
                                target.samples += part.samples
                                target.errors += part.errors
                    lines.append(row(ws_run, base))
                    print(lines[-1], flush=True)
                    if level <= 50 and with_sse:
                        lines.append(row(sse_run, base_sse))
                        print(lines[-1], flush=True)
            finally:
                process.terminate()
                process.wait(10)
    finally:
        ollama.terminate()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    header = (
        "| path (server) | concurrent streams | requests | errors | EVA TTFT p50 / p99 ms | direct TTFT p50 / p99 ms "
        "| added TTFT p50 / p99 ms | added per token p50 ms |\n|---|---|---|---|---|---|---|---|"
    )
    print("\n" + header + "\n" + "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description="EVA chat latency over a direct Ollama-protocol stream")
    parser.add_argument("--quick", action="store_true", help="daphne only, up to 50 streams")
    parser.add_argument("--daphne-only", action="store_true")
    parser.add_argument("--ws-only", action="store_true", help="skip the SSE path")
    parser.add_argument("--levels", type=int, nargs="+", help="concurrency levels (default 1 10 50 200)")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    try:
        import uvloop  # the client must not be the bottleneck at 200 streams
    except ImportError:
        asyncio.run(main_async(args))
    else:
        uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
