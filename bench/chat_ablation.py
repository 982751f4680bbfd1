"""Where EVA's CPU per reply goes: the same load with some of EVA's parts turned off.

Same set-up as chat_latency.py (stand-in Ollama in its own process: first token after 50 ms,
then one every 10 ms, 20 tokens; EVA on Postgres and Redis; websockets clients). For each
variant, EVA is started with bench/ablation_asgi.py and EVA_ABLATE naming the parts replaced by
no-ops (rate limit, database — the history read, the message writes or both —, metrics); N sockets
send R messages each. Printed per variant: EVA's CPU per reply (user + system, /proc) and the
clients' TTFT p50 / p99, medians over the rounds; variants alternate within each round, and a
direct-to-stand-in run gives the baseline.

Run: .venv/bin/python bench/chat_ablation.py [--streams 50] [--requests 10] [--rounds 3] [--server daphne|uvicorn]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
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

VARIANTS = {
    "EVA": "",
    "no rate limit": "ratelimit",
    "no database": "db",
    "no history read": "history",
    "no message writes": "writes",
    "no metrics": "metrics",
    "none of the three": "ratelimit,db,metrics",
}


async def main_async(args: argparse.Namespace) -> None:
    ollama, ollama_url = start_standin()
    env = eva_env(f"postgres://postgres@127.0.0.1:5432/{DB_NAME}", ollama_url)
    key = prepare_database(env)
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ["direct", *VARIANTS]}
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    try:
        for round_ in range(args.rounds):
            base = await measure("direct", args.streams, args.requests, ollama_url=ollama_url, eva_url="", key=key)
            results["direct"].append((0.0, base.pct("ttft_ms", 0.5), base.pct("ttft_ms", 0.99)))
            for name, parts in VARIANTS.items():
                port = free_port()
                server = start_server(
                    args.server,
                    port,
                    {**env, "EVA_ABLATE": parts},
                    out / "ablation.log",
                    app="bench.ablation_asgi:application",
                )
                url = f"http://127.0.0.1:{port}"
                try:
                    await measure("ws", 4, 2, ollama_url=ollama_url, eva_url=url, key=key)  # warm-up
                    before = cpu_seconds(server.pid)
                    run = await measure("ws", args.streams, args.requests, ollama_url=ollama_url, eva_url=url, key=key)
                    used = cpu_seconds(server.pid) - before
                finally:
                    server.terminate()
                    server.wait(10)
                if run.errors:
                    print(f"  {name}: {run.errors} errors", flush=True)
                row = (used / max(1, len(run.samples)) * 1000, run.pct("ttft_ms", 0.5), run.pct("ttft_ms", 0.99))
                results[name].append(row)
                print(
                    f"  round {round_ + 1} {name}: CPU/reply {row[0]:.2f} ms, TTFT p50 {row[1]:.1f} p99 {row[2]:.1f}",
                    flush=True,
                )
                await asyncio.sleep(0.5)
    finally:
        ollama.terminate()
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    direct_p50 = statistics.median(r[1] for r in results["direct"])
    direct_p99 = statistics.median(r[2] for r in results["direct"])
    print(f"\n{args.server}, {args.streams} streams x {args.requests} requests, medians of {args.rounds} rounds")
    print("| variant | EVA CPU per reply ms | TTFT p50 / p99 ms | added TTFT p50 / p99 ms |\n|---|---|---|---|")
    print(f"| direct to the stand-in | — | {direct_p50:.1f} / {direct_p99:.1f} | — |")
    for name in VARIANTS:
        cpu = statistics.median(r[0] for r in results[name])
        p50 = statistics.median(r[1] for r in results[name])
        p99 = statistics.median(r[2] for r in results[name])
        print(f"| {name} | {cpu:.2f} | {p50:.1f} / {p99:.1f} | {p50 - direct_p50:+.1f} / {p99 - direct_p99:+.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne")
    args = parser.parse_args()
    import uvloop

    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
