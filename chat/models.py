"""Chat data: conversations and their messages. Everything is owned by one user."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ChatSession(models.Model):
    """A conversation; `session_id` is the client's own name for it, unique per owner."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_sessions")
    session_id = models.CharField(max_length=100)
    title = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [models.UniqueConstraint(fields=["owner", "session_id"], name="chat_session_unique_per_owner")]

    def __str__(self) -> str:
        return self.title or self.session_id


class ChatMessage(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        COMPLETE = "complete"
        PARTIAL = "partial"
        ERROR = "error"

    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    backend = models.CharField(max_length=32, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    request_id = models.CharField(max_length=36, blank=True, default="")
    # A reply's timings as EVA measured them (also in its RequestMetric), shown with the history.
    ttft_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    # How a reply ended, so that a reload shows what the person saw: the end frame's done_reason
    # (stop, length, cancelled: "Stopped") or a failed reply's error code (upstream_error, ...).
    done_reason = models.CharField(max_length=32, blank=True, default="", db_default="")
    # Set when the person regenerated the reply or edited their message (chat.services.
    # exchange_supersede): the exchange is kept, but no longer shown nor sent to the model.
    superseded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["session", "created_at"]),
            # A reply finds its user message (to inherit superseded_at, chat.store's turn_finish).
            models.Index(
                fields=["session", "request_id"], condition=models.Q(role="user"), name="chat_message_asked_19"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"
