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

import numpy as np
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


_CLASSES = [cls.value for cls in StatusClass]


def read(filters: MetricFilters, *, group_by: tuple[str, ...], with_points: bool = True) -> RollupRead:
    """Sum the rollup rows of the window per (point, group) with numpy, then per point, group and overall.

    Each row's counts and histograms are added into a dense (point, group) matrix in a few
    vectorized operations (np.add.at over all rows at once), not row by row: a 90-day window's
    few thousand rows cost about as much to sum as to fetch.
    """
    cutoff = rollups.minute_cutoff()
    first, end = rollups.aligned_window(filters.window.start, filters.window.end)
    step = rollups.series_step(end - first, filters.window.bucket_seconds(), hours_only=first < cutoff)
    if not with_points:
        step = rollups.DAY * 100_000  # one point: the whole window, tiled by its largest rows
    largest = max(level for level in rollups.LEVELS if step % level == 0)
    point_starts = list(range(first - first % step, end, step))
    tiled: list[tuple[int, int]] = []
    for point in point_starts:
        tiled.extend(rollups.tiles(max(point, first), min(point + step, end), largest=largest))
    columns = ["bucket", *group_by, "status_class", *rollups.VALUE_COLUMNS]
    rows = list(_filtered(filters).filter(_ranges_q(rollups.ranges(tiled))).values_list(*columns))
    width = len(group_by)
    base = point_starts[0] if point_starts else first
    group_index: dict[tuple[Any, ...], int] = {}
    point_of = np.fromiter(((row[0] - base) // step for row in rows), dtype=np.int64, count=len(rows))
    group_of = np.fromiter(
        (group_index.setdefault(tuple(row[1 : 1 + width]), len(group_index)) for row in rows),
        dtype=np.int64,
        count=len(rows),
    )
    class_of = np.fromiter((_CLASSES.index(row[1 + width]) for row in rows), dtype=np.int64, count=len(rows))
    npoints, ngroups = len(point_starts), max(len(group_index), 1)
    cell_of = point_of * ngroups + group_of
    ncells = npoints * ngroups
    offset = 2 + width
    sums = np.zeros((ncells, len(rollups.SUM_COLUMNS)))
    if rows:
        matrix = np.array([row[offset : offset + len(rollups.SUM_COLUMNS)] for row in rows], dtype=float)
        np.add.at(sums, cell_of, matrix)
    by_class = np.zeros((ncells, len(_CLASSES)))
    np.add.at(by_class, (cell_of, class_of), sums_count(rows, offset))
    hist_offset = offset + len(rollups.SUM_COLUMNS)
    hists = {
        name: _histograms([row[hist_offset + index] for row in rows], cell_of, ncells)
        for index, name in enumerate(ROLLUP_SERIES)
    }
    # Error codes per point, per group and overall; each distinct JSON text parsed once.
    parsed: dict[str, dict[str, int]] = {}
    point_codes: list[dict[str, int]] = [{} for _ in range(npoints)]
    group_codes: list[dict[str, int]] = [{} for _ in range(ngroups)]
    all_codes: dict[str, int] = {}
    for row, point, group in zip(rows, point_of.tolist(), group_of.tolist(), strict=True):
        text = row[-1]
        if not text or text == "{}":
            continue
        found = parsed.get(text)
        if found is None:
            found = parsed[text] = json.loads(text)
        for target in (point_codes[point], group_codes[group], all_codes):
            for code, count in found.items():
                target[code] = target.get(code, 0) + count

    shape = (npoints, ngroups)
    sums3 = sums.reshape(*shape, -1)
    class3 = by_class.reshape(*shape, -1)
    hist3 = {
        name: (counts.reshape(*shape, sketch.SIZE), zeros.reshape(shape)) for name, (counts, zeros) in hists.items()
    }

    def totals(axis: int | None, index: int) -> Totals:
        """The totals of one point (axis 0), one group (axis 1) or everything (None)."""

        def pick(array: Any) -> Any:
            if axis is None:
                return array.reshape(-1, *array.shape[2:]).sum(axis=0)
            return array[index].sum(axis=0) if axis == 0 else array[:, index].sum(axis=0)

        return Totals(
            sums=dict(zip(rollups.SUM_COLUMNS, pick(sums3).tolist(), strict=True)),
            hists={name: sketch.Histogram.of(pick(c), int(pick(z))) for name, (c, z) in hist3.items()},
            by_class={cls: round(n) for cls, n in zip(_CLASSES, pick(class3).tolist(), strict=True)},
            error_codes=dict(all_codes if axis is None else (point_codes if axis == 0 else group_codes)[index]),
        )

    groups = {key: totals(1, index) for key, index in group_index.items()}
    points = [(start, totals(0, index)) for index, start in enumerate(point_starts)]
    return RollupRead(overall=totals(None, 0), groups=groups, points=points, step=step, start=first, end=end)


def sums_count(rows: list[tuple[Any, ...]], offset: int) -> Any:
    """Each row's request count (its first sum column)."""
    return np.fromiter((row[offset] for row in rows), dtype=float, count=len(rows))


def _histograms(blobs: list[Any], cell_of: Any, ncells: int) -> tuple[Any, Any]:
    """Dense (cells x SIZE) counts and per-cell zeros of one series' encoded histograms.

    The encodings are joined and read as one array of 32-bit words (a header of two words,
    then the counts): no Python work per row beyond its length.
    """
    counts = np.zeros(ncells * sketch.SIZE, dtype=np.int64)
    zeros = np.zeros(ncells, dtype=np.int64)
    used = [index for index, blob in enumerate(blobs) if blob]
    if not used:
        return counts.reshape(ncells, sketch.SIZE), zeros
    kept = [blobs[index] for index in used]
    cells = cell_of[np.array(used, dtype=np.int64)]
    words = np.frombuffer(b"".join(kept), dtype="<u4")
    lengths = np.fromiter((len(blob) // 4 for blob in kept), dtype=np.int64, count=len(kept))
    firsts = np.cumsum(lengths) - lengths
    lows = words[firsts].view("<i4").astype(np.int64)
    np.add.at(zeros, cells, words[firsts + 1].astype(np.int64))
    body = np.ones(words.size, dtype=bool)
    body[firsts] = False
    body[firsts + 1] = False
    values = words[body].astype(np.int64)
    sizes = lengths - 2
    positions = np.arange(values.size, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    positions += np.repeat(cells * sketch.SIZE + lows - sketch.KEY_MIN, sizes)
    counts += np.bincount(positions, weights=values, minlength=counts.size).astype(np.int64)
    return counts.reshape(ncells, sketch.SIZE), zeros


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
