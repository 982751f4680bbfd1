"""Reads of the latency analytics: every number the dashboard, the JSON API and the CSV show.

Each function takes `MetricFilters` (a window plus optional backend, model, channel, user and
key) and runs its aggregation in the database; none of them loads the rows themselves.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import (
    Avg,
    Case,
    Count,
    F,
    IntegerField,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce

from accounts.errors import InvalidInput
from accounts.models import ApiKey
from metrics.classes import FAILURE_CLASSES, StatusClass, status_class, status_class_q
from metrics.models import Channel, RequestMetric, Status
from metrics.report import (
    Average,
    Distribution,
    GroupStats,
    HistogramBin,
    LatencyReport,
    MetricFilters,
    SeriesPoint,
)
from metrics.stats import EpochBucket, PercentileCont, analytics_queries
from metrics.windows import Window, resolve_window

# Text (time to first token, text total) and speech (time to first audio, speech total) apart:
# a spoken reply's total_ms is its text's; speech_total_ms runs to its last audio.
LATENCY_FIELDS = ("ttft_ms", "total_ms", "time_to_first_audio_ms", "speech_total_ms")
# In the order the time is spent: waiting in the provider's queue, loading the model,
# reading the prompt, generating the answer.
UPSTREAM_FIELDS = ("upstream_queue_ms", "upstream_load_ms", "upstream_prompt_ms", "upstream_generation_ms")
PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
# Histogram bin edges in milliseconds, also the Prometheus buckets (in seconds).
HISTOGRAM_EDGES_MS = (
    50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500, 10000, 15000, 20000, 30000, 60000,
)
GROUP_FIELDS = {"backend": "backend", "model": "model", "channel": "channel", "user": "user_id", "key": "api_key_id"}
DEFAULT_GROUP_BY = ("backend", "model", "channel")
RECENT_ERRORS_LIMIT = 20

# A reply produced tokens and its generation time is known: the provider's own generation
# duration, else EVA's view of it (total minus time to first token).
_GENERATED = Q(tokens_out__gt=0) & (
    Q(upstream_generation_ms__gt=0) | Q(upstream_generation_ms__isnull=True, ttft_ms__isnull=False)
)


def metric_filters(
    *,
    window: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    backend: str = "",
    model: str = "",
    channel: str = "",
    user_id: int | None = None,
    api_key_id: int | None = None,
) -> MetricFilters:
    """Validate what a page or an API call asked for and resolve its window."""
    channel = (channel or "").strip().lower()
    if channel and channel not in Channel.values:
        raise InvalidInput(
            f"Unknown channel {channel!r}. Choose among {', '.join(Channel.values)}.", code="invalid_channel"
        )
    return MetricFilters(
        window=resolve_window(window=window, start=start, end=end),
        backend=(backend or "").strip(),
        model=(model or "").strip(),
        channel=channel,
        user_id=user_id,
        api_key_id=api_key_id,
    )


def metrics_in(filters: MetricFilters) -> QuerySet[RequestMetric]:
    """The rows of the window [start, end) that pass the filters, unordered."""
    queryset = RequestMetric.objects.filter(created_at__gte=filters.window.start, created_at__lt=filters.window.end)
    if filters.backend:
        queryset = queryset.filter(backend=filters.backend)
    if filters.model:
        queryset = queryset.filter(model=filters.model)
    if filters.channel:
        queryset = queryset.filter(channel=filters.channel)
    if filters.user_id is not None:
        queryset = queryset.filter(user_id=filters.user_id)
    if filters.api_key_id is not None:
        queryset = queryset.filter(api_key_id=filters.api_key_id)
    return queryset.order_by()


def parse_group_by(text: str | None) -> tuple[str, ...]:
    """`backend,model` to ("backend", "model"); empty means the default grouping."""
    names = tuple(dict.fromkeys(part.strip().lower() for part in (text or "").split(",") if part.strip()))
    unknown = [name for name in names if name not in GROUP_FIELDS]
    if unknown:
        raise InvalidInput(
            f"Cannot group by {', '.join(unknown)}. Choose among {', '.join(GROUP_FIELDS)}.", code="invalid_group_by"
        )
    return names or DEFAULT_GROUP_BY


def _distribution_aggregates(fields: tuple[str, ...]) -> dict[str, Any]:
    aggregates: dict[str, Any] = {}
    for name in fields:
        aggregates[f"{name}_count"] = Count(name)
        aggregates[f"{name}_mean"] = Avg(name)
        for label, fraction in PERCENTILES:
            aggregates[f"{name}_{label}"] = PercentileCont(name, fraction=fraction)
    return aggregates


def _class_counts() -> dict[str, Any]:
    return {f"class_{cls.value}": Count("id", filter=status_class_q(cls)) for cls in StatusClass}


def _summary_aggregates() -> dict[str, Any]:
    upstream_sum = sum((Coalesce(F(name), Value(0.0)) for name in UPSTREAM_FIELDS), start=Value(0.0))
    return {
        "count": Count("id"),
        **_class_counts(),
        "fallbacks": Count("id", filter=Q(status=Status.FALLBACK)),
        "tokens_out_sum": Sum("tokens_out", filter=_GENERATED),
        "generation_ms_sum": Sum(Coalesce("upstream_generation_ms", F("total_ms") - F("ttft_ms")), filter=_GENERATED),
        "other_ms": Avg(F("total_ms") - upstream_sum, filter=Q(upstream_generation_ms__isnull=False)),
        **_distribution_aggregates(LATENCY_FIELDS),
        # Means only: they add up to a request's time, and each percentile costs a sort.
        **{f"{name}_count": Count(name) for name in UPSTREAM_FIELDS},
        **{f"{name}_mean": Avg(name) for name in UPSTREAM_FIELDS},
    }


def _distribution(row: dict[str, Any], name: str) -> Distribution:
    return Distribution(
        count=row[f"{name}_count"] or 0,
        mean=row[f"{name}_mean"],
        p50=row[f"{name}_p50"],
        p95=row[f"{name}_p95"],
        p99=row[f"{name}_p99"],
    )


def _group_stats(row: dict[str, Any], *, key: dict[str, Any], label: str) -> GroupStats:
    count = row["count"] or 0
    generation_ms = row["generation_ms_sum"]
    by_class = {cls.value: row[f"class_{cls.value}"] for cls in StatusClass}
    errors = sum(by_class[cls.value] for cls in FAILURE_CLASSES)
    client = by_class[StatusClass.CLIENT_ERROR.value]
    return GroupStats(
        key=key,
        label=label,
        count=count,
        errors=errors,
        fallbacks=row["fallbacks"],
        cancelled=by_class[StatusClass.CANCELLED.value],
        error_rate=errors / count if count else None,
        fallback_rate=row["fallbacks"] / count if count else None,
        tokens_per_second=row["tokens_out_sum"] * 1000.0 / generation_ms if generation_ms else None,
        latency={name: _distribution(row, name) for name in LATENCY_FIELDS},
        upstream={name: Average(count=row[f"{name}_count"] or 0, mean=row[f"{name}_mean"]) for name in UPSTREAM_FIELDS},
        other_ms=row["other_ms"],
        client_errors=client,
        client_error_rate=client / count if count else None,
        by_class=by_class,
    )


def latency_overall(filters: MetricFilters) -> GroupStats:
    """All the window's requests as one group."""
    row = metrics_in(filters).aggregate(**_summary_aggregates())
    return _group_stats(row, key={}, label="all requests")


def latency_groups(filters: MetricFilters, *, group_by: tuple[str, ...] = DEFAULT_GROUP_BY) -> list[GroupStats]:
    """One GroupStats per distinct combination of the `group_by` names, busiest first."""
    columns = [GROUP_FIELDS[name] for name in group_by]
    rows = list(metrics_in(filters).values(*columns).annotate(**_summary_aggregates()).order_by(*columns))
    labels = _owner_labels(rows)
    groups = []
    for row in rows:
        key = {name: row[GROUP_FIELDS[name]] for name in group_by}
        text = [labels.get((name, value), _plain(value)) for name, value in key.items()]
        groups.append(_group_stats(row, key=key, label=" · ".join(text)))
    groups.sort(key=lambda group: -group.count)
    return groups


def _plain(value: Any) -> str:
    return "(none)" if value in ("", None) else str(value)


def _owner_labels(rows: list[dict[str, Any]]) -> dict[tuple[str, Any], str]:
    """Readable names for user and key ids, fetched once for the whole table."""
    labels: dict[tuple[str, Any], str] = {}
    user_ids = {row["user_id"] for row in rows if row.get("user_id") is not None}
    key_ids = {row["api_key_id"] for row in rows if row.get("api_key_id") is not None}
    if user_ids:
        user_model = get_user_model()
        for pk, username in user_model.objects.filter(pk__in=user_ids).values_list("pk", user_model.USERNAME_FIELD):
            labels[("user", pk)] = str(username)
    if key_ids:
        for pk, name, prefix in ApiKey.objects.filter(pk__in=key_ids).values_list("pk", "name", "prefix"):
            labels[("key", pk)] = f"{name} (eva_{prefix})"
    return labels


def latency_series(
    filters: MetricFilters, *, fields: tuple[str, ...] = LATENCY_FIELDS
) -> tuple[int, list[SeriesPoint]]:
    """P50/P95/P99 of each of `fields` per time bucket; every bucket of the window is present."""
    step = filters.window.bucket_seconds()
    failure = status_class_q(FAILURE_CLASSES[0]) | status_class_q(FAILURE_CLASSES[1])
    aggregates: dict[str, Any] = {
        "count": Count("id"),
        "errors": Count("id", filter=failure),
        "client_errors": Count("id", filter=status_class_q(StatusClass.CLIENT_ERROR)),
    }
    aggregates.update(_distribution_aggregates(fields))
    rows: Any = (
        metrics_in(filters)
        .annotate(bucket=EpochBucket("created_at", step_s=step))
        .values("bucket")
        .annotate(**aggregates)
        .order_by("bucket")
    )
    by_bucket = {int(row["bucket"]): row for row in rows}
    first = int(filters.window.start.timestamp() // step)
    last = -int(-filters.window.end.timestamp() // step) - 1  # the bucket holding the instant just before `end`
    empty = Distribution(count=0, mean=None, p50=None, p95=None, p99=None)
    points = []
    for bucket in range(first, last + 1):
        row = by_bucket.get(bucket)
        points.append(
            SeriesPoint(
                start=datetime.fromtimestamp(bucket * step, tz=UTC),
                count=row["count"] if row else 0,
                errors=row["errors"] if row else 0,
                latency={name: _distribution(row, name) if row else empty for name in fields},
                client_errors=row["client_errors"] if row else 0,
            )
        )
    return step, points


def _histogram_bin(name: str) -> Case:
    """The index of the bin `name` falls in (NULL stays NULL): [0, 50) is 0, [60000, inf) the last."""
    return Case(
        When(**{f"{name}__isnull": True}, then=Value(None)),
        *(When(**{f"{name}__lt": edge}, then=Value(index)) for index, edge in enumerate(HISTOGRAM_EDGES_MS)),
        default=Value(len(HISTOGRAM_EDGES_MS)),
        output_field=IntegerField(),
    )


def latency_histograms(
    filters: MetricFilters, *, fields: tuple[str, ...] = LATENCY_FIELDS
) -> dict[str, list[HistogramBin]]:
    """How many requests fell in each latency bin, for each of `fields`, in one pass."""
    bins = {f"{name}_bin": _histogram_bin(name) for name in fields}
    counts = {name: [0] * (len(HISTOGRAM_EDGES_MS) + 1) for name in fields}
    rows: Any = metrics_in(filters).values(**bins).annotate(count=Count("id")).order_by()
    for row in rows:
        for name in fields:
            index = row[f"{name}_bin"]
            if index is not None:
                counts[name][index] += row["count"]
    lowers = (0.0, *HISTOGRAM_EDGES_MS)
    uppers = (*HISTOGRAM_EDGES_MS, None)
    return {
        name: [
            HistogramBin(lower_ms=float(lower), upper_ms=upper, count=count)
            for lower, upper, count in zip(lowers, uppers, counts[name], strict=True)
        ]
        for name in fields
    }


def recent_errors(filters: MetricFilters, *, limit: int = RECENT_ERRORS_LIMIT) -> list[dict[str, Any]]:
    """The window's latest failed requests, newest first."""
    rows: Any = (
        metrics_in(filters)
        .filter(status=Status.ERROR)
        .order_by("-created_at", "-id")
        .values(
            "created_at", "request_id", "channel", "backend", "model", "error_code", "total_ms", "user_id", "api_key_id"
        )[:limit]
    )
    found = list(rows)
    names = _owner_labels(found)
    for row in found:
        row["status_class"] = status_class("error", row["error_code"]).value
        row["username"] = names.get(("user", row["user_id"]))
    return found


def error_codes(filters: MetricFilters) -> list[dict[str, Any]]:
    """How often each error code occurred in the window, most frequent first."""
    rows = (
        metrics_in(filters)
        .filter(status=Status.ERROR)
        .values("error_code")
        .annotate(count=Count("id"))
        .order_by("-count", "error_code")
    )
    return [
        {
            "error_code": row["error_code"] or "(none)",
            "count": row["count"],
            "status_class": status_class("error", row["error_code"]).value,
        }
        for row in rows
    ]


def filter_choices(window: Window, *, source: str = "raw") -> dict[str, list[str]]:
    """The backends and models seen in the window, for the dashboard's filter menus (from the
    day rollups of the window's days when the report reads rollups: a few rows, not millions)."""
    pairs: Any
    if source == "rollups":
        from metrics.models import LatencyRollup
        from metrics.rollups import DAY, bucket_of

        pairs = (
            LatencyRollup.objects.filter(
                level=DAY, bucket__gte=bucket_of(window.start, DAY), bucket__lt=window.end.timestamp()
            )
            .order_by()
            .values_list("backend", "model")
            .distinct()
        )
    else:
        pairs = metrics_in(MetricFilters(window=window)).values_list("backend", "model").distinct()
    backends, models = set(), set()
    for backend, model in pairs:
        if backend:
            backends.add(backend)
        if model:
            models.add(model)
    return {"backend": sorted(backends), "model": sorted(models)}


SOURCES = ("auto", "raw", "rollups")


def choose_source(filters: MetricFilters, *, group_by: tuple[str, ...], source: str = "auto") -> str:
    """`raw` (exact) or `rollups` (within 1 %) for this report; see README, "Two sources".

    Rollups know no user or key: a filter or grouping by them reads raw rows. Otherwise raw rows
    answer windows of up to METRICS_EXACT_WINDOW_HOURS holding at most METRICS_EXACT_MAX_ROWS
    requests whose raw rows are all still there; rollups answer the rest.
    """
    from metrics import rollup_report, rollups

    source = (source or "auto").strip().lower()
    if source not in SOURCES:
        raise InvalidInput(f"Unknown source {source!r}. Choose among {', '.join(SOURCES)}.", code="invalid_source")
    by_owner = filters.user_id is not None or filters.api_key_id is not None or bool({"user", "key"} & set(group_by))
    if by_owner:
        return "raw"
    if source != "auto":
        return source
    if filters.window.span > timedelta(hours=settings.METRICS_EXACT_WINDOW_HOURS):
        return "rollups"
    complete = rollups.raw_complete_since()
    if complete is not None and filters.window.start < complete:
        return "rollups"
    return "raw" if rollup_report.count_in(filters) <= settings.METRICS_EXACT_MAX_ROWS else "rollups"


def previous_filters(filters: MetricFilters) -> MetricFilters:
    """The same filters over the window of the same length just before."""
    window = filters.window
    earlier = Window(start=window.start - window.span, end=window.start, name="previous")
    return replace(filters, window=earlier)


def latency_report(
    filters: MetricFilters,
    *,
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY,
    fields: tuple[str, ...] = LATENCY_FIELDS,
    source: str = "auto",
    compare: bool = True,
) -> LatencyReport:
    """Everything the dashboard shows, for the page and the JSON API alike.

    `fields` narrows the time series and histograms to the latencies a caller draws (the
    page draws one at a time); the overall row and the table always carry all of them.
    `source` is `auto`, `raw` or `rollups` (choose_source); `compare` adds the previous
    period's overall figures.
    """
    chosen = choose_source(filters, group_by=group_by, source=source)
    with analytics_queries():
        if chosen == "rollups":
            report = _rollup_report(filters, group_by=group_by, fields=fields)
        else:
            step, series = latency_series(filters, fields=fields)
            report = LatencyReport(
                filters=filters,
                group_by=group_by,
                overall=latency_overall(filters),
                groups=latency_groups(filters, group_by=group_by),
                bucket_seconds=step,
                series=series,
                histograms=latency_histograms(filters, fields=fields),
                recent_errors=recent_errors(filters),
                error_codes=error_codes(filters),
                source="raw",
                source_start=filters.window.start,
                source_end=filters.window.end,
            )
        if compare:
            earlier = previous_filters(filters)
            if choose_source(earlier, group_by=group_by, source=chosen) == "rollups":
                from metrics import rollup_report

                totals = rollup_report.read(earlier, group_by=(), with_points=False).overall
                previous = totals.group_stats(key={}, label="previous period", percentiles=PERCENTILES)
            else:
                previous = replace(latency_overall(earlier), label="previous period")
            report = replace(report, previous=previous)
    return report


def _rollup_report(filters: MetricFilters, *, group_by: tuple[str, ...], fields: tuple[str, ...]) -> LatencyReport:
    from metrics import rollup_report

    read = rollup_report.read(filters, group_by=group_by)
    groups = []
    for values, totals in read.groups.items():
        key = dict(zip(group_by, values, strict=True))
        label = " · ".join(_plain(value) for value in values)
        groups.append(totals.group_stats(key=key, label=label, percentiles=PERCENTILES))
    groups.sort(key=lambda group: (-group.count, group.label))
    return LatencyReport(
        filters=filters,
        group_by=group_by,
        overall=read.overall.group_stats(key={}, label="all requests", percentiles=PERCENTILES),
        groups=groups,
        bucket_seconds=read.step,
        series=rollup_report.series(read, fields, PERCENTILES),
        histograms=rollup_report.histograms(read.overall, fields, tuple(float(e) for e in HISTOGRAM_EDGES_MS)),
        recent_errors=recent_errors(filters),
        error_codes=rollup_report.error_codes(read.overall),
        source="rollups",
        source_start=datetime.fromtimestamp(read.start, tz=UTC),
        source_end=datetime.fromtimestamp(read.end, tz=UTC),
    )
