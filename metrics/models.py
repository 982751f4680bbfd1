"""One row per request (chat over ws/rest/sse, or TTS): what the admin dashboard reads."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

# The one permission that lets a user read every user's latency metrics: the dashboard, the
# JSON API and CSV export (with a session, or a metrics key of such a user) and the admin list.
VIEW_LATENCY = "metrics.view_latency"


class Channel(models.TextChoices):
    WS = "ws"
    REST = "rest"
    SSE = "sse"
    TTS = "tts"
    OPENAI = "openai"  # the OpenAI-compatible API under /v1/ (openai_api), chat and speech


class Status(models.TextChoices):
    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"
    FALLBACK = "fallback"


class RequestMetric(models.Model):
    """Latency of one request. Times are milliseconds measured by EVA unless named upstream_*."""

    created_at = models.DateTimeField(default=timezone.now)
    request_id = models.CharField(max_length=36, blank=True, default="")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL)
    session_id = models.CharField(max_length=100, blank=True, default="")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    backend = models.CharField(max_length=32, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices)
    error_code = models.CharField(max_length=48, blank=True, default="")
    ttft_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField()
    time_to_first_audio_ms = models.FloatField(null=True, blank=True)
    # A spoken reply: from the request to its last audio (its text ends at total_ms).
    speech_total_ms = models.FloatField(null=True, blank=True)
    tokens_in = models.IntegerField(null=True, blank=True)
    tokens_out = models.IntegerField(null=True, blank=True)
    # Ollama: load_duration / prompt_eval_duration / eval_duration; Groq: prompt_time /
    # completion_time / queue_time. Converted to milliseconds.
    upstream_load_ms = models.FloatField(null=True, blank=True)
    upstream_prompt_ms = models.FloatField(null=True, blank=True)
    upstream_generation_ms = models.FloatField(null=True, blank=True)
    upstream_queue_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["created_at"], name="metric_created_idx"),
            models.Index(fields=["channel", "created_at"], name="metric_channel_created_idx"),
            models.Index(fields=["backend", "model", "created_at"], name="metric_backend_created_idx"),
            # Errors are a few percent of the rows: the dashboard's error list and counts read
            # this small index instead of every row of the window.
            models.Index(fields=["created_at"], condition=Q(status="error"), name="metric_error_created_idx"),
            # A metrics key of a user without the permission reads only that user's rows.
            models.Index(fields=["user", "created_at"], name="metric_user_created_idx"),
        ]
        # One permission for every way to read every user's metrics: the dashboard, the JSON
        # API, the CSV export and the admin's list (accounts' staff flag alone is not enough).
        permissions = [("view_latency", "Can view the latency analytics of every user")]

    def __str__(self) -> str:
        return f"{self.channel} {self.backend}/{self.model} {self.status} {self.total_ms:.0f} ms"


class LatencyDashboard(RequestMetric):
    """No table of its own: gives the latency dashboard an entry in the admin index."""

    class Meta:
        proxy = True
        verbose_name = "latency dashboard"
        verbose_name_plural = "latency dashboard"


# Latency series kept in the rollups: text (time to first token, text total) and speech.
ROLLUP_SERIES = ("ttft_ms", "total_ms", "time_to_first_audio_ms", "speech_total_ms")
ROLLUP_UPSTREAM = ("upstream_queue_ms", "upstream_load_ms", "upstream_prompt_ms", "upstream_generation_ms")


class LatencyRollup(models.Model):
    """The requests of one minute, hour or day with one backend, model, channel and status class.

    Counts, sums and log-scaled histograms (metrics.sketch) that add up: a window's figures are
    the sum of the rows that tile it. Written with the RequestMetric rows, in their transaction
    (metrics.rollups); rebuilt from them with `manage.py metrics_rollup --rebuild`.
    """

    level = models.IntegerField()  # 60, 3600 or 86400 seconds
    bucket = models.BigIntegerField()  # the start, in seconds since 1970 (UTC), a multiple of `level`
    backend = models.CharField(max_length=32, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    channel = models.CharField(max_length=8)
    status_class = models.CharField(max_length=16)
    count = models.BigIntegerField(default=0)
    fallbacks = models.BigIntegerField(default=0)
    tokens_out_sum = models.BigIntegerField(default=0)
    generation_ms_sum = models.FloatField(default=0.0)
    other_ms_sum = models.FloatField(default=0.0)
    other_ms_count = models.BigIntegerField(default=0)
    upstream_queue_ms_sum = models.FloatField(default=0.0)
    upstream_queue_ms_count = models.BigIntegerField(default=0)
    upstream_load_ms_sum = models.FloatField(default=0.0)
    upstream_load_ms_count = models.BigIntegerField(default=0)
    upstream_prompt_ms_sum = models.FloatField(default=0.0)
    upstream_prompt_ms_count = models.BigIntegerField(default=0)
    upstream_generation_ms_sum = models.FloatField(default=0.0)
    upstream_generation_ms_count = models.BigIntegerField(default=0)
    ttft_ms_sum = models.FloatField(default=0.0)
    ttft_ms_count = models.BigIntegerField(default=0)
    ttft_ms_hist = models.BinaryField(default=b"")
    total_ms_sum = models.FloatField(default=0.0)
    total_ms_count = models.BigIntegerField(default=0)
    total_ms_hist = models.BinaryField(default=b"")
    time_to_first_audio_ms_sum = models.FloatField(default=0.0)
    time_to_first_audio_ms_count = models.BigIntegerField(default=0)
    time_to_first_audio_ms_hist = models.BinaryField(default=b"")
    speech_total_ms_sum = models.FloatField(default=0.0)
    speech_total_ms_count = models.BigIntegerField(default=0)
    speech_total_ms_hist = models.BinaryField(default=b"")
    error_codes = models.TextField(default="{}")  # JSON: error code -> count

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["level", "bucket", "backend", "model", "channel", "status_class"], name="rollup_key_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.level}s @{self.bucket} {self.backend}/{self.model} {self.channel} {self.status_class}"


class RollupState(models.Model):
    """One row: since when the raw rows are complete (metrics_prune moves it forward).

    A rebuild never starts before it: the rollups of pruned time are all that is left of it.
    """

    raw_complete_since = models.DateTimeField(null=True, blank=True)
