"""The shapes of a latency report: what the selectors return and the page and API serialize."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from metrics.windows import Window


@dataclass(frozen=True)
class MetricFilters:
    window: Window
    backend: str = ""
    model: str = ""
    channel: str = ""
    user_id: int | None = None
    api_key_id: int | None = None


@dataclass(frozen=True)
class Distribution:
    """Percentiles, mean and number of known values of one timing, in milliseconds."""

    count: int
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True)
class Average:
    """Mean of one upstream timing over the requests that reported it, in milliseconds."""

    count: int
    mean: float | None


@dataclass(frozen=True)
class GroupStats:
    key: dict[str, Any]
    label: str
    count: int
    # Failures of EVA or its upstreams (status classes server_error and upstream_error).
    errors: int
    fallbacks: int
    cancelled: int
    error_rate: float | None
    fallback_rate: float | None
    tokens_per_second: float | None
    latency: dict[str, Distribution]
    upstream: dict[str, Average]
    # Mean of total minus the upstream parts, over requests with upstream timings: EVA,
    # the network and anything the provider does not report.
    other_ms: float | None
    # Requests refused as the client's own doing (4xx: bad input, rate limited, unauthorised).
    client_errors: int = 0
    client_error_rate: float | None = None
    # Requests per status class (metrics.classes.StatusClass values).
    by_class: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SeriesPoint:
    start: datetime
    count: int
    errors: int
    latency: dict[str, Distribution]
    client_errors: int = 0


@dataclass(frozen=True)
class HistogramBin:
    lower_ms: float
    upper_ms: float | None  # None: no upper edge (the last bin)
    count: int


@dataclass(frozen=True)
class LatencyReport:
    filters: MetricFilters
    group_by: tuple[str, ...]
    overall: GroupStats
    groups: list[GroupStats]
    bucket_seconds: int
    series: list[SeriesPoint]
    histograms: dict[str, list[HistogramBin]]
    recent_errors: list[dict[str, Any]]
    error_codes: list[dict[str, Any]]
    # Where the figures come from: "raw" (exact percentiles over the rows) or "rollups"
    # (histograms of whole minutes, hours and days, within 1 %), and the window they cover
    # (rollups: the window widened to whole minutes).
    source: str = "raw"
    source_start: datetime | None = None
    source_end: datetime | None = None
    # The same figures over the window just before (same length), for comparison.
    previous: GroupStats | None = None
