"""CPU and time per statement of accounts.asyncdb's batches: this checkout against an earlier commit.

N concurrent callers each run T turns of three statements, as a chat turn does (read the
caller's last rows, insert one, update the caller's counter), through `asyncdb.execute`. The
earlier commit's accounts/asyncdb.py is read with `git show` and loaded beside this checkout's
(its own pool and batcher). Two ways of isolating failures that were considered are run too:
`sync each` (a Sync after each statement: each its own transaction, one round trip each) and
`unbatched` (each statement its own pool checkout). Variants alternate within each round;
printed per variant, medians over the rounds: this process's CPU (user + system) per
statement, the Postgres backends' CPU per statement (/proc), wall time per statement, and
statements per batch. With --fail-every K, every K-th turn's insert fails (a duplicate key).

Run: .venv/bin/python bench/asyncdb_batch.py [--before 09e6705] [--callers 50] [--turns 20] [--rounds 5]
     [--fail-every 0]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_NAME = "eva_bench_asyncdb"
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
os.environ.update(
    DJANGO_SETTINGS_MODULE="evaproject.settings",
    DATABASE_URL=os.environ.get("BENCH_DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"),
    SECRET_KEY="bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    DEBUG="false",
    SECURE_SSL="false",
)

import django  # noqa: E402
import psycopg  # noqa: E402

SETUP = """
DROP TABLE IF EXISTS bench_batch_row, bench_batch_counter;
CREATE TABLE bench_batch_row (
    id bigserial PRIMARY KEY, caller integer NOT NULL, turn integer NOT NULL, v text NOT NULL
);
CREATE TABLE bench_batch_counter (caller integer PRIMARY KEY, n integer NOT NULL);
"""
READ = "SELECT turn, v FROM bench_batch_row WHERE caller = %s ORDER BY id DESC LIMIT 10"
INSERT = "INSERT INTO bench_batch_row (caller, turn, v) VALUES (%s, %s, %s) RETURNING id"
FAILING_INSERT = "INSERT INTO bench_batch_row (id, caller, turn, v) VALUES (%s, %s, %s, %s) RETURNING id"
UPDATE = "UPDATE bench_batch_counter SET n = n + 1 WHERE caller = %s"

Execute = Callable[[str, Any], Awaitable[list[tuple[Any, ...]]]]


def load_before(commit: str) -> Any:
    """accounts/asyncdb.py as it was at `commit`, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{commit}:accounts/asyncdb.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    spec = importlib.util.spec_from_loader(f"asyncdb_at_{commit}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{commit}:accounts/asyncdb.py", "exec"), module.__dict__)
    return module


def alternatives(asyncdb: Any) -> dict[str, tuple[Execute, Any]]:
    """The two other ways considered, on this checkout's pool: (execute, batcher or None)."""
    from accounts.batching import Batcher, settle

    async def send_sync_each(batch: list[Any]) -> None:
        async with (await asyncdb._pool()).connection() as conn, conn.pipeline() as pipeline:
            for (sql, params), future in batch:
                cursor = conn.cursor()
                try:
                    await cursor.execute(sql, params)
                    await pipeline.sync()
                    settle(future, await cursor.fetchall() if cursor.description else [])
                except psycopg.errors.OperationalError:
                    raise
                except psycopg.Error as exc:
                    settle(future, error=exc)

    sync_each: Batcher[Any, Any] = Batcher(send_sync_each)

    async def unbatched(sql: str, params: Any) -> list[tuple[Any, ...]]:
        async with (await asyncdb._pool()).connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall() if cursor.description else []

    return {
        "sync each": (lambda sql, params: sync_each.submit((sql, params)), sync_each),
        "unbatched": (unbatched, None),
    }


def backend_cpu(conn: psycopg.Connection) -> dict[int, float]:
    """CPU seconds of each Postgres backend on the bench database but `conn`'s."""
    pids = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    cpu = {}
    for (pid,) in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # another machine's Postgres: not measured
        cpu[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu


async def workload(execute: Execute, *, callers: int, turns: int, fail_every: int) -> tuple[int, int]:
    """Every caller's turns; (statements sent, statements that failed)."""
    failed = 0

    async def caller(number: int) -> None:
        nonlocal failed
        for turn in range(turns):
            await execute(READ, (number,))
            try:
                if fail_every and turn % fail_every == fail_every - 1:
                    await execute(FAILING_INSERT, (1, number, turn, "duplicate"))
                else:
                    await execute(INSERT, (number, turn, f"caller {number} turn {turn}"))
            except psycopg.errors.UniqueViolation:
                failed += 1
            await execute(UPDATE, (number,))

    await asyncio.gather(*(caller(number) for number in range(callers)))
    return callers * turns * 3, failed


async def run_variant(
    execute: Execute, batcher: Any, admin: psycopg.Connection, args: argparse.Namespace
) -> tuple[float, float, float, float]:
    """(client CPU µs, server CPU µs, wall µs per statement, statements per batch) of one run."""
    admin.execute("TRUNCATE bench_batch_row, bench_batch_counter")
    admin.execute("INSERT INTO bench_batch_row (id, caller, turn, v) VALUES (1, -1, 0, 'taken')")
    admin.execute("SELECT setval('bench_batch_row_id_seq', 2)")
    admin.execute("INSERT INTO bench_batch_counter SELECT g, 0 FROM generate_series(0, %s) g", (args.callers,))
    await workload(execute, callers=4, turns=2, fail_every=0)  # warm: the pool's connections are open
    batches = batcher.batches if batcher is not None else 0
    server = backend_cpu(admin)
    cpu, wall = time.process_time(), time.perf_counter()
    statements, failed = await workload(execute, callers=args.callers, turns=args.turns, fail_every=args.fail_every)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    server_after = backend_cpu(admin)
    server_cpu = sum(after - server.get(pid, 0.0) for pid, after in server_after.items())
    written = admin.execute("SELECT count(*) FROM bench_batch_row WHERE caller >= 0").fetchone()
    counted = admin.execute("SELECT sum(n) FROM bench_batch_counter").fetchone()
    expected_rows = args.callers * args.turns - failed + 8
    assert written is not None and written[0] == expected_rows, (written, expected_rows)
    assert counted is not None and counted[0] == args.callers * args.turns + 8, counted
    per_batch = statements / (batcher.batches - batches) if batcher is not None else 1.0
    return cpu / statements * 1e6, server_cpu / statements * 1e6, wall / statements * 1e6, per_batch


async def main_async(args: argparse.Namespace) -> None:
    from accounts import asyncdb

    before = load_before(args.before)
    variants: dict[str, tuple[Execute, Callable[[], Any]]] = {
        f"before ({args.before})": (before.execute, before._batcher),
        "now (savepoints)": (asyncdb.execute, asyncdb._batcher),
    }
    for name, (execute, batcher) in alternatives(asyncdb).items():
        variants[name] = (execute, lambda batcher=batcher: batcher)
    results: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in variants}
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as admin:
        admin.execute(SETUP)
        for round_ in range(args.rounds):
            order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in order:
                execute, batcher = variants[name]
                results[name].append(await run_variant(execute, batcher(), admin, args))
            print(
                f"round {round_ + 1}: " + "; ".join(f"{name} {results[name][-1][0]:.0f} µs" for name in variants),
                flush=True,
            )
        await before.close_async_pool()
        await asyncdb.close_async_pool()
        admin.execute("DROP TABLE bench_batch_row, bench_batch_counter")
    print(
        f"\n{args.callers} callers x {args.turns} turns x 3 statements, fail every {args.fail_every or 'never'}; "
        f"medians of {args.rounds} rounds\n"
    )
    print(
        "| variant | client CPU µs / statement | Postgres CPU µs / statement | wall µs / statement "
        "| statements per batch |"
    )
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        medians = [statistics.median(run[i] for run in runs) for i in range(4)]
        print(f"| {name} | {medians[0]:.0f} | {medians[1]:.0f} | {medians[2]:.0f} | {medians[3]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="09e6705", help="the commit whose accounts/asyncdb.py is the baseline")
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fail-every", type=int, default=0, help="every K-th turn's insert fails (0: none)")
    args = parser.parse_args()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone():
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    django.setup()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
