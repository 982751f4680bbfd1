"""Geometry of the dashboard's inline SVG charts: the template draws, this module measures.

No JavaScript and no chart library: the page renders offline and prints as it looks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from metrics.report import GroupStats, HistogramBin, SeriesPoint

# Colour and dash both tell the percentiles apart, for readers who cannot rely on colour.
PERCENTILE_STYLES = (
    ("p50", "P50", "#2563eb", ""),
    ("p95", "P95", "#f59e0b", "7 4"),
    ("p99", "P99", "#dc2626", "2 3"),
)


@dataclass
class Tick:
    position: float
    label: str


@dataclass
class Line:
    key: str
    label: str
    color: str
    dash: str
    segments: list[str] = field(default_factory=list)  # "x,y x,y ..." runs between empty buckets
    dots: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    title: str
    error_height: float = 0.0

    @property
    def error_y(self) -> float:
        return round(self.y + self.height - self.error_height, 1)


@dataclass
class Marker:
    x: float
    label: str
    color: str
    dash: str
    value_ms: float
    label_y: float = 0.0  # rows so that close percentiles keep readable labels
    label_x: float = 0.0
    anchor: str = "start"

    @property
    def text(self) -> str:
        return f"{self.label} {format_ms(self.value_ms)}"


@dataclass
class Chart:
    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    empty: bool
    lines: list[Line] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)

    @property
    def center_x(self) -> float:
        return (self.left + self.right) / 2

    @property
    def center_y(self) -> float:
        return (self.top + self.bottom) / 2


def format_ms(value: float | None) -> str:
    """850 ms, 1.25 s, 12.4 s; a dash when unknown."""
    if value is None:
        return "—"
    if value < 1000:
        return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"
    return f"{value / 1000:.2f} s" if value < 10000 else f"{value / 1000:.1f} s"


def bucket_label(seconds: int) -> str:
    """15 min, 2 h, 1 day: the width of a time-series bucket in words."""
    if seconds % 86400 == 0:
        days = seconds // 86400
        return "day" if days == 1 else f"{days} days"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def nice_ceiling(value: float) -> tuple[float, float]:
    """An axis top at or above `value` and a round tick step (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0, 0.25
    raw_step = value / 4
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw_step)
    return math.ceil(value / step) * step, step


MAX_TIME_TICKS = 8
# Tick spacings a reader recognises (seconds); a tick interval is the smallest that leaves at
# most MAX_TIME_TICKS labels and is a whole number of series steps.
_TICK_INTERVALS_S = (
    10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800, 1209600, 2592000,
)
# A label about this wide per character at the axis' 11 px: ticks are spaced so that labels never meet.
AXIS_CHAR_PX = 6.6


def _label_format(interval_s: int, first: datetime, last: datetime) -> str:
    """A strftime format precise enough that ticks `interval_s` apart never read the same."""
    same_day = first.date() == last.date()
    if interval_s % 60:
        return "%H:%M:%S" if same_day else "%a %d %H:%M:%S"
    if interval_s < 86400 or interval_s % 86400:
        return "%H:%M" if same_day else "%a %d %H:%M"
    return "%b %d" if first.year == last.year else "%b %d %Y"


def time_ticks(starts: list[datetime], step_s: int, x_of: Any, *, plot_width: float) -> list[Tick]:
    """Readable, unique and non-overlapping labels under a time axis of series points.

    Ticks fall on round times (multiples of the interval since the epoch, in the site's time
    zone for days), labels name just what tells them apart (seconds only for sub-minute
    intervals, the day only when the window spans days), and their spacing leaves room for
    the text.
    """
    if not starts:
        return []
    first, last = timezone.localtime(starts[0]), timezone.localtime(starts[-1])
    slot = plot_width / len(starts)
    fallback = step_s * max(1, math.ceil(len(starts) / MAX_TIME_TICKS))  # when no round interval fits
    interval = fallback
    for candidate in (*_TICK_INTERVALS_S, fallback):
        if candidate % step_s or candidate < step_s:
            continue
        interval = candidate
        every = interval // step_s
        fmt = _label_format(interval, first, last)
        width = len(timezone.localtime(starts[0]).strftime(fmt)) * AXIS_CHAR_PX + 8
        if len(starts) / every <= MAX_TIME_TICKS and every * slot >= width:
            break
    chosen = []
    for index, moment in enumerate(starts):
        offset = timezone.localtime(moment).utcoffset() or timedelta(0)
        if int((moment + offset).timestamp()) % interval == 0:
            chosen.append(index)
    if not chosen:  # a time zone whose offset is not a whole number of intervals: every n-th point
        chosen = list(range(0, len(starts), every))
    labels = [timezone.localtime(starts[index]).strftime(fmt) for index in chosen]
    if len(set(labels)) != len(labels):  # a clock change repeated an hour: the full date and time
        labels = [timezone.localtime(starts[index]).strftime("%Y-%m-%d %H:%M") for index in chosen]
    ticks = [Tick(position=x_of(index), label=label) for index, label in zip(chosen, labels, strict=True)]
    return ticks


def percentile_chart(points: list[SeriesPoint], *, metric: str, width: int = 960, height: int = 280) -> Chart:
    """P50/P95/P99 lines of one latency over the window's buckets."""
    chart = Chart(width=width, height=height, left=64, top=16, right=width - 16, bottom=height - 28, empty=True)
    values = [getattr(p.latency[metric], key) for p in points for key, *_ in PERCENTILE_STYLES]
    known = [v for v in values if v is not None]
    if not points:
        return chart
    chart.empty = not known
    top_value, step = nice_ceiling(max(known, default=0.0))
    plot_w, plot_h = chart.right - chart.left, chart.bottom - chart.top
    slot = plot_w / len(points)

    def x_of(index: int) -> float:
        return round(chart.left + slot * (index + 0.5), 1)

    def y_of(value: float) -> float:
        return round(chart.bottom - plot_h * value / top_value, 1)

    for key, label, color, dash in PERCENTILE_STYLES:
        line = Line(key=key, label=label, color=color, dash=dash)
        run: list[str] = []
        for index, point in enumerate(points):
            value = getattr(point.latency[metric], key)
            if value is None:
                if run:
                    line.segments.append(" ".join(run))
                run = []
                continue
            run.append(f"{x_of(index)},{y_of(value)}")
            line.dots.append((x_of(index), y_of(value)))
        if run:
            line.segments.append(" ".join(run))
        chart.lines.append(line)
    tick = 0.0
    while tick <= top_value + step / 2:
        chart.y_ticks.append(Tick(position=y_of(tick), label=format_ms(tick)))
        tick += step
    step_s = int((points[1].start - points[0].start).total_seconds()) if len(points) > 1 else 60
    chart.x_ticks = time_ticks([p.start for p in points], step_s, x_of, plot_width=plot_w)
    return chart


def volume_chart(points: list[SeriesPoint], *, width: int = 960, height: int = 90) -> Chart:
    """Requests per bucket as bars, the errors among them drawn in red at the foot."""
    chart = Chart(width=width, height=height, left=64, top=8, right=width - 16, bottom=height - 8, empty=True)
    if not points:
        return chart
    most = max(point.count for point in points)
    chart.empty = most == 0
    top_value, _ = nice_ceiling(most)
    plot_h = chart.bottom - chart.top
    slot = (chart.right - chart.left) / len(points)
    for index, point in enumerate(points):
        height_px = plot_h * point.count / top_value
        local = timezone.localtime(point.start).strftime("%Y-%m-%d %H:%M")
        chart.bars.append(
            Bar(
                x=round(chart.left + slot * index + slot * 0.1, 1),
                y=round(chart.bottom - height_px, 1),
                width=round(slot * 0.8, 1),
                height=round(height_px, 1),
                label="",
                title=f"{local}: {point.count} requests, {point.errors} errors",
                error_height=round(plot_h * point.errors / top_value, 1),
            )
        )
    chart.y_ticks = [Tick(position=chart.top, label=f"{top_value:.0f}"), Tick(position=chart.bottom, label="0")]
    return chart


def _bin_label(item: HistogramBin) -> str:
    if item.upper_ms is None:
        return f"≥{format_ms(item.lower_ms)}"
    return f"<{format_ms(item.upper_ms)}"


def histogram_chart(
    bins: list[HistogramBin], *, percentiles: dict[str, float | None], width: int = 560, height: int = 240
) -> Chart:
    """Requests per latency bin, with the P50/P95/P99 marked where they fall."""
    chart = Chart(width=width, height=height, left=48, top=16, right=width - 8, bottom=height - 40, empty=True)
    if not bins:
        return chart
    most = max(item.count for item in bins)
    chart.empty = most == 0
    top_value, _ = nice_ceiling(most)
    plot_h = chart.bottom - chart.top
    slot = (chart.right - chart.left) / len(bins)
    total = sum(item.count for item in bins) or 1
    for index, item in enumerate(bins):
        height_px = plot_h * item.count / top_value
        upper = "∞" if item.upper_ms is None else format_ms(item.upper_ms)
        chart.bars.append(
            Bar(
                x=round(chart.left + slot * index + 1, 1),
                y=round(chart.bottom - height_px, 1),
                width=round(slot - 2, 1),
                height=round(height_px, 1),
                label=_bin_label(item),
                title=(
                    f"{format_ms(item.lower_ms)} to {upper}: {item.count} requests "
                    f"({100 * item.count / total:.1f} %)"
                ),
            )
        )
    for key, label, color, dash in PERCENTILE_STYLES:
        value = percentiles.get(key)
        if value is None:
            continue
        for index, item in enumerate(bins):
            if item.upper_ms is None or value < item.upper_ms:
                fraction = 0.5 if item.upper_ms is None else (value - item.lower_ms) / (item.upper_ms - item.lower_ms)
                x = chart.left + slot * (index + min(max(fraction, 0.0), 1.0))
                chart.markers.append(Marker(x=round(x, 1), label=label, color=color, dash=dash, value_ms=value))
                break
    place_marker_labels(chart.markers, left=chart.left, right=chart.right, top=chart.top)
    chart.y_ticks = [Tick(position=chart.top, label=f"{top_value:.0f}"), Tick(position=chart.bottom, label="0")]
    return chart


MARKER_CHAR_PX = 7.2  # the markers' 11 px bold text, per character (a little generous)
MARKER_ROW_PX = 14


def place_marker_labels(markers: list[Marker], *, left: float, right: float, top: float) -> None:
    """Put each marker's label beside its line where it meets no other label.

    Labels go right of their line (left of it near the right edge), each on the first row
    where it does not touch a label already placed; rows are MARKER_ROW_PX apart.
    """
    rows: list[list[tuple[float, float]]] = []
    for marker in sorted(markers, key=lambda m: m.x):
        width = len(marker.text) * MARKER_CHAR_PX
        if marker.x + 4 + width <= right:
            marker.anchor, start, end = "start", marker.x + 4, marker.x + 4 + width
        else:
            marker.anchor, start, end = "end", max(left, marker.x - 4 - width), marker.x - 4
        marker.label_x = round(marker.x + 4 if marker.anchor == "start" else marker.x - 4, 1)
        free = [i for i, row in enumerate(rows) if all(end + 4 <= a or start >= b + 4 for a, b in row)]
        row_index = free[0] if free else len(rows)
        if not free:
            rows.append([])
        rows[row_index].append((start, end))
        marker.label_y = round(top + 10 + MARKER_ROW_PX * row_index, 1)


UPSTREAM_PARTS = (
    ("upstream_queue_ms", "queue", "#9ca3af"),
    ("upstream_load_ms", "model load", "#8b5cf6"),
    ("upstream_prompt_ms", "prompt", "#14b8a6"),
    ("upstream_generation_ms", "generation", "#3b82f6"),
    ("other_ms", "EVA and network", "#eab308"),
)


@dataclass
class SplitPart:
    label: str
    color: str
    mean_ms: float
    percent: float


@dataclass
class SplitRow:
    label: str
    total_ms: float
    parts: list[SplitPart]


def upstream_split(groups: list[GroupStats]) -> list[SplitRow]:
    """Where each group's time went, on average: one stacked bar per group that reports upstream timings."""
    rows: list[tuple[str, list[tuple[str, str, float]]]] = []
    for group in groups:
        if not any(group.upstream[name].count for name in group.upstream):
            continue
        parts = []
        for name, label, color in UPSTREAM_PARTS:
            mean = group.other_ms if name == "other_ms" else group.upstream[name].mean
            if mean is not None and mean > 0:
                parts.append((label, color, mean))
        rows.append((group.label, parts))
    longest = max((sum(ms for *_, ms in parts) for _, parts in rows), default=0.0) or 1.0
    return [
        SplitRow(
            label=label,
            total_ms=sum(ms for *_, ms in parts),
            parts=[
                SplitPart(label=name, color=color, mean_ms=ms, percent=round(100 * ms / longest, 2))
                for name, color, ms in parts
            ],
        )
        for label, parts in rows
    ]


@dataclass
class Comparison:
    """One figure this period against the period just before."""

    label: str
    now: float | None
    before: float | None
    kind: str  # "ms" or "rate"

    @property
    def change(self) -> float | None:
        """Relative change (0.12: 12 % more); None without both figures."""
        if self.now is None or self.before is None or self.before == 0:
            return None
        return (self.now - self.before) / self.before

    @property
    def worse(self) -> bool:
        change = self.change
        return change is not None and change > 0.1


def comparison(now: GroupStats, before: GroupStats | None) -> list[Comparison]:
    """P95s, error rate and volume of this window against the previous one (same length)."""
    if before is None:
        return []
    rows = [
        Comparison("requests", float(now.count), float(before.count), "count"),
        Comparison("error rate", now.error_rate, before.error_rate, "rate"),
    ]
    for name, label in (
        ("ttft_ms", "P95 time to first token"),
        ("total_ms", "P95 text total"),
        ("time_to_first_audio_ms", "P95 time to first audio"),
        ("speech_total_ms", "P95 speech total"),
    ):
        if now.latency[name].count or before.latency[name].count:
            rows.append(Comparison(label, now.latency[name].p95, before.latency[name].p95, "ms"))
    return rows
