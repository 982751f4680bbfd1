"""Rollups: within 1 % of the exact percentiles, exact counts, written with the rows, rebuildable, kept by prune."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from metrics import rollups, sketch
from metrics.classes import StatusClass, status_class
from metrics.models import LatencyRollup, RequestMetric
from metrics.selectors import LATENCY_FIELDS, UPSTREAM_FIELDS, latency_report, metric_filters
from tests.metrics.generated import expected_distribution, generated_rows

REPO = Path(__file__).resolve().parents[2]
# The sketch's bound, and float rounding on top of it.
WITHIN = sketch.RELATIVE_ACCURACY + 1e-9


def assert_close(actual: Any, expected: dict[str, Any]) -> None:
    """Counts exact, means to float precision, percentiles within the sketch's relative error."""
    actual = actual if isinstance(actual, dict) else actual.__dict__
    assert actual["count"] == expected["count"]
    for key in ("mean", "p50", "p95", "p99"):
        if expected[key] is None:
            assert actual[key] is None, key
        elif key == "mean":
            assert actual[key] == pytest.approx(expected[key], rel=1e-9)
        else:
            assert abs(actual[key] - expected[key]) <= WITHIN * abs(expected[key]), (key, actual[key], expected[key])


# --- the sketch --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100, 5000])
@pytest.mark.parametrize("sigma", [0.3, 1.5])
def test_sketch_percentiles_are_within_one_percent_of_numpys(size, sigma):
    values = np.random.default_rng(size).lognormal(5.0, sigma, size)
    histogram = sketch.Histogram()
    histogram.add_values(values.tolist())
    fractions = (0.0, 0.5, 0.95, 0.99, 1.0)
    for fraction, estimate in zip(fractions, histogram.percentiles(fractions), strict=True):
        exact = float(np.percentile(values, 100 * fraction, method="linear"))
        assert abs(estimate - exact) <= WITHIN * exact


def test_histograms_add_up_through_their_encoding():
    first, second = {}, {}
    for value in (0.5, 12.0, 12.1, 800.0):
        sketch.add_value(first, value)
    for value in (12.0, 90_000.0):
        sketch.add_value(second, value)
    merged = sketch.merge_encoded([sketch.encode(first, zeros=2), sketch.encode(second)])
    counts, zeros = sketch.decode(merged)
    assert zeros == 2 and sum(counts.values()) == 6
    histogram = sketch.Histogram()
    histogram.add_encoded(merged)
    assert histogram.total == 8
    assert histogram.percentiles([0.0])[0] == 0.0  # zeros read back as exactly 0
    assert sketch.encode({}) == b"" and sketch.decode(b"") == ({}, 0)


# --- status classes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("ok", "", StatusClass.OK),
        ("fallback", "", StatusClass.OK),
        ("cancelled", "cancelled", StatusClass.CANCELLED),
        ("error", "rate_limited", StatusClass.CLIENT_ERROR),
        ("error", "invalid_text", StatusClass.CLIENT_ERROR),
        ("error", "invalid_whatever", StatusClass.CLIENT_ERROR),
        ("error", "revoked_api_key", StatusClass.CLIENT_ERROR),
        ("error", "text_too_long", StatusClass.CLIENT_ERROR),
        ("error", "upstream_error", StatusClass.UPSTREAM_ERROR),
        ("error", "upstream_timeout", StatusClass.UPSTREAM_ERROR),
        ("error", "no_backend", StatusClass.UPSTREAM_ERROR),
        ("error", "internal_error", StatusClass.SERVER_ERROR),
        ("error", "tts_unavailable", StatusClass.SERVER_ERROR),
        ("error", "", StatusClass.SERVER_ERROR),
    ],
)
def test_status_classes(status, code, expected):
    assert status_class(status, code) == expected


@pytest.mark.django_db
@pytest.mark.parametrize("source", ["raw", "rollups"])
def test_client_errors_are_shown_apart_from_failures(add_metrics, now, source):
    at = now - timedelta(minutes=30)
    rows = [
        {"created_at": at, "status": "ok"},
        {"created_at": at, "status": "error", "error_code": "invalid_text", "channel": "tts"},
        {"created_at": at, "status": "error", "error_code": "rate_limited"},
        {"created_at": at, "status": "error", "error_code": "upstream_timeout"},
        {"created_at": at, "status": "error", "error_code": "internal_error"},
        {"created_at": at, "status": "cancelled", "error_code": "cancelled"},
    ]
    add_metrics(rows)
    rollups.rebuild()
    report = latency_report(metric_filters(start=now - timedelta(hours=1), end=now), source=source)
    assert report.source == source
    overall = report.overall
    assert (overall.count, overall.errors, overall.client_errors, overall.cancelled) == (6, 2, 2, 1)
    assert overall.error_rate == pytest.approx(2 / 6) and overall.client_error_rate == pytest.approx(2 / 6)
    assert overall.by_class == {
        "ok": 1, "cancelled": 1, "client_error": 2, "upstream_error": 1, "server_error": 1
    }
    classes = {item["error_code"]: item["status_class"] for item in report.error_codes}
    assert classes == {
        "invalid_text": "client_error",
        "rate_limited": "client_error",
        "upstream_timeout": "upstream_error",
        "internal_error": "server_error",
    }
    assert sum(point.errors for point in report.series) == 2
    assert sum(point.client_errors for point in report.series) == 2


# --- rollups against exact percentiles ---------------------------------------------------------


@pytest.fixture
def week(add_metrics, now):
    """Rows over 7 days and a window that starts and ends mid-hour, so minutes, hours and days all tile it."""
    rows = generated_rows(count=4000, start=now - timedelta(days=7), span=timedelta(days=7), seed=5)
    add_metrics(rows)
    rollups.rebuild()
    start = now - timedelta(days=6, hours=7, minutes=13)
    end = now - timedelta(minutes=47)
    inside = [row for row in rows if start <= row["created_at"] < end]
    return inside, metric_filters(start=start, end=end)


@pytest.mark.django_db
def test_rollups_agree_with_the_exact_percentiles_on_postgres(week):
    rows, filters = week
    report = latency_report(filters, source="rollups")
    assert report.source == "rollups"
    assert (report.source_start, report.source_end) == (filters.window.start, filters.window.end)  # whole minutes
    assert report.overall.count == len(rows)
    for field in LATENCY_FIELDS:
        assert_close(report.overall.latency[field], expected_distribution(rows, field))
    for field in UPSTREAM_FIELDS:
        expected = expected_distribution(rows, field)
        assert report.overall.upstream[field].count == expected["count"]
        assert report.overall.upstream[field].mean == pytest.approx(expected["mean"], rel=1e-9)
    exact = latency_report(filters, source="raw")
    assert report.overall.tokens_per_second == pytest.approx(exact.overall.tokens_per_second, rel=1e-9)
    assert report.overall.other_ms == pytest.approx(exact.overall.other_ms, rel=1e-9)
    assert len(report.groups) == 8
    for group in report.groups:
        members = [row for row in rows if all(row[name] == value for name, value in group.key.items())]
        assert group.count == len(members)
        for field in LATENCY_FIELDS:
            assert_close(group.latency[field], expected_distribution(members, field))
    assert report.bucket_seconds == 7200
    assert sum(point.count for point in report.series) == len(rows)
    for point in report.series:
        end = point.start + timedelta(seconds=report.bucket_seconds)
        members = [row for row in rows if point.start <= row["created_at"] < end]
        assert point.count == len(members)
        assert_close(point.latency["total_ms"], expected_distribution(members, "total_ms"))
    assert sum(item.count for item in report.histograms["total_ms"]) == len(rows)


@pytest.mark.django_db
def test_a_long_window_reads_days_and_compares_with_the_period_before(add_metrics, now):
    rows = generated_rows(count=3000, start=now - timedelta(days=60), span=timedelta(days=60), seed=9)
    add_metrics(rows)
    rollups.rebuild()
    report = latency_report(metric_filters(window="30d"))
    assert report.source == "rollups" and report.bucket_seconds == 86400
    start = report.filters.window.start
    inside = [row for row in rows if start <= row["created_at"]]
    before = [row for row in rows if start - timedelta(days=30) <= row["created_at"] < start]
    # Minute rollups are kept 8 days: a window starting 30 days ago is widened to the whole hour.
    first_hour = datetime.fromtimestamp(rollups.bucket_of(start, 3600), tz=UTC)
    assert report.source_start == first_hour
    widened = [row for row in rows if first_hour <= row["created_at"]]
    assert report.overall.count == len(widened) and len(widened) - len(inside) <= 5
    assert_close(report.overall.latency["total_ms"], expected_distribution(widened, "total_ms"))
    assert report.previous is not None
    assert abs(report.previous.count - len(before)) <= 5


@pytest.mark.django_db
def test_the_source_is_chosen_by_window_rows_and_filters(add_metrics, now, settings):
    add_metrics(created_at=now - timedelta(minutes=5))
    rollups.rebuild()
    assert latency_report(metric_filters(window="1h")).source == "raw"
    assert latency_report(metric_filters(window="7d")).source == "rollups"
    # Rollups know no user or key.
    assert latency_report(metric_filters(window="7d", user_id=1)).source == "raw"
    assert latency_report(metric_filters(window="7d"), group_by=("user",)).source == "raw"
    settings.METRICS_EXACT_MAX_ROWS = 0
    assert latency_report(metric_filters(window="1h")).source == "rollups"
    assert latency_report(metric_filters(window="1h"), source="raw").source == "raw"


# --- written with the rows ---------------------------------------------------------------------


def rollup_table() -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Every rollup row, its histograms decoded, floats rounded: comparable across rebuilds."""
    table = {}
    for row in LatencyRollup.objects.values_list(*rollups.KEY_COLUMNS, *rollups.VALUE_COLUMNS):
        key, values = row[: len(rollups.KEY_COLUMNS)], row[len(rollups.KEY_COLUMNS) :]
        sums = tuple(round(float(v), 6) for v in values[: len(rollups.SUM_COLUMNS)])
        hists = tuple(sketch.decode(v) for v in values[len(rollups.SUM_COLUMNS) : -1])
        table[key] = (sums, hists, json.loads(values[-1]))
    return table


def assert_rollups_match_the_raw_rows() -> None:
    kept = rollup_table()
    rollups.rebuild()
    assert kept == rollup_table()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("async_db", [True, False], ids=["async-pool", "orm"])
async def test_the_recorder_keeps_the_rollups_as_a_rebuild_would(settings, async_db, now):
    from asgiref.sync import sync_to_async

    from metrics.recorder import flush_metrics, record_metric

    settings.DATABASE_ASYNC = async_db
    rows = generated_rows(count=450, start=now - timedelta(hours=3), span=timedelta(hours=3), seed=21)
    for row in rows:
        record_metric(**row)
    await flush_metrics()
    assert await RequestMetric.objects.acount() == 450
    totals = {
        level: sum(count for (lv, *_), count in [
            (key, v) for key, v in await sync_to_async(_counts)()
        ] if lv == level)
        for level in rollups.LEVELS
    }
    assert totals == {60: 450, 3600: 450, 86400: 450}
    await sync_to_async(assert_rollups_match_the_raw_rows)()


def _counts() -> list[tuple[tuple[Any, ...], int]]:
    return [((row[0],), row[1]) for row in LatencyRollup.objects.values_list("level", "count")]


@pytest.mark.django_db(transaction=True)
def test_a_writer_killed_mid_batch_counts_nothing_and_its_retry_counts_once(now):
    """The writer process is stopped (SIGKILL) after its rows are inserted, before their rollups and the commit."""
    if connection.vendor != "postgresql":
        pytest.skip("the advisory lock that holds the writer mid-batch is Postgres'")
    import psycopg

    params = connection.get_connection_params()
    dsn = {k: v for k, v in params.items() if k in ("host", "port", "user", "password", "dbname")}
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{dsn.get('user', 'postgres')}@{dsn.get('host', '127.0.0.1')}:"
        f"{dsn.get('port', 5432)}/{dsn['dbname']}",
        "DJANGO_SETTINGS_MODULE": "evaproject.settings",
    }
    command = [sys.executable, "-m", "tests.metrics.rollup_writer", "300", now.isoformat()]
    with psycopg.connect(**dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [rollups.ADVISORY_LOCK])  # the writer will wait on it
        writer = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            waiting = None
            deadline = timezone.now() + timedelta(seconds=60)
            while waiting is None and timezone.now() < deadline and writer.poll() is None:
                # Its batch has inserted the rows and now waits for the rollups' lock.
                row = holder.execute(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s",
                    [rollups.ADVISORY_LOCK],
                ).fetchone()
                waiting = row[0] if row else None
                if waiting is None:
                    holder.execute("SELECT pg_sleep(0.02)")
            assert waiting is not None, writer.communicate(timeout=5)
            writer.kill()
            writer.wait(timeout=30)
        finally:
            if writer.poll() is None:
                writer.kill()
        holder.execute("SELECT pg_advisory_unlock(%s)", [rollups.ADVISORY_LOCK])
        # The killed writer's backend gets the lock, finds its client gone and rolls back: its
        # transaction never saw a COMMIT.
        deadline = timezone.now() + timedelta(seconds=30)
        while holder.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [waiting]).fetchone():
            assert timezone.now() < deadline
            holder.execute("SELECT pg_sleep(0.02)")
    assert RequestMetric.objects.count() == 0
    assert LatencyRollup.objects.count() == 0
    # Started again, the same batch is written once, rows and rollups together.
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert RequestMetric.objects.count() == 300
    for level in rollups.LEVELS:
        assert sum(LatencyRollup.objects.filter(level=level).values_list("count", flat=True)) == 300
    assert_rollups_match_the_raw_rows()


# --- rebuild and prune -------------------------------------------------------------------------


@pytest.mark.django_db
def test_prune_keeps_the_rollups_and_a_rebuild_never_recomputes_pruned_days(add_metrics, now):
    rows = generated_rows(count=600, start=now - timedelta(days=20), span=timedelta(days=20), seed=4)
    add_metrics(rows)
    rollups.rebuild()
    before = latency_report(metric_filters(window="30d"))
    call_command("metrics_prune", "--older-than", "10d", stdout=StringIO())
    assert RequestMetric.objects.count() < len(rows)
    call_command("metrics_rollup", "--rebuild", stdout=StringIO())
    after = latency_report(metric_filters(window="30d"))
    assert after.source == "rollups"
    assert after.overall.count == before.overall.count == len(rows)
    kept, was = after.overall.latency["total_ms"], before.overall.latency["total_ms"]
    assert (kept.count, kept.p50, kept.p95, kept.p99) == (was.count, was.p50, was.p95, was.p99)
    assert kept.mean == pytest.approx(was.mean, rel=1e-12)  # sums added in another order
    # A window of pruned time reads the rollups, never the (missing) raw rows.
    old = metric_filters(start=now - timedelta(days=19), end=now - timedelta(days=18, hours=12))
    assert latency_report(old).source == "rollups"


@pytest.mark.django_db
def test_the_rebuild_command_takes_a_date_or_a_duration(add_metrics, now):
    # Four days back, so that at any hour at least a day of rows lies before "2d" (cut at a day's start).
    add_metrics(generated_rows(count=50, start=now - timedelta(days=4), span=timedelta(days=4), seed=2))
    out = StringIO()
    call_command("metrics_rollup", "--rebuild", "--since", "2d", stdout=out)
    assert "Rebuilt the rollups" in out.getvalue()
    day_rows = LatencyRollup.objects.filter(level=86400)
    assert 0 < sum(day_rows.values_list("count", flat=True)) < 50  # the last two days (and today) only
    call_command("metrics_rollup", "--rebuild", "--since", (now - timedelta(days=5)).date().isoformat(), stdout=out)
    assert sum(LatencyRollup.objects.filter(level=86400).values_list("count", flat=True)) == 50
    with pytest.raises(Exception, match="--since"):
        call_command("metrics_rollup", "--rebuild", "--since", "last tuesday", stdout=out)


def test_rollups_agree_with_the_exact_percentiles_on_sqlite(tmp_path):
    """The recorder's rollups (and a rebuild's) on a real SQLite database, against numpy."""
    now = timezone.now().replace(second=0, microsecond=0)
    start = now - timedelta(days=3, hours=5, minutes=10)
    span = timedelta(days=3, hours=5)
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'probe.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "evaproject.settings",
    }
    args = ["17", "1200", start.isoformat(), str(span.total_seconds()), start.isoformat(), now.isoformat(), "rollups"]
    result = subprocess.run(
        [sys.executable, "-m", "tests.metrics.sqlite_probe", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    rows = generated_rows(count=1200, start=start, span=span, seed=17)
    assert report["source"]["name"] == "rollups"
    assert report["overall"]["count"] == len(rows)
    for field in LATENCY_FIELDS:
        assert_close(report["overall"]["latency"][field], expected_distribution(rows, field))
    for group in report["groups"]:
        members = [row for row in rows if all(row[name] == value for name, value in group["key"].items())]
        assert group["count"] == len(members)
        assert_close(group["latency"]["total_ms"], expected_distribution(members, "total_ms"))
    assert sum(point["count"] for point in report["series"]["points"]) == len(rows)
