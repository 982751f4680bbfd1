"""#18: the latency dashboard and JSON over rollups, at 1,000,000 and 10,000,000 raw rows.

    .venv/bin/python bench/metrics_rollups.py                        # 1M then 10M rows over 90 days
    .venv/bin/python bench/metrics_rollups.py --rows 1000000 --keep  # keep eva_bench18 afterwards
    .venv/bin/python bench/metrics_rollups.py --rows 10000000 --reuse --measure-only --keep   # time again

Creates its own database (eva_bench18), fills it with bench/metrics_queries.py's generate_series
statement (rows in time order over the last 90 days), builds the rollups with
`metrics_rollup --rebuild` (timed), reports both tables' sizes, then times the dashboard page
(HTTP GET, rendered) and the JSON report for each window with `source=auto` (what an admin
gets: rollups past 24 hours or 100,000 rows) and, as the baseline in the same run, with
`source=raw` (the exact percentiles over the rows, as before #18) for the windows where that
takes seconds rather than minutes. Rounds alternate raw and rollups. Drops the database at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from metrics_queries import create_database, database_url, drop_database, fill  # noqa: E402

PAGE = "/dashboard/latency/"


def sizes() -> dict[str, str]:
    from django.db import connection

    out = {}
    with connection.cursor() as cursor:
        for table in ("metrics_requestmetric", "metrics_latencyrollup"):
            cursor.execute(
                "SELECT pg_size_pretty(pg_total_relation_size(%s)), (SELECT count(*) FROM " + table + ")", [table]
            )
            size, count = cursor.fetchone()
            out[table] = f"{size} ({count:,} rows)"
        cursor.execute("SELECT level, count(*) FROM metrics_latencyrollup GROUP BY level ORDER BY level")
        out["rollup rows per level"] = ", ".join(f"{level} s: {count:,}" for level, count in cursor.fetchall())
    return out


def rounds(cases: list[tuple[str, Callable[[], Any]]], repeat: int) -> dict[str, list[float]]:
    """Each case once per round, the cases alternating, after one warm-up call each."""
    for _, function in cases:
        function()
    samples: dict[str, list[float]] = {label: [] for label, _ in cases}
    for _ in range(repeat):
        for label, function in cases:
            began = time.perf_counter()
            function()
            samples[label].append((time.perf_counter() - began) * 1000)
    return samples


def measure(*, rows: int, windows: list[str], raw_windows: list[str], repeat: int) -> list[tuple[Any, ...]]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from metrics.selectors import latency_report, metric_filters

    user_model = get_user_model()
    admin, _ = user_model.objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(admin)
    results = []
    for window in windows:
        cases: list[tuple[str, Callable[[], Any]]] = []
        sources = ["auto", "raw"] if window in raw_windows else ["auto"]
        for source in sources:
            cases.append((f"page {source}", lambda w=window, s=source: _page(client, w, s)))
            cases.append(
                (f"json {source}", lambda w=window, s=source: latency_report(metric_filters(window=w), source=s))
            )
        chosen = latency_report(metric_filters(window=window)).source
        for label, samples in rounds(cases, repeat).items():
            kind, source = label.split()
            shown = chosen if source == "auto" else "raw"
            median = statistics.median(samples)
            results.append((rows, window, kind, shown, median, min(samples), max(samples)))
            print(
                f"  {rows:>10,} rows {window:>4} {kind:<4} {shown:<7} median {median:8.1f} ms"
                f"  best {min(samples):8.1f}  worst {max(samples):8.1f}",
                flush=True,
            )
    return results


def _page(client: Any, window: str, source: str) -> Any:
    response = client.get(PAGE, {"window": window, "source": source})
    assert response.status_code == 200, response.status_code
    return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--windows", nargs="+", default=["1h", "24h", "7d", "30d", "90d"])
    parser.add_argument("--raw-windows", nargs="*", default=["1h", "24h", "7d"], help="also timed with source=raw")
    parser.add_argument("--database", default="eva_bench18")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="a kept database holding --rows rows: no refill")
    parser.add_argument("--measure-only", action="store_true", help="with --reuse: keep its rollups, only time")
    args = parser.parse_args()

    if not args.reuse:
        create_database(args.database)
    os.environ["DATABASE_URL"] = database_url(args.database)
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-0123456789abcdefghijklmnop")
    os.environ.setdefault("SECURE_SSL", "false")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evaproject.settings")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    table: list[tuple[Any, ...]] = []
    try:
        call_command("migrate", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            print(cursor.fetchone()[0])
        for rows in sorted(args.rows):
            print(f"filling to {rows:,} rows over {args.days} days…", flush=True)
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM metrics_requestmetric")
                present = cursor.fetchone()[0]
            if not (args.reuse and present == rows):
                seconds = fill(total=rows, days=args.days)
                print(f"  filled in {seconds:.0f} s", flush=True)
            else:
                print("  reusing the rows there (their timestamps end when they were made)", flush=True)
            if not args.measure_only:
                with connection.cursor() as cursor:
                    cursor.execute("TRUNCATE metrics_latencyrollup")
                began = time.perf_counter()
                call_command("metrics_rollup", "--rebuild")
                with connection.cursor() as cursor:
                    cursor.execute("VACUUM (ANALYZE) metrics_latencyrollup")
                print(f"  rollups rebuilt in {time.perf_counter() - began:.0f} s", flush=True)
            for name, value in sizes().items():
                print(f"  {name}: {value}", flush=True)
            table += measure(rows=rows, windows=args.windows, raw_windows=args.raw_windows, repeat=args.repeat)
        print("\n| raw rows | window | what | source | median ms | best | worst |\n|---:|---|---|---|---:|---:|---:|")
        for rows, window, kind, source, median, best, worst in table:
            print(f"| {rows:,} | {window} | {kind} | {source} | {median:.0f} | {best:.0f} | {worst:.0f} |")
    finally:
        if not args.keep:
            drop_database(args.database)
            print(f"dropped database {args.database}")


if __name__ == "__main__":
    main()
