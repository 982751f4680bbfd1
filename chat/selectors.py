"""Reads of chat data. Every read is scoped to its owner: another user's session is NotFound."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from accounts.errors import NotFound
from chat.models import ChatMessage, ChatSession


def session_of(*, owner_id: int, session_id: str) -> ChatSession:
    """The owner's session named `session_id`, or NotFound (also for someone else's)."""
    session = ChatSession.objects.filter(owner_id=owner_id, session_id=session_id).first()
    if session is None:
        raise NotFound(f"No conversation named {session_id!r}.")
    return session


def sessions_of(*, owner_id: int) -> QuerySet[ChatSession]:
    """The owner's sessions, most recently active first, with their message counts."""
    return (
        ChatSession.objects.filter(owner_id=owner_id)
        .annotate(message_count=Count("messages"))
        .order_by("-updated_at", "-id")
    )


def session_messages(*, session: ChatSession, limit: int, offset: int) -> tuple[list[ChatMessage], int]:
    """One page of a session's messages, oldest first, and the total count."""
    queryset = ChatMessage.objects.filter(session=session).order_by("created_at", "id")
    return list(queryset[offset : offset + limit]), queryset.count()


def session_history(*, owner_id: int, session_id: str, turns: int) -> list[dict[str, str]]:
    """The last `turns` user/assistant exchanges of the owner's session, oldest first, as LLM messages."""
    if turns <= 0:
        return []
    rows = list(
        ChatMessage.objects.filter(session__owner_id=owner_id, session__session_id=session_id)
        .exclude(content="")
        .exclude(status=ChatMessage.Status.ERROR)
        .order_by("-created_at", "-id")
        .values_list("role", "content")[: turns * 2]
    )
    rows.reverse()
    return [{"role": role, "content": content} for role, content in rows]
