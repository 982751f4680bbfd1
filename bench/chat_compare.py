"""EVA now against EVA at an earlier commit: the same load, side by side, rounds alternating.

Same set-up as chat_latency.py (stand-in Ollama in its own process: first token after 50 ms,
then one every 10 ms, 20 tokens; EVA on Postgres and Redis; websockets clients on /ws/chat, or
aiohttp clients on POST /api/v1/chat with stream true).
The earlier commit is checked out in a temporary git worktree and served from there with this
checkout's virtualenv (so the requirements must be the same, or a superset). Each round starts
a fresh server for each side, warms it, and sends N sockets x R messages; printed per round and
as medians: the server's CPU per reply (user + system, /proc), its Postgres commits per reply
(pg_stat_database), and the clients' TTFT p50 / p99, with the direct-to-stand-in TTFT of the
same round as the baseline.

Run: .venv/bin/python bench/chat_compare.py --before d7992ed [--server daphne|uvicorn] [--path ws|ws-new|sse]
     [--rounds 3] [--streams 50] [--requests 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

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


def commits() -> int:
    time.sleep(1.0)  # Postgres publishes its counters about once a second
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (DB_NAME,)).fetchone()
    return int(row[0])


async def one(
    side: str, root: Path, args: argparse.Namespace, env: dict[str, str], ollama_url: str, key: str
) -> tuple[float, float, float, float]:
    port = free_port()
    log = ROOT / "bench" / "out" / f"compare-{side}.log"
    server = start_server(args.server, port, env, log, root=root)
    url = f"http://127.0.0.1:{port}"
    try:
        await measure("ws", 4, 2, ollama_url=ollama_url, eva_url=url, key=key)  # warm-up
        commits_before, cpu_before = commits(), cpu_seconds(server.pid)
        sse_path = args.sse_path_before if side.startswith("before") else args.sse_path_now
        run = await measure(
            args.path, args.streams, args.requests, ollama_url=ollama_url, eva_url=url, key=key, sse_path=sse_path
        )
        cpu = cpu_seconds(server.pid) - cpu_before
        replies = max(1, len(run.samples))
        per_reply_commits = (commits() - commits_before) / replies
    finally:
        server.terminate()
        server.wait(10)
    if run.errors:
        print(f"  {side}: {run.errors} errors", flush=True)
    return cpu / replies * 1000, per_reply_commits, run.pct("ttft_ms", 0.5), run.pct("ttft_ms", 0.99)


async def main_async(args: argparse.Namespace) -> None:
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    worktree = Path(tempfile.mkdtemp(prefix="eva-before-"))
    add = ["git", "worktree", "add", "--detach", "-f", str(worktree), args.before]
    await asyncio.to_thread(subprocess.run, add, cwd=ROOT, check=True, capture_output=True)
    (worktree / ".venv").symlink_to(ROOT / ".venv")
    ollama, ollama_url = start_standin()
    env = eva_env(f"postgres://postgres@127.0.0.1:5432/{DB_NAME}", ollama_url)
    key = prepare_database(env)
    sides = {f"before ({args.before})": worktree, "now": ROOT}
    results: dict[str, list[tuple[float, float, float, float]]] = {side: [] for side in sides}
    direct: list[tuple[float, float]] = []
    try:
        for round_ in range(args.rounds):
            base = await measure("direct", args.streams, args.requests, ollama_url=ollama_url, eva_url="", key=key)
            direct.append((base.pct("ttft_ms", 0.5), base.pct("ttft_ms", 0.99)))
            for side, root in sides.items():
                row = await one(side, root, args, env, ollama_url, key)
                results[side].append(row)
                print(
                    f"  round {round_ + 1} {side}: CPU/reply {row[0]:.2f} ms, commits/reply {row[1]:.2f}, "
                    f"TTFT p50 {row[2]:.1f} p99 {row[3]:.1f} (direct {direct[-1][0]:.1f} / {direct[-1][1]:.1f})",
                    flush=True,
                )
    finally:
        ollama.terminate()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        remove = ["git", "worktree", "remove", "--force", str(worktree)]
        await asyncio.to_thread(subprocess.run, remove, cwd=ROOT, check=False)
    direct_p50 = statistics.median(d[0] for d in direct)
    direct_p99 = statistics.median(d[1] for d in direct)
    print(
        f"\n{args.path} ({args.server}), {args.streams} clients x {args.requests} messages, "
        f"medians of {args.rounds} rounds; direct TTFT p50 / p99 {direct_p50:.1f} / {direct_p99:.1f} ms"
    )
    print("| code | EVA CPU per reply ms | Postgres commits per reply | TTFT p50 / p99 ms |\n|---|---|---|---|")
    for side, rows in results.items():
        med = [statistics.median(r[i] for r in rows) for i in range(4)]
        print(f"| {side} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.1f} / {med[3]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description="EVA now against an earlier commit, side by side")
    parser.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne")
    parser.add_argument(
        "--path",
        choices=["ws", "ws-new", "sse"],
        default="ws",
        help="/ws/chat on kept sockets, /ws/chat with a new socket per message, or SSE",
    )
    parser.add_argument("--sse-path-before", default="/api/v1/chat", help="the earlier commit's SSE URL path")
    parser.add_argument("--sse-path-now", default="/api/v1/chat/stream", help="this checkout's SSE URL path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
