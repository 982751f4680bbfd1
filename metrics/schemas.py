"""Shapes of the metrics API's answers (they also document it in /api/docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Field, Schema

from accounts.validation import QueryInt, StoredText
from metrics.selectors import DEFAULT_GROUP_BY


class LatencyQuery(Schema):
    window: str = Field("24h", description="A duration: 15m, 1h, 24h, 7d, 30d... (at most 400 days), or custom.")
    start: datetime | None = Field(None, description="A custom window's start (1970 to 3000).")
    end: datetime | None = Field(None, description="A custom window's end, excluded (1970 to 3000).")
    backend: StoredText = ""
    model: StoredText = ""
    channel: str = ""
    user: QueryInt | None = None
    key: QueryInt | None = None
    group_by: str = ",".join(DEFAULT_GROUP_BY)
    source: str = Field(
        "auto", description="auto, raw (exact percentiles over the rows) or rollups (within 1 %); see README."
    )


class DistributionOut(Schema):
    count: int
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None


class AverageOut(Schema):
    count: int
    mean: float | None


class GroupOut(Schema):
    key: dict[str, Any]
    label: str
    count: int
    errors: int
    fallbacks: int
    cancelled: int
    error_rate: float | None
    fallback_rate: float | None
    tokens_per_second: float | None
    latency: dict[str, DistributionOut]
    upstream: dict[str, AverageOut]
    other_ms: float | None
    client_errors: int
    client_error_rate: float | None
    by_class: dict[str, int]


class WindowOut(Schema):
    name: str
    start: datetime
    end: datetime


class FiltersOut(Schema):
    backend: str
    model: str
    channel: str
    user: int | None
    key: int | None


class SeriesPointOut(Schema):
    start: datetime
    count: int
    errors: int
    latency: dict[str, DistributionOut]
    client_errors: int


class SeriesOut(Schema):
    bucket_seconds: int
    points: list[SeriesPointOut]


class HistogramBinOut(Schema):
    lower_ms: float
    upper_ms: float | None
    count: int


class RecentErrorOut(Schema):
    created_at: datetime
    request_id: str
    channel: str
    backend: str
    model: str
    error_code: str
    total_ms: float
    user_id: int | None
    api_key_id: int | None
    username: str | None
    status_class: str


class ErrorCodeOut(Schema):
    error_code: str
    count: int
    status_class: str


class ErrorsOut(Schema):
    by_code: list[ErrorCodeOut]
    recent: list[RecentErrorOut]


class SourceOut(Schema):
    name: str = Field(description="raw: exact percentiles over the rows; rollups: histograms, within 1 %")
    start: datetime | None = Field(description="the window the figures cover (rollups: widened to whole minutes)")
    end: datetime | None


class LatencyReportOut(Schema):
    window: WindowOut
    filters: FiltersOut
    group_by: list[str]
    overall: GroupOut
    groups: list[GroupOut]
    series: SeriesOut
    histograms: dict[str, list[HistogramBinOut]]
    errors: ErrorsOut
    source: SourceOut
    previous: GroupOut | None
