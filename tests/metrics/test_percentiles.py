"""Percentiles, means, counts and rates: computed in the database, checked against numpy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from metrics.selectors import (
    LATENCY_FIELDS,
    UPSTREAM_FIELDS,
    latency_groups,
    latency_overall,
    latency_series,
    metric_filters,
)
from metrics.stats import percentile_linear
from tests.metrics.generated import expected_distribution, generated_rows

REPO = Path(__file__).resolve().parents[2]
REL = 1e-9


def assert_distribution(actual, expected) -> None:
    actual = actual if isinstance(actual, dict) else actual.__dict__
    assert actual["count"] == expected["count"]
    for key in ("mean", "p50", "p95", "p99"):
        if expected[key] is None:
            assert actual[key] is None, key
        else:
            assert actual[key] == pytest.approx(expected[key], rel=REL), key


@pytest.mark.parametrize("size", [1, 2, 3, 10, 101, 1000])
def test_the_interpolation_is_numpys_linear_method(size):
    values = sorted(np.random.default_rng(size).lognormal(6, 1, size).tolist())
    for fraction in (0.0, 0.5, 0.95, 0.99, 1.0):
        expected = float(np.percentile(values, 100 * fraction, method="linear"))
        assert percentile_linear(values, fraction) == pytest.approx(expected, rel=REL)


def test_no_values_have_no_percentile():
    assert percentile_linear([], 0.5) is None


@pytest.fixture
def generated(add_metrics, now):
    start = now - timedelta(hours=6)
    rows = generated_rows(count=3000, start=start, span=timedelta(hours=6), seed=11)
    add_metrics(rows)
    return rows, metric_filters(start=start, end=now)


@pytest.mark.django_db
def test_overall_percentiles_match_numpy_on_postgres(generated):
    rows, filters = generated
    overall = latency_overall(filters)
    assert overall.count == len(rows)
    for field in LATENCY_FIELDS:
        assert_distribution(overall.latency[field], expected_distribution(rows, field))
    for field in UPSTREAM_FIELDS:
        expected = expected_distribution(rows, field)
        assert overall.upstream[field].count == expected["count"]
        assert overall.upstream[field].mean == pytest.approx(expected["mean"], rel=REL)


@pytest.mark.django_db
def test_each_backend_model_channel_group_matches_numpy(generated):
    rows, filters = generated
    groups = latency_groups(filters)
    assert len(groups) == 8  # 2 backends (each with its model) x 4 channels
    for group in groups:
        members = [row for row in rows if all(row[name] == value for name, value in group.key.items())]
        assert group.count == len(members)
        for field in LATENCY_FIELDS:
            assert_distribution(group.latency[field], expected_distribution(members, field))


@pytest.mark.django_db
def test_counts_rates_and_tokens_per_second_match_the_rows(generated):
    rows, filters = generated
    overall = latency_overall(filters)
    assert overall.errors == sum(row["status"] == "error" for row in rows)
    assert overall.fallbacks == sum(row["status"] == "fallback" for row in rows)
    assert overall.cancelled == sum(row["status"] == "cancelled" for row in rows)
    assert overall.error_rate == pytest.approx(overall.errors / len(rows))
    assert overall.fallback_rate == pytest.approx(overall.fallbacks / len(rows))
    # Every generated row has a provider generation time, so tokens/s is tokens over that time.
    tokens = sum(row["tokens_out"] for row in rows)
    generation_s = sum(row["upstream_generation_ms"] for row in rows) / 1000
    assert overall.tokens_per_second == pytest.approx(tokens / generation_s, rel=REL)
    upstream = [
        row["total_ms"] - sum(row[name] or 0 for name in UPSTREAM_FIELDS) for row in rows
    ]
    assert overall.other_ms == pytest.approx(float(np.mean(upstream)), rel=REL)


@pytest.mark.django_db
def test_tokens_per_second_falls_back_to_total_minus_ttft(add_metrics, now):
    add_metrics(created_at=now - timedelta(minutes=1), tokens_out=50, ttft_ms=200.0, total_ms=1200.0)
    add_metrics(created_at=now - timedelta(minutes=1), tokens_out=0, ttft_ms=None, total_ms=90.0, status="error")
    overall = latency_overall(metric_filters(window="1h"))
    assert overall.tokens_per_second == pytest.approx(50.0)


@pytest.mark.django_db
def test_each_time_bucket_matches_numpy(generated):
    rows, filters = generated
    step, points = latency_series(filters)
    assert step == 300  # 6 hours in at most 120 round buckets
    assert sum(point.count for point in points) == len(rows)
    for point in points:
        bucket_end = point.start + timedelta(seconds=step)
        members = [row for row in rows if point.start <= row["created_at"] < bucket_end]
        assert point.count == len(members)
        for field in LATENCY_FIELDS:
            assert_distribution(point.latency[field], expected_distribution(members, field))


def test_percentiles_match_numpy_on_sqlite(tmp_path, now):
    """The same selectors on a real SQLite database, in a process whose settings have no Postgres."""
    start = now - timedelta(hours=3)
    span = timedelta(hours=3)
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'probe.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "evaproject.settings",
    }
    args = [str(13), "1500", start.isoformat(), str(span.total_seconds()), start.isoformat(), now.isoformat()]
    result = subprocess.run(
        [sys.executable, "-m", "tests.metrics.sqlite_probe", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    rows = generated_rows(count=1500, start=start, span=span, seed=13)
    assert report["overall"]["count"] == len(rows)
    for field in LATENCY_FIELDS:
        assert_distribution(report["overall"]["latency"][field], expected_distribution(rows, field))
    for group in report["groups"]:
        members = [row for row in rows if all(row[name] == value for name, value in group["key"].items())]
        assert group["count"] == len(members)
        assert_distribution(group["latency"]["total_ms"], expected_distribution(members, "total_ms"))
    assert sum(point["count"] for point in report["series"]["points"]) == len(rows)
    assert sum(item["count"] for item in report["histograms"]["total_ms"]) == len(rows)
    with_ttft = sum(row["ttft_ms"] is not None for row in rows)
    assert sum(item["count"] for item in report["histograms"]["ttft_ms"]) == with_ttft
    busiest = max(report["series"]["points"], key=lambda point: point["count"])
    from datetime import datetime

    bucket_start = datetime.fromisoformat(busiest["start"])
    bucket_end = bucket_start + timedelta(seconds=report["series"]["bucket_seconds"])
    members = [row for row in rows if bucket_start <= row["created_at"] < bucket_end]
    assert_distribution(busiest["latency"]["ttft_ms"], expected_distribution(members, "ttft_ms"))
