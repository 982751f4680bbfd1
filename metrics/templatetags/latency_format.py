"""Template filters that make the dashboard's numbers readable: durations, rates, severity."""

from __future__ import annotations

from typing import Any

from django import template

from metrics.charts import format_ms

register = template.Library()

# Error rate at or above which a cell turns amber, then red.
ERROR_RATE_WARN = 0.01
ERROR_RATE_BAD = 0.05


@register.filter
def ms(value: float | None) -> str:
    """A duration in milliseconds, as `850 ms` or `1.25 s`."""
    return format_ms(value)


@register.filter
def percent(value: float | None) -> str:
    """A rate between 0 and 1 as a percentage; a dash when there were no requests."""
    if value is None:
        return "—"
    return f"{100 * value:.1f} %" if value < 0.1 else f"{100 * value:.0f} %"


@register.filter
def rate_level(value: float | None) -> str:
    """ok, warn or bad: the colour class of an error or fallback rate."""
    if value is None or value < ERROR_RATE_WARN:
        return "ok"
    return "warn" if value < ERROR_RATE_BAD else "bad"


@register.filter
def number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "—"
    return f"{value:,.{int(digits)}f}"


@register.filter
def get(mapping: dict[str, Any], key: str) -> Any:
    """`row.latency|get:metric`: a dictionary value by a key held in a variable."""
    return mapping.get(key) if mapping else None


CLASS_LABELS = {
    "ok": "ok",
    "cancelled": "cancelled",
    "client_error": "client error",
    "upstream_error": "upstream error",
    "server_error": "server error",
}


@register.filter
def class_label(value: str) -> str:
    """A status class in words."""
    return CLASS_LABELS.get(value, value)


@register.filter
def signed_percent(value: float | None) -> str:
    """A relative change as +12 % or -3.4 %; a dash when there is nothing to compare."""
    if value is None:
        return "—"
    return f"{100 * value:+.1f} %" if abs(value) < 0.1 else f"{100 * value:+.0f} %"
