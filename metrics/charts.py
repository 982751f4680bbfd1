"""Geometry of the dashboard's inline SVG charts: the template draws, this module measures.

No JavaScript and no chart library: the page renders offline and prints as it looks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

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
    label_y: float = 0.0  # staggered so that close percentiles keep readable labels


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


def _time_label(moment: datetime, span: timedelta) -> str:
    local = timezone.localtime(moment)
    if span <= timedelta(hours=24):
        return local.strftime("%H:%M")
    return local.strftime("%a %d %H:%M") if span <= timedelta(days=8) else local.strftime("%b %d")


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
    span = points[-1].start - points[0].start
    every = max(1, math.ceil(len(points) / 8))
    chart.x_ticks = [
        Tick(position=x_of(i), label=_time_label(p.start, span)) for i, p in enumerate(points) if i % every == 0
    ]
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
                label_y = chart.top + 10 + 13 * len(chart.markers)
                chart.markers.append(
                    Marker(x=round(x, 1), label=label, color=color, dash=dash, value_ms=value, label_y=label_y)
                )
                break
    chart.y_ticks = [Tick(position=chart.top, label=f"{top_value:.0f}"), Tick(position=chart.bottom, label="0")]
    return chart


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
