"""One row per request (chat over ws/rest/sse, or TTS): what the admin dashboard reads."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


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
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.backend}/{self.model} {self.status} {self.total_ms:.0f} ms"


class LatencyDashboard(RequestMetric):
    """No table of its own: gives the latency dashboard an entry in the admin index."""

    class Meta:
        proxy = True
        verbose_name = "latency dashboard"
        verbose_name_plural = "latency dashboard"
