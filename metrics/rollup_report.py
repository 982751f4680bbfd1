"""The latency report read from rollups: the same shape as from raw rows, at a cost that does not grow with them.

One query fetches the rollup rows that tile the window (metrics.rollups.tiles): whole days
inside, hours and minutes at the edges, each series point tiled on its own so that a point
never mixes two. Rows are summed per (point, group) once; the overall figures, each group's and
each point's are sums of those. Percentiles come from the summed histograms (within 1 % of the
exact ones: metrics.sketch); counts, rates and means are exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db.models import Q, Sum

from metrics import rollups, sketch
from metrics.classes import FAILURE_CLASSES, StatusClass, status_class
from metrics.models import ROLLUP_SERIES, ROLLUP_UPSTREAM, LatencyRollup
from metrics.report import Average, Distribution, GroupStats, HistogramBin, MetricFilters, SeriesPoint

ROLLUP_GROUP_FIELDS = ("backend", "model", "channel")
_FAILURES = tuple(cls.value for cls in FAILURE_CLASSES)


@dataclass
class Totals:
    """Sums of rollup rows: what GroupStats and a series point are computed from."""

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(rollups.SUM_COLUMNS, 0))
    hists: dict[str, sketch.Histogram] = field(default_factory=lambda: {n: sketch.Histogram() for n in ROLLUP_SERIES})
    by_class: dict[str, int] = field(default_factory=dict)
    error_codes: dict[str, int] = field(default_factory=dict)

    def add(self, other: Totals) -> None:
        for name, value in other.sums.items():
            self.sums[name] += value
        for name, hist in other.hists.items():
            self.hists[name].add(hist)
        for cls, count in other.by_class.items():
            self.by_class[cls] = self.by_class.get(cls, 0) + count
        for code, count in other.error_codes.items():
            self.error_codes[code] = self.error_codes.get(code, 0) + count

    def add_row(self, cls: str, values: tuple[Any, ...]) -> None:
        sums = self.sums
        for index, name in enumerate(rollups.SUM_COLUMNS):
            sums[name] += values[index]
        offset = len(rollups.SUM_COLUMNS)
        for index, name in enumerate(ROLLUP_SERIES):
            self.hists[name].add_encoded(values[offset + index])
        self.by_class[cls] = self.by_class.get(cls, 0) + values[0]
        codes = values[-1]
        if codes and codes != "{}":
            for code, count in json.loads(codes).items():
                self.error_codes[code] = self.error_codes.get(code, 0) + count

    def distribution(self, name: str, percentiles: Iterable[tuple[str, float]]) -> Distribution:
        count = int(self.sums[f"{name}_count"])
        labels = list(percentiles)
        values = self.hists[name].percentiles([fraction for _, fraction in labels])
        by_label = dict(zip((label for label, _ in labels), values, strict=True))
        return Distribution(
            count=count,
            mean=self.sums[f"{name}_sum"] / count if count else None,
            p50=by_label.get("p50"),
            p95=by_label.get("p95"),
            p99=by_label.get("p99"),
        )

    def group_stats(self, *, key: dict[str, Any], label: str, percentiles: Any) -> GroupStats:
        sums = self.sums
        count = int(sums["count"])
        errors = sum(self.by_class.get(cls, 0) for cls in _FAILURES)
        client = self.by_class.get(StatusClass.CLIENT_ERROR.value, 0)
        fallbacks = int(sums["fallbacks"])
        generation = sums["generation_ms_sum"]
        return GroupStats(
            key=key,
            label=label,
            count=count,
            errors=errors,
            fallbacks=fallbacks,
            cancelled=self.by_class.get(StatusClass.CANCELLED.value, 0),
            error_rate=errors / count if count else None,
            fallback_rate=fallbacks / count if count else None,
            tokens_per_second=sums["tokens_out_sum"] * 1000.0 / generation if generation else None,
            latency={name: self.distribution(name, percentiles) for name in ROLLUP_SERIES},
            upstream={
                name: Average(
                    count=int(sums[f"{name}_count"]),
                    mean=sums[f"{name}_sum"] / sums[f"{name}_count"] if sums[f"{name}_count"] else None,
                )
                for name in ROLLUP_UPSTREAM
            },
            other_ms=sums["other_ms_sum"] / sums["other_ms_count"] if sums["other_ms_count"] else None,
            client_errors=client,
            client_error_rate=client / count if count else None,
            by_class={cls.value: self.by_class.get(cls.value, 0) for cls in StatusClass},
        )


def _filtered(filters: MetricFilters) -> Any:
    queryset = LatencyRollup.objects.order_by()
    if filters.backend:
        queryset = queryset.filter(backend=filters.backend)
    if filters.model:
        queryset = queryset.filter(model=filters.model)
    if filters.channel:
        queryset = queryset.filter(channel=filters.channel)
    return queryset


def _ranges_q(spans: list[tuple[int, int, int]]) -> Q:
    condition = Q(pk__in=[])
    for level, first, end in spans:
        condition |= Q(level=level, bucket__gte=first, bucket__lt=end)
    return condition


def count_in(filters: MetricFilters) -> int:
    """How many requests the window holds, read from hour rollups (cheap): to choose a source."""
    first, end = rollups.aligned_window(filters.window.start, filters.window.end)
    spans = rollups.ranges(rollups.tiles(first, end, largest=rollups.HOUR))
    total = _filtered(filters).filter(_ranges_q(spans)).aggregate(total=Sum("count"))["total"]
    return int(total or 0)


@dataclass
class RollupRead:
    overall: Totals
    groups: dict[tuple[Any, ...], Totals]
    points: list[tuple[int, Totals]]
    step: int
    start: int
    end: int


def read(filters: MetricFilters, *, group_by: tuple[str, ...], with_points: bool = True) -> RollupRead:
    """Sum the rollup rows of the window per (point, group), then per point, group and overall."""
    first, end = rollups.aligned_window(filters.window.start, filters.window.end)
    step = rollups.series_step(
        end - first, filters.window.bucket_seconds(), hours_only=first < rollups.minute_cutoff()
    )
    if not with_points:
        step = rollups.DAY * 100_000  # one point: the whole window, tiled by its largest rows
    largest = max(level for level in rollups.LEVELS if step % level == 0)
    point_starts = list(range(first - first % step, end, step))
    tiled: list[tuple[int, int]] = []
    for point in point_starts:
        tiled.extend(rollups.tiles(max(point, first), min(point + step, end), largest=largest))
    columns = ["bucket", *group_by, "status_class", *rollups.VALUE_COLUMNS]
    rows = _filtered(filters).filter(_ranges_q(rollups.ranges(tiled))).values_list(*columns)
    cells: dict[tuple[int, tuple[Any, ...]], Totals] = {}
    width = len(group_by)
    base = point_starts[0] if point_starts else first
    for row in rows.iterator(chunk_size=2000):
        index = (row[0] - base) // step
        group = tuple(row[1 : 1 + width])
        cell = cells.get((index, group))
        if cell is None:
            cell = cells[(index, group)] = Totals()
        cell.add_row(row[1 + width], row[2 + width :])
    overall = Totals()
    groups: dict[tuple[Any, ...], Totals] = {}
    points = {index: Totals() for index in range(len(point_starts))}
    for (index, group), cell in cells.items():
        overall.add(cell)
        groups.setdefault(group, Totals()).add(cell)
        points[index].add(cell)
    return RollupRead(
        overall=overall,
        groups=groups,
        points=[(point_starts[index], points[index]) for index in sorted(points)],
        step=step,
        start=first,
        end=end,
    )


def series(read_result: RollupRead, fields: tuple[str, ...], percentiles: Any) -> list[SeriesPoint]:
    answer = []
    for start, totals in read_result.points:
        failures = sum(totals.by_class.get(cls, 0) for cls in _FAILURES)
        answer.append(
            SeriesPoint(
                start=datetime.fromtimestamp(start, tz=UTC),
                count=int(totals.sums["count"]),
                errors=failures,
                latency={name: totals.distribution(name, percentiles) for name in fields},
                client_errors=totals.by_class.get(StatusClass.CLIENT_ERROR.value, 0),
            )
        )
    return answer


def histograms(totals: Totals, fields: tuple[str, ...], edges: tuple[float, ...]) -> dict[str, list[HistogramBin]]:
    lowers = (0.0, *edges)
    uppers: tuple[float | None, ...] = (*edges, None)
    return {
        name: [
            HistogramBin(lower_ms=float(lower), upper_ms=upper, count=count)
            for lower, upper, count in zip(lowers, uppers, totals.hists[name].binned(edges), strict=True)
        ]
        for name in fields
    }


def error_codes(totals: Totals) -> list[dict[str, Any]]:
    rows = sorted(totals.error_codes.items(), key=lambda item: (-item[1], item[0]))
    return [
        {"error_code": code or "(none)", "count": count, "status_class": status_class("error", code).value}
        for code, count in rows
    ]
