"""The dashboard's filter bar: every field optional, the defaults give the last 24 hours."""

from __future__ import annotations

from django import forms

from accounts.validation import MAX_QUERY_INT
from metrics.models import Channel
from metrics.selectors import DEFAULT_GROUP_BY, LATENCY_FIELDS

WINDOW_CHOICES = [
    ("15m", "15 minutes"),
    ("1h", "1 hour"),
    ("24h", "24 hours"),
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("90d", "90 days"),
    ("custom", "custom"),
]
SOURCE_CHOICES = [("auto", "automatic"), ("raw", "raw rows (exact)"), ("rollups", "rollups (within 1 %)")]
GROUP_BY_CHOICES = [
    (",".join(DEFAULT_GROUP_BY), "backend · model · channel"),
    ("backend", "backend"),
    ("model", "model"),
    ("channel", "channel"),
    ("user", "user"),
    ("key", "API key"),
]
METRIC_LABELS = {
    "total_ms": "text total",
    "ttft_ms": "time to first token",
    "time_to_first_audio_ms": "time to first audio",
    "speech_total_ms": "speech total",
}
METRIC_CHOICES = [(name, METRIC_LABELS[name]) for name in LATENCY_FIELDS]


class LatencyFilterForm(forms.Form):
    window = forms.ChoiceField(choices=WINDOW_CHOICES, required=False)
    start = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    end = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    backend = forms.CharField(required=False, max_length=32)
    model = forms.CharField(required=False, max_length=100)
    channel = forms.ChoiceField(choices=[("", "all channels"), *Channel.choices], required=False)
    user = forms.IntegerField(required=False, min_value=1, max_value=MAX_QUERY_INT)
    key = forms.IntegerField(required=False, min_value=1, max_value=MAX_QUERY_INT)
    group_by = forms.ChoiceField(choices=GROUP_BY_CHOICES, required=False)
    metric = forms.ChoiceField(choices=METRIC_CHOICES, required=False)
    source = forms.ChoiceField(choices=SOURCE_CHOICES, required=False)

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        # A preset window ignores stale custom dates left in the query string.
        if data.get("window") not in ("", None, "custom"):
            data["start"] = data["end"] = None
        data["window"] = data.get("window") or ("custom" if data.get("start") or data.get("end") else "24h")
        data["group_by"] = data.get("group_by") or GROUP_BY_CHOICES[0][0]
        data["metric"] = data.get("metric") or "total_ms"
        data["source"] = data.get("source") or "auto"
        return data
