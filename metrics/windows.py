"""Time windows of the latency analytics: `15m`, `1h`, `24h`, `7d` or a custom start/end.

A window is half-open, [start, end): a row stamped exactly at `end` belongs to the next
window, so consecutive windows never count a request twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from accounts.errors import InvalidInput
from accounts.validation import EARLIEST, LATEST, datetime_in_range

PRESET_WINDOWS = ("15m", "1h", "24h", "7d")
DEFAULT_WINDOW = "24h"
CUSTOM_WINDOW = "custom"
MAX_WINDOW = timedelta(days=400)
# Any duration (a window, a retention) must stay below this, or date arithmetic overflows.
MAX_DURATION = timedelta(days=36500)

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# Bucket widths the time series may use: round numbers a reader recognises on an axis.
_BUCKET_STEPS_S = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800)
MAX_BUCKETS = 120


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `12h`, `30d`, `2w` to a timedelta; anything else is InvalidInput."""
    match = _DURATION.match(text or "")
    if match is None:
        raise InvalidInput(
            f"Not a duration: {text!r}. Use a number and a unit s, m, h, d or w (e.g. 15m, 24h, 30d).",
            code="invalid_duration",
        )
    digits = match.group(1).lstrip("0")
    seconds = int(digits or "0") * _UNIT_SECONDS[match.group(2).lower()] if len(digits) <= 12 else None
    if seconds == 0:
        raise InvalidInput(f"A duration must be positive, got {text!r}.", code="invalid_duration")
    if seconds is None or seconds > MAX_DURATION.total_seconds():
        raise InvalidInput(
            f"A duration may be at most {MAX_DURATION.days} days, got {text!r}.", code="invalid_duration"
        )
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class Window:
    """The half-open interval [start, end) and the name the user asked for."""

    start: datetime
    end: datetime
    name: str

    @property
    def span(self) -> timedelta:
        return self.end - self.start

    def bucket_seconds(self) -> int:
        """The smallest round bucket width that draws the window in at most MAX_BUCKETS points."""
        span_s = self.span.total_seconds()
        for step in _BUCKET_STEPS_S:
            if span_s / step <= MAX_BUCKETS:
                return step
        return _BUCKET_STEPS_S[-1]


def resolve_window(
    *, window: str | None, start: datetime | None = None, end: datetime | None = None, now: datetime | None = None
) -> Window:
    """The window named by `window` (a preset or any duration), or the custom [start, end).

    With a custom window, a missing `end` means now and a missing `start` means 24 hours
    before `end`. Naive datetimes are read in the site's time zone.
    """
    now = now or timezone.now()
    name = (window or "").strip().lower()
    if start is not None or end is not None or name == CUSTOM_WINDOW:
        end = _in_range(end, name="end") if end is not None else now
        start = _in_range(start, name="start") if start is not None else end - timedelta(hours=24)
        if start >= end:
            raise InvalidInput("The window's start must be before its end.", code="invalid_window")
        if end - start > MAX_WINDOW:
            raise InvalidInput(f"A window may span at most {MAX_WINDOW.days} days.", code="invalid_window")
        return Window(start=start, end=end, name=CUSTOM_WINDOW)
    span = parse_duration(name or DEFAULT_WINDOW)
    if span > MAX_WINDOW:
        raise InvalidInput(f"A window may span at most {MAX_WINDOW.days} days.", code="invalid_window")
    return Window(start=now - span, end=now, name=name or DEFAULT_WINDOW)


def _in_range(moment: datetime, *, name: str) -> datetime:
    """`moment`, aware, if it lies between EARLIEST and LATEST; InvalidInput otherwise."""
    if not datetime_in_range(moment):
        raise InvalidInput(
            f"The window's {name} must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}.", code="invalid_window"
        )
    if timezone.is_naive(moment):
        return timezone.make_aware(moment, timezone.get_current_timezone())
    return moment
