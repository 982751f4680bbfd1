"""Windows: presets and custom ranges, half-open edges, and what an empty window looks like."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from accounts.errors import InvalidInput
from metrics.selectors import (
    latency_groups,
    latency_histograms,
    latency_overall,
    latency_report,
    latency_series,
    metric_filters,
    recent_errors,
)
from metrics.windows import parse_duration, resolve_window


@pytest.mark.parametrize(
    ("text", "expected"),
    [("15m", timedelta(minutes=15)), ("1h", timedelta(hours=1)), ("24h", timedelta(days=1)), ("7d", timedelta(days=7)),
     ("90s", timedelta(seconds=90)), ("2w", timedelta(weeks=2)), (" 30D ", timedelta(days=30))],
)
def test_it_reads_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "-5m", "0h", "1.5h", "3y", "1h30m"])
def test_it_refuses_what_is_not_a_duration(text):
    with pytest.raises(InvalidInput):
        parse_duration(text)


def test_a_preset_window_ends_now(now):
    window = resolve_window(window="1h", now=now)
    assert (window.start, window.end, window.name) == (now - timedelta(hours=1), now, "1h")


def test_no_window_means_the_last_24_hours(now):
    window = resolve_window(window=None, now=now)
    assert window.span == timedelta(hours=24) and window.name == "24h"


def test_a_custom_window_without_end_ends_now(now):
    window = resolve_window(window="custom", start=now - timedelta(hours=2), now=now)
    assert (window.start, window.end, window.name) == (now - timedelta(hours=2), now, "custom")


def test_naive_custom_dates_are_read_in_the_site_time_zone():
    with timezone.override("Europe/Paris"):
        window = resolve_window(window="custom", start=datetime(2026, 1, 10, 12, 0), end=datetime(2026, 1, 10, 13, 0))
    assert window.start == datetime(2026, 1, 10, 11, 0, tzinfo=UTC)  # Paris is UTC+1 in January
    assert window.span == timedelta(hours=1)


@pytest.mark.parametrize(
    ("start_before_now", "end_before_now"),
    [(timedelta(0), timedelta(0)), (timedelta(hours=1), timedelta(hours=2)), (timedelta(days=401), timedelta(0))],
    ids=["empty", "inverted", "longer-than-400-days"],
)
def test_it_refuses_empty_inverted_or_huge_custom_windows(now, start_before_now, end_before_now):
    with pytest.raises(InvalidInput):
        resolve_window(window="custom", start=now - start_before_now, end=now - end_before_now, now=now)


@pytest.mark.django_db
def test_a_row_at_the_start_counts_and_a_row_at_the_end_does_not(add_metrics, now):
    start, end = now - timedelta(hours=1), now
    add_metrics(created_at=start, total_ms=100.0)
    add_metrics(created_at=end - timedelta(microseconds=1), total_ms=200.0)
    add_metrics(created_at=end, total_ms=900.0)
    add_metrics(created_at=start - timedelta(microseconds=1), total_ms=900.0)
    overall = latency_overall(metric_filters(start=start, end=end))
    assert overall.count == 2
    assert overall.latency["total_ms"].p50 == pytest.approx(150.0)
    assert overall.latency["total_ms"].p99 == pytest.approx(199.0)


@pytest.mark.django_db
def test_consecutive_windows_count_each_request_once(add_metrics, now):
    edge = now - timedelta(minutes=30)
    add_metrics(created_at=edge)
    first = latency_overall(metric_filters(start=now - timedelta(hours=1), end=edge)).count
    second = latency_overall(metric_filters(start=edge, end=now)).count
    assert (first, second) == (0, 1)


@pytest.mark.django_db
def test_an_empty_window_has_counts_of_zero_and_no_percentiles(add_metrics, now):
    add_metrics(created_at=now - timedelta(days=3))
    filters = metric_filters(window="1h")
    overall = latency_overall(filters)
    assert overall.count == 0 and overall.errors == 0
    assert overall.error_rate is None and overall.tokens_per_second is None
    assert all(overall.latency[name].p50 is None and overall.latency[name].count == 0 for name in overall.latency)
    assert latency_groups(filters) == []
    assert recent_errors(filters) == []
    step, points = latency_series(filters)
    assert step == 30 and len(points) in (120, 121)
    assert all(point.count == 0 and point.latency["total_ms"].p95 is None for point in points)
    assert all(item.count == 0 for bins in latency_histograms(filters).values() for item in bins)


@pytest.mark.django_db
def test_series_buckets_cover_the_window_and_start_on_round_times(now):
    filters = metric_filters(start=now - timedelta(hours=24) + timedelta(minutes=7), end=now)
    step, points = latency_series(filters)
    assert step == 900
    assert all(point.start.timestamp() % 900 == 0 for point in points)
    assert points[0].start <= filters.window.start < points[0].start + timedelta(seconds=step)
    assert points[-1].start < filters.window.end <= points[-1].start + timedelta(seconds=step)


@pytest.mark.django_db
def test_histogram_bins_are_half_open_and_count_every_known_value(add_metrics, now):
    at = now - timedelta(minutes=5)
    values = (0.0, 49.9, 50.0, 99.0, 60000.0, 125000.0)
    add_metrics([{"created_at": at, "total_ms": value, "ttft_ms": None} for value in values])
    bins = latency_histograms(metric_filters(window="15m"))
    total = {(item.lower_ms, item.upper_ms): item.count for item in bins["total_ms"]}
    assert total[(0.0, 50)] == 2
    assert total[(50, 100)] == 2
    assert total[(60000, None)] == 2
    assert sum(item.count for item in bins["ttft_ms"]) == 0


@pytest.mark.django_db
def test_filters_narrow_every_part_of_the_report(add_metrics, now):
    at = now - timedelta(minutes=5)
    add_metrics(
        created_at=at, backend="ollama", model="phi3:mini", channel="ws", status="error", error_code="upstream_down"
    )
    add_metrics(created_at=at, backend="groq", model="llama", channel="rest")
    report = latency_report(metric_filters(window="1h", backend="groq"))
    assert report.overall.count == 1
    assert [group.key for group in report.groups] == [{"backend": "groq", "model": "llama", "channel": "rest"}]
    assert report.recent_errors == [] and report.error_codes == []
    report = latency_report(metric_filters(window="1h", channel="ws"))
    assert report.error_codes == [{"error_code": "upstream_down", "count": 1, "status_class": "upstream_error"}]


def test_an_unknown_channel_is_refused():
    with pytest.raises(InvalidInput):
        metric_filters(window="1h", channel="fax")


@pytest.mark.django_db
def test_groups_by_user_and_key_are_labelled_with_names(add_metrics, alice, now):
    from accounts.api_keys import api_key_create

    key, _ = api_key_create(owner=alice, name="phone", scopes="chat")
    add_metrics(created_at=now - timedelta(minutes=1), user=alice, api_key=key)
    add_metrics(created_at=now - timedelta(minutes=1))
    by_user = latency_groups(metric_filters(window="1h"), group_by=("user",))
    assert sorted(group.label for group in by_user) == ["(none)", "alice"]
    by_key = latency_groups(metric_filters(window="1h"), group_by=("key",))
    assert f"phone (eva_{key.prefix})" in [group.label for group in by_key]
