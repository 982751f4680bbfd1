"""The rate limit's Redis script before and after it reports the caller's standing (#17).

Before (git 96dc0a1): count the request in each limit's list, return 0. After: also scan each
list for the requests still in the window, to return the tighter limit's places left and reset
(accounts/ratelimit.py). Both run against the real Redis (REDIS_URL, default db 14), with a
per-key limit of SIZE and a per-user limit of 2*SIZE, lists filled to their size first (the
worst case: the scan reads every entry). Rounds alternate before/after; each round pipelines
BATCH checks at once (as 50 concurrent chat requests do) REPEAT times and reports the median
microseconds per check. Redis' own time per call is the change of INFO commandstats' EVALSHA
counters over the round (nothing else here sends EVALSHA; EVA sends EVAL).

    .venv/bin/python bench/ratelimit_script.py [--size 60] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import redis.asyncio

ROOT = Path(__file__).resolve().parents[1]


def scripts() -> dict[str, str]:
    before = subprocess.run(
        ["git", "show", "96dc0a1:accounts/ratelimit.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    after = (ROOT / "accounts" / "ratelimit.py").read_text()

    def script(source: str) -> str:
        return source.split('_MOVING_WINDOW = """', 1)[1].split('"""', 1)[0]

    return {"before": script(before), "after": script(after)}


async def run_round(client: redis.asyncio.Redis, sha: str, *, size: int, batch: int, repeat: int) -> float:
    prefix = f"bench-rl:{uuid.uuid4().hex[:8]}"
    keys = [f"{prefix}:key", f"{prefix}:user"]
    args_of = lambda: [repr(time.time()), str(size), "600", str(2 * size), "600"]  # noqa: E731
    # Fill the lists to their sizes first (a long window keeps them full): every scan reads all.
    for _ in range(2 * size):
        await client.evalsha(sha, len(keys), *keys, *args_of())
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(batch):
                pipe.evalsha(sha, len(keys), *keys, *args_of())
            await pipe.execute(raise_on_error=False)
        timings.append((time.perf_counter() - started) / batch * 1e6)
    await client.delete(*keys)
    return statistics.median(timings)


async def evalsha_stats(client: redis.asyncio.Redis) -> tuple[int, int]:
    """EVALSHA's calls and microseconds so far (INFO commandstats; EVA itself sends EVAL)."""
    stats = (await client.info("commandstats")).get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=60)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    client = redis.asyncio.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"))
    shas = {name: await client.script_load(text) for name, text in scripts().items()}
    results: dict[str, list[float]] = {"before": [], "after": []}
    redis_usec: dict[str, list[float]] = {"before": [], "after": []}
    for index in range(options.rounds):
        order = ["before", "after"] if index % 2 == 0 else ["after", "before"]
        for name in order:
            calls, usec = await evalsha_stats(client)
            results[name].append(
                await run_round(client, shas[name], size=options.size, batch=options.batch, repeat=options.repeat)
            )
            calls_after, usec_after = await evalsha_stats(client)
            redis_usec[name].append((usec_after - usec) / max(1, calls_after - calls))
    await client.aclose()
    for name in ("before", "after"):
        print(
            f"{name:6}  client µs/check median {statistics.median(results[name]):7.1f}"
            f"  (rounds {', '.join(f'{v:.1f}' for v in results[name])})"
            f"  Redis µs/call median {statistics.median(redis_usec[name]):6.1f}"
        )
    ratio = statistics.median(results["after"]) / statistics.median(results["before"])
    print(f"after/before (client, per check): {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
