"""A conversation as a file: Markdown to read, JSON to keep (GET /api/v1/sessions/{id}/export)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django.utils import timezone

from chat.models import ChatMessage, ChatSession

# How a reply that did not simply complete is labelled, as the chat page labels it.
ENDINGS = {"cancelled": "Stopped", "length": "Cut at the length limit"}


def message_label(message: ChatMessage) -> str:
    """Stopped / Incomplete / Failed / Cut at the length limit, or '' for a complete reply."""
    if message.role != ChatMessage.Role.ASSISTANT:
        return ""
    if message.done_reason in ENDINGS:
        return ENDINGS[message.done_reason]
    if message.status == ChatMessage.Status.PARTIAL:
        return "Incomplete"
    if message.status == ChatMessage.Status.ERROR:
        return "Failed"
    return ""


def message_dict(message: ChatMessage) -> dict[str, Any]:
    return {
        "id": message.pk,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "done_reason": message.done_reason,
        "backend": message.backend,
        "model": message.model,
        "request_id": message.request_id,
        "ttft_ms": message.ttft_ms,
        "total_ms": message.total_ms,
        "created_at": message.created_at,
        "superseded_at": message.superseded_at,
    }


def export_dict(session: ChatSession, messages: list[ChatMessage]) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "title": session.title,
        "created_at": session.created_at,
        "updated_at": session.updated_at,
        "exported_at": timezone.now(),
        "messages": [message_dict(message) for message in messages],
    }


def _when(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z")


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{round(value)} ms"


def export_markdown(session: ChatSession, messages: list[ChatMessage]) -> str:
    """The conversation as Markdown: a heading per message; the text as it was written (a
    reply's own Markdown stays Markdown), superseded messages marked as such."""
    lines = [f"# {session.title or 'New conversation'}", ""]
    lines += [f"_Exported from EVA on {_when(timezone.now())}; started {_when(session.created_at)}._", ""]
    for message in messages:
        who = "You" if message.role == ChatMessage.Role.USER else "EVA"
        details = [_when(message.created_at)]
        if message.role == ChatMessage.Role.ASSISTANT:
            details += [part for part in (" · ".join(filter(None, (message.backend, message.model))),) if part]
            if message.ttft_ms is not None:
                details.append(f"first token {_ms(message.ttft_ms)}")
            if message.total_ms is not None:
                details.append(f"total {_ms(message.total_ms)}")
        label = message_label(message)
        if label:
            details.append(label)
        if message.superseded_at is not None:
            details.append("superseded (regenerated or edited)")
        lines += [f"## {who} ({', '.join(details)})", "", message.content or "_(nothing)_", ""]
    return "\n".join(lines)


def export_filename(session: ChatSession, extension: str) -> str:
    """A safe file name from the title (or the session's name): letters, digits, - and _."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", session.title or session.session_id).strip("-")[:60]
    return f"{stem or 'conversation'}.{extension}"
