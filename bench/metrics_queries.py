"""Time every latency-dashboard query over 1,000,000 and 10,000,000 RequestMetric rows in Postgres.

    .venv/bin/python bench/metrics_queries.py                      # 1M then 10M rows, 30 days
    .venv/bin/python bench/metrics_queries.py --rows 1000000 --keep  # keep eva_bench afterwards

Creates its own database (eva_bench by default) next to the one in BENCH_ADMIN_URL, fills it
with generate_series (rows in time order over the last 30 days, as a live system writes them,
with long-tailed latencies), runs each selector of metrics/selectors.py and the whole dashboard
page for several windows, prints a Markdown table, and drops the database at the end.
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

ADMIN_URL = os.environ.get("BENCH_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
TABLE = "metrics_requestmetric"

# One statement fills rows [first, last) of `total`, spread evenly over [now - days, now).
# Latencies are log-normal (Box-Muller on random()), ~10 % of replies have no first token,
# TTS rows carry a time to first audio, Groq rows a queue time, Ollama rows a load time.
FILL_SQL = f"""
INSERT INTO {TABLE} (created_at, request_id, session_id, channel, backend, model, status, error_code,
    ttft_ms, total_ms, time_to_first_audio_ms, tokens_in, tokens_out,
    upstream_load_ms, upstream_prompt_ms, upstream_generation_ms, upstream_queue_ms)
SELECT created_at, '', '', channel, backend,
    CASE WHEN backend = 'groq' THEN 'llama-3.1-8b-instant' WHEN r_model < 0.7 THEN 'phi3:mini' ELSE 'llama3.2:3b' END,
    status, CASE WHEN status = 'error' THEN 'upstream_timeout' ELSE '' END,
    CASE WHEN r_first < 0.1 THEN NULL ELSE ttft END, ttft + gen,
    CASE WHEN channel = 'tts' THEN ttft * 1.7 END,
    (50 + r_tokens * 400)::int, (1 + r_tokens * 400)::int,
    CASE WHEN backend = 'ollama' THEN -30 * ln(1 - r_load) END, ttft * 0.3, gen * 0.8,
    CASE WHEN backend = 'groq' THEN -20 * ln(1 - r_load) END
FROM (
    SELECT created_at, channel, backend, status, r_model, r_first, r_tokens, r_load,
        exp(6.0 + 0.8 * sqrt(-2 * ln(1 - u1)) * cos(2 * pi() * u2)) AS ttft,
        exp(7.0 + 0.6 * sqrt(-2 * ln(1 - u3)) * cos(2 * pi() * u4)) AS gen
    FROM (
        SELECT now() - make_interval(days => %(days)s)
                + make_interval(secs => g * %(days)s * 86400.0 / %(total)s) AS created_at,
            (ARRAY['ws','ws','ws','ws','ws','rest','rest','sse','sse','tts'])[1 + floor(random() * 10)::int] AS channel,
            CASE WHEN random() < 0.7 THEN 'ollama' ELSE 'groq' END AS backend,
            (ARRAY['ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok',
                   'ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok','ok',
                   'ok','ok','ok','ok','ok','ok','ok','ok','ok','error','fallback','fallback','fallback','cancelled'
                  ])[1 + floor(random() * 50)::int] AS status,
            random() AS r_model, random() AS r_first, random() AS r_tokens, random() AS r_load,
            random() AS u1, random() AS u2, random() AS u3, random() AS u4
        FROM generate_series(%(first)s, %(last)s - 1) AS g
    ) AS raw
) AS shaped
"""


def admin_connection() -> Any:
    import psycopg

    return psycopg.connect(ADMIN_URL, autocommit=True)


def database_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def create_database(name: str) -> None:
    with admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    from django.db import connections

    connections.close_all()
    with admin_connection() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(*, total: int, days: int, chunk: int = 1_000_000) -> float:
    """Grow the table to `total` rows (re-spreading nothing: new rows take the older slots)."""
    from django.db import connection

    began = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT LIKE %s",
            [TABLE, "%pkey"],
        )
        indexes = cursor.fetchall()
        # Loading without secondary indexes and building them once afterwards is several times faster.
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        # Rows are numbered over the final size so that timestamps spread over the whole window;
        # the rows already there are removed first so that the table stays in time order.
        cursor.execute(f"TRUNCATE {TABLE}")
        for first in range(0, total, chunk):
            last = min(first + chunk, total)
            cursor.execute(FILL_SQL, {"first": first, "last": last, "total": total, "days": days})
            print(f"  inserted {last:,} / {total:,} rows ({time.perf_counter() - began:.0f} s)", flush=True)
        for _, definition in indexes:
            cursor.execute(definition)
        print(f"  indexes rebuilt ({time.perf_counter() - began:.0f} s)", flush=True)
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM (ANALYZE) {TABLE}")
    return time.perf_counter() - began


def timed(function: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median and best wall time in milliseconds, after one warm-up call."""
    function()
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        function()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples), min(samples)


def benchmark(*, rows: int, repeat: int, windows: list[str]) -> list[tuple[str, str, float, float]]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from metrics.stats import analytics_queries

    def tuned(function: Callable[[], Any]) -> Callable[[], Any]:
        """One selector alone, with the session settings latency_report gives all of them."""

        def run() -> Any:
            with analytics_queries():
                return function()

        return run

    user_model = get_user_model()
    staff, _ = user_model.objects.get_or_create(username="bench-staff", defaults={"is_staff": True})
    client = Client()
    client.force_login(staff)
    results = []
    for window in windows:
        results += _run_cases(rows=rows, window=window, repeat=repeat, client=client, tuned=tuned)
    return results


def _run_cases(
    *, rows: int, window: str, repeat: int, client: Any, tuned: Callable[..., Any]
) -> list[tuple[str, str, float, float]]:
    from metrics import selectors
    from metrics.selectors import metric_filters

    results = []
    filters = metric_filters(window=window)
    filtered = metric_filters(window=window, backend="ollama", model="phi3:mini", channel="ws")
    cases: list[tuple[str, Callable[[], Any]]] = [
        (
            "overall: P50/P95/P99 of 3 latencies, counts, rates, upstream means",
            tuned(lambda: selectors.latency_overall(filters)),
        ),
        ("table by backend, model, channel", tuned(lambda: selectors.latency_groups(filters))),
        ("time series, 3 latencies", tuned(lambda: selectors.latency_series(filters))),
        (
            "time series, 1 latency (what the page draws)",
            tuned(lambda: selectors.latency_series(filters, fields=("total_ms",))),
        ),
        ("histograms, 3 latencies", tuned(lambda: selectors.latency_histograms(filters))),
        ("recent errors", tuned(lambda: selectors.recent_errors(filters))),
        ("error codes", tuned(lambda: selectors.error_codes(filters))),
        ("filter menus", tuned(lambda: selectors.filter_choices(filters.window))),
        ("JSON report (all of the above, GET /api/v1/metrics/latency)", lambda: selectors.latency_report(filters)),
        ("JSON report filtered to ollama / phi3:mini / ws", lambda: selectors.latency_report(filtered)),
        ("dashboard page (HTTP GET, rendered)", lambda: client.get("/dashboard/latency/", {"window": window})),
    ]
    for label, function in cases:
        median, best = timed(function, repeat)
        results.append((window, label, median, best))
        print(f"  {rows:>10,} rows  {window:>4}  {label:<66} median {median:8.1f} ms  best {best:8.1f} ms", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--windows", nargs="+", default=["15m", "1h", "24h", "7d"])
    parser.add_argument("--database", default="eva_bench")
    parser.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--reuse", action="store_true", help="use a kept database as it is when it holds the row count")
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

    try:
        call_command("migrate", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            print(cursor.fetchone()[0])
        table: list[tuple[int, str, str, float, float]] = []
        for rows in sorted(args.rows):
            print(f"filling to {rows:,} rows over {args.days} days…", flush=True)
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT count(*) FROM {TABLE}")
                present = cursor.fetchone()[0]
            if args.reuse and present == rows:
                print("  reusing the rows already there (their timestamps end when they were made)")
                seconds = 0.0
            else:
                seconds = fill(total=rows, days=args.days)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_size_pretty(pg_total_relation_size(%s))", [TABLE])
                size = cursor.fetchone()[0]
            print(f"  {rows:,} rows ready in {seconds:.0f} s, table with indexes: {size}", flush=True)
            table += [(rows, *result) for result in benchmark(rows=rows, repeat=args.repeat, windows=args.windows)]
        print("\n| rows | window | query | median ms | best ms |\n|---:|---|---|---:|---:|")
        for rows, window, label, median, best in table:
            print(f"| {rows:,} | {window} | {label} | {median:.0f} | {best:.0f} |")
    finally:
        if not args.keep:
            drop_database(args.database)
            print(f"dropped database {args.database}")


if __name__ == "__main__":
    main()
