"""Reads of chat data. Every read is scoped to its owner: another user's session is NotFound."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

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
        .annotate(message_count=Count("messages", filter=Q(messages__superseded_at__isnull=True)))
        .order_by("-updated_at", "-id")
    )


def session_messages(*, session: ChatSession, limit: int, offset: int) -> tuple[list[ChatMessage], int]:
    """One page of a session's messages (not the superseded ones), oldest first, and the total count."""
    queryset = ChatMessage.objects.filter(session=session, superseded_at__isnull=True).order_by("created_at", "id")
    return list(queryset[offset : offset + limit]), queryset.count()


def session_history(*, owner_id: int, session_id: str, turns: int) -> list[dict[str, str]]:
    """The last `turns` user/assistant exchanges of the owner's session, oldest first, as LLM messages."""
    if turns <= 0:
        return []
    rows = list(
        ChatMessage.objects.filter(
            session__owner_id=owner_id, session__session_id=session_id, superseded_at__isnull=True
        )
        .exclude(content="")
        .exclude(status=ChatMessage.Status.ERROR)
        .order_by("-created_at", "-id")
        .values_list("role", "content")[: turns * 2]
    )
    rows.reverse()
    return [{"role": role, "content": content} for role, content in rows]


def sessions_search(*, owner_id: int, query: str) -> QuerySet[ChatSession]:
    """The owner's sessions whose title or a shown message contains `query` (any case), most
    recently active first. On Postgres the trigram indexes of chat/migrations/0004 serve both
    LIKEs (three characters or more); elsewhere they scan."""
    matching_messages = ChatMessage.objects.filter(
        session__owner_id=owner_id, superseded_at__isnull=True, content__icontains=query
    ).values("session_id")
    return sessions_of(owner_id=owner_id).filter(Q(title__icontains=query) | Q(pk__in=matching_messages))


def first_match(*, session: ChatSession, query: str) -> ChatMessage | None:
    """The session's newest shown message that contains `query`, for a search result's excerpt."""
    return (
        ChatMessage.objects.filter(session=session, superseded_at__isnull=True, content__icontains=query)
        .order_by("-created_at", "-id")
        .first()
    )


def session_export_messages(*, session: ChatSession, include_superseded: bool) -> list[ChatMessage]:
    """All of a session's messages, oldest first (the superseded ones too when asked)."""
    queryset = ChatMessage.objects.filter(session=session)
    if not include_superseded:
        queryset = queryset.filter(superseded_at__isnull=True)
    return list(queryset.order_by("created_at", "id"))
