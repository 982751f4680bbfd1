"""Writes of chat data: conversations and their messages. Keyword-only, one transaction each."""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from accounts.errors import InvalidInput, NotFound
from accounts.validation import text_validate
from chat.models import ChatMessage, ChatSession
from chat.selectors import session_of

SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,100}")  # whole string only: used with fullmatch
TITLE_MAX = 200


def session_id_validate(session_id: object) -> str:
    """A client's session name: 1-100 characters of letters, digits and _ . : -"""
    if not isinstance(session_id, str) or not SESSION_ID_PATTERN.fullmatch(session_id):
        raise InvalidInput(
            "session_id must be 1 to 100 characters of letters, digits, '_', '.', ':' or '-'.",
            code="invalid_session_id",
        )
    return session_id


def title_from(content: str) -> str:
    """A new conversation's title: its first message on one line, at most 60 characters."""
    line = " ".join(content.split())
    return line if len(line) <= 60 else line[:59] + "…"


def _session_get_or_create(*, owner_id: int, session_id: str, title: str, at: datetime) -> ChatSession:
    session = ChatSession.objects.filter(owner_id=owner_id, session_id=session_id).only("pk").first()
    if session is not None:
        return session
    try:
        with transaction.atomic():
            return ChatSession.objects.create(
                owner_id=owner_id, session_id=session_id, title=title, created_at=at, updated_at=at
            )
    except IntegrityError:  # two first messages raced; the other one created it
        return ChatSession.objects.get(owner_id=owner_id, session_id=session_id)


def llm_messages(*, history: list[dict[str, str]], content: str) -> list[dict[str, str]]:
    """What goes to the model: the system prompt, the history (the last LLM_HISTORY_TURNS turns), the message."""
    system = [{"role": "system", "content": settings.LLM_SYSTEM_PROMPT}] if settings.LLM_SYSTEM_PROMPT else []
    return [*system, *_answered(history), {"role": "user", "content": content}]


def _answered(history: list[dict[str, str]]) -> list[dict[str, str]]:
    """The history without the user messages that got no reply (stopped before its first token
    by a cancel, a restart, an error): the model sees user and assistant turns alternate."""
    kept: list[dict[str, str]] = []
    for message in history:
        if message["role"] == "user" and kept and kept[-1]["role"] == "user":
            kept[-1] = message
        else:
            kept.append(message)
    if kept and kept[-1]["role"] == "user":
        kept.pop()
    return kept


def chat_turn_begin(
    *, owner_id: int, session_id: str, content: str, request_id: str, at: datetime | None = None
) -> int:
    """Store the user's message (creating the conversation on first use); return the session's pk.

    Two statements in the common case (find the session, insert the message): the session's
    `updated_at` is moved when the reply is stored.
    """
    at = at or timezone.now()
    session = _session_get_or_create(owner_id=owner_id, session_id=session_id, title=title_from(content), at=at)
    ChatMessage.objects.create(
        session_id=session.pk, role=ChatMessage.Role.USER, content=content, request_id=request_id, created_at=at
    )
    return int(session.pk)


def chat_turn_finish(
    *,
    session_pk: int,
    content: str,
    status: str,
    backend: str,
    model: str,
    request_id: str,
    ttft_ms: float | None = None,
    total_ms: float | None = None,
    title: str = "",
    done_reason: str = "",
) -> ChatMessage:
    """Store the assistant's reply (complete, partial or error); a conversation still untitled
    (created through the API without one) takes `title`, made from its first exchange's message.
    The reply takes its user message's superseded_at (chat.store's SQL does the same)."""
    now = timezone.now()
    asked = (
        ChatMessage.objects.filter(session_id=session_pk, request_id=request_id, role=ChatMessage.Role.USER)
        .order_by("-created_at")
        .values_list("superseded_at", flat=True)
        .first()
        if request_id
        else None
    )
    message = ChatMessage.objects.create(
        session_id=session_pk,
        role=ChatMessage.Role.ASSISTANT,
        content=content,
        status=status,
        backend=backend,
        model=model,
        request_id=request_id,
        ttft_ms=ttft_ms,
        total_ms=total_ms,
        done_reason=done_reason,
        superseded_at=asked,
        created_at=now,
    )
    ChatSession.objects.filter(pk=session_pk).update(
        updated_at=now, title=Case(When(title="", then=Value(title)), default=F("title"))
    )
    return message


def session_create(*, owner_id: int, session_id: str | None = None, title: str = "") -> ChatSession:
    """Create a conversation; a random session_id when none is given. An existing name is InvalidInput."""
    session_id = session_id_validate(session_id) if session_id is not None else f"s-{secrets.token_hex(6)}"
    title = text_validate((title or "").strip()[:TITLE_MAX], field="The title")
    try:
        with transaction.atomic():
            return ChatSession.objects.create(owner_id=owner_id, session_id=session_id, title=title)
    except IntegrityError:
        raise InvalidInput(
            f"A conversation named {session_id!r} already exists.", code="session_exists", status=409
        ) from None


def session_rename(*, owner_id: int, session_id: str, title: str) -> ChatSession:
    title = (title or "").strip()
    if not title or len(title) > TITLE_MAX:
        raise InvalidInput(f"A title has 1 to {TITLE_MAX} characters.", code="invalid_title")
    text_validate(title, field="The title")
    session = session_of(owner_id=owner_id, session_id=session_id_validate(session_id))
    session.title = title
    session.save(update_fields=["title"])
    return session


def session_delete(*, owner_id: int, session_id: str) -> None:
    session_of(owner_id=owner_id, session_id=session_id_validate(session_id)).delete()


def session_clear(*, owner_id: int, session_id: str) -> int:
    """Forget a conversation's messages; clearing a conversation that does not exist is a no-op."""
    session = ChatSession.objects.filter(owner_id=owner_id, session_id=session_id).first()
    if session is None:
        return 0
    deleted, _ = ChatMessage.objects.filter(session=session).delete()
    return deleted


def exchange_supersede(*, owner_id: int, session_id: str, request_id: str | None = None) -> ChatMessage:
    """Regenerate or edit: supersede a user message and everything after it in its conversation
    (its reply included); they stay stored, marked superseded_at, but are no longer listed nor
    sent to the model. The message is the one asked with `request_id`, or the newest one.
    Returns that user message (its content is what the client asks again, or edits)."""
    session = session_of(owner_id=owner_id, session_id=session_id_validate(session_id))
    live = ChatMessage.objects.filter(session=session, superseded_at__isnull=True)
    asked_for = live.filter(role=ChatMessage.Role.USER)
    if request_id:
        asked_for = asked_for.filter(request_id=request_id)
    asked = asked_for.order_by("-created_at", "-id").first()
    if asked is None:
        raise NotFound("No such message to regenerate or edit in this conversation.", code="message_not_found")
    later = Q(created_at__gt=asked.created_at) | Q(created_at=asked.created_at, id__gte=asked.pk)
    if asked.request_id:
        later |= Q(request_id=asked.request_id)
    live.filter(later).update(superseded_at=timezone.now())
    asked.refresh_from_db(fields=["superseded_at"])
    return asked
