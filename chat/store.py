"""The database work of one chat turn, as the hot path needs it: async, and as cheap as it gets.

A turn reads the conversation's history before the model is asked, stores the user's message
while the model starts, and stores the reply (moving the conversation's `updated_at`) at the end.

- On Postgres these are three single statements run on the event loop through the async
  psycopg pool of accounts.asyncdb: no hop to an executor thread and back, no ORM query
  building (what that saves per request: bench/RESULTS.md).
- On any other database (the embedded SQLite default) the same three operations run through
  the ORM functions of chat.services / chat.selectors in executor threads.

`chat_store()` picks one. Both give the same rows, results and errors: tests/test_db_parity.py
runs one scenario through each, on Postgres and on SQLite, and compares them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.db import IntegrityError
from django.utils import timezone

from accounts import asyncdb
from accounts.errors import NotFound
from chat.models import ChatMessage, ChatSession
from chat.selectors import session_history
from chat.services import chat_turn_begin, chat_turn_finish, title_from


class ChatStore(Protocol):
    async def history(self, *, owner_id: int, session_id: str, turns: int) -> list[dict[str, str]]:
        """The last `turns` exchanges of the owner's session, oldest first, as LLM messages."""

    async def turn_begin(self, *, owner_id: int, session_id: str, content: str, request_id: str, at: datetime) -> int:
        """Store the user's message (creating the conversation on first use); the session's pk."""

    async def turn_finish(
        self, *, session_pk: int, content: str, status: str, backend: str, model: str, request_id: str,
        ttft_ms: float | None, total_ms: float | None, title: str = "", done_reason: str = "",
    ) -> None:
        """Store the assistant's reply and move the conversation's updated_at; name it `title`
        if it has no title yet (created through the API without one). `done_reason` says how it
        ended (stop, length, cancelled, or a failed reply's error code). A reply whose message was
        superseded meanwhile (regenerated or edited while it was written) is stored superseded
        too. NotFound if the conversation was deleted meanwhile."""


def storable(text: str) -> str:
    """`text` as both stores keep it: U+0000, which Postgres text cannot hold, becomes U+FFFD."""
    return text.replace("\x00", "\ufffd")


def _gone() -> NotFound:
    return NotFound("The conversation no longer exists: the reply was not stored.")


def _thread(function: Any) -> Any:
    # Executor threads, not the one thread-sensitive thread: requests do not queue behind each other.
    return database_sync_to_async(function, thread_sensitive=False)


class OrmChatStore:
    """Any database Django supports, through the ORM in executor threads."""

    async def history(self, *, owner_id: int, session_id: str, turns: int) -> list[dict[str, str]]:
        rows: list[dict[str, str]] = await _thread(session_history)(
            owner_id=owner_id, session_id=session_id, turns=turns
        )
        return rows

    async def turn_begin(self, *, owner_id: int, session_id: str, content: str, request_id: str, at: datetime) -> int:
        session_pk: int = await _thread(chat_turn_begin)(
            owner_id=owner_id, session_id=session_id, content=storable(content), request_id=request_id, at=at
        )
        return session_pk

    async def turn_finish(
        self, *, session_pk: int, content: str, status: str, backend: str, model: str, request_id: str,
        ttft_ms: float | None, total_ms: float | None, title: str = "", done_reason: str = "",
    ) -> None:
        try:
            await _thread(chat_turn_finish)(
                session_pk=session_pk, content=storable(content), status=status, backend=backend, model=model,
                request_id=request_id, ttft_ms=ttft_ms, total_ms=total_ms, title=storable(title),
                done_reason=done_reason,
            )
        except IntegrityError:  # the reply's conversation is gone (its foreign key)
            raise _gone() from None


_MESSAGE = ChatMessage._meta.db_table
_SESSION = ChatSession._meta.db_table
_MESSAGE_COLUMNS = "session_id, role, content, status, backend, model, request_id, ttft_ms, total_ms, created_at"
_REPLY_COLUMNS = f"{_MESSAGE_COLUMNS}, done_reason, superseded_at"

# Same rows as chat.selectors.session_history: no empty, failed or superseded messages, newest first.
_HISTORY_SQL = f"""
SELECT m.role, m.content FROM {_MESSAGE} m JOIN {_SESSION} s ON s.id = m.session_id
WHERE s.owner_id = %(owner)s AND s.session_id = %(session)s AND m.content <> '' AND m.status <> 'error'
  AND m.superseded_at IS NULL
ORDER BY m.created_at DESC, m.id DESC LIMIT %(limit)s
"""

# Find or create the conversation and store the message, in one statement. When two first
# messages race, the loser's INSERT ... ON CONFLICT creates nothing and no message is stored;
# the statement is then run again and finds the winner's conversation. Safe to send again
# (asyncdb.resend_safe, #16): a message with this request_id already in the conversation (a
# first run that committed, its answer lost with its connection) is not stored twice.
_TURN_BEGIN_SQL = asyncdb.resend_safe(f"""
WITH found AS (
    SELECT id FROM {_SESSION} WHERE owner_id = %(owner)s AND session_id = %(session)s
), created AS (
    INSERT INTO {_SESSION} (owner_id, session_id, title, created_at, updated_at)
    SELECT %(owner)s, %(session)s, %(title)s, %(at)s, %(at)s WHERE NOT EXISTS (SELECT 1 FROM found)
    ON CONFLICT (owner_id, session_id) DO NOTHING
    RETURNING id
), target AS (
    SELECT id FROM found UNION ALL SELECT id FROM created
), stored AS (
    INSERT INTO {_MESSAGE} ({_MESSAGE_COLUMNS})
    SELECT id, 'user', %(content)s, 'complete', '', '', %(request_id)s, NULL, NULL, %(at)s FROM target
    WHERE NOT EXISTS (
        SELECT 1 FROM {_MESSAGE} m WHERE m.session_id = target.id AND m.created_at = %(at)s
        AND m.role = 'user' AND m.request_id = %(request_id)s::varchar
    )
    RETURNING session_id
)
SELECT id FROM target
""")

# Stores the reply only if its conversation is still there (no foreign-key error to come back
# from a conversation deleted while the reply streamed); no row back: it is gone. The reply
# takes its user message's superseded_at (the newest message of the session with its request id).
# Safe to send again (asyncdb.resend_safe, #16): a reply with this request_id already stored is
# not stored twice.
_TURN_FINISH_SQL = asyncdb.resend_safe(f"""
WITH reply AS (
    INSERT INTO {_MESSAGE} ({_REPLY_COLUMNS})
    SELECT %(session_pk)s, 'assistant', %(content)s, %(status)s, %(backend)s, %(model)s, %(request_id)s,
           %(ttft_ms)s, %(total_ms)s, %(at)s, %(done_reason)s,
           (SELECT u.superseded_at FROM {_MESSAGE} u
            WHERE u.session_id = %(session_pk)s AND u.request_id = %(asked)s AND u.role = 'user'
              AND u.request_id <> ''
            ORDER BY u.created_at DESC LIMIT 1)
    WHERE EXISTS (SELECT 1 FROM {_SESSION} WHERE id = %(session_pk)s)
    AND NOT EXISTS (
        SELECT 1 FROM {_MESSAGE} m WHERE m.session_id = %(session_pk)s AND m.created_at = %(at)s
        AND m.role = 'assistant' AND m.request_id = %(request_id)s::varchar
    )
    RETURNING id
)
UPDATE {_SESSION} SET updated_at = %(at)s, title = CASE WHEN title = '' THEN %(title)s ELSE title END
WHERE id = %(session_pk)s
RETURNING id
""")


class PostgresChatStore:
    """Postgres only: the three statements on the event loop (accounts.asyncdb)."""

    async def history(self, *, owner_id: int, session_id: str, turns: int) -> list[dict[str, str]]:
        if turns <= 0:
            return []
        rows = await asyncdb.execute(_HISTORY_SQL, {"owner": owner_id, "session": session_id, "limit": turns * 2})
        return [{"role": role, "content": content} for role, content in reversed(rows)]

    async def turn_begin(self, *, owner_id: int, session_id: str, content: str, request_id: str, at: datetime) -> int:
        content = storable(content)
        params = {
            "owner": owner_id, "session": session_id, "title": title_from(content), "content": content,
            "request_id": request_id, "at": at,
        }
        for _ in range(3):
            rows = await asyncdb.execute(_TURN_BEGIN_SQL, params)
            if rows:
                return int(rows[0][0])
        raise IntegrityError(f"could not find or create conversation {session_id!r}")

    async def turn_finish(
        self, *, session_pk: int, content: str, status: str, backend: str, model: str, request_id: str,
        ttft_ms: float | None, total_ms: float | None, title: str = "", done_reason: str = "",
    ) -> None:
        from psycopg.errors import ForeignKeyViolation

        try:
            rows = await asyncdb.execute(
                _TURN_FINISH_SQL,
                {
                    "session_pk": session_pk, "content": storable(content), "status": status, "backend": backend,
                    "model": model, "request_id": request_id, "ttft_ms": ttft_ms, "total_ms": total_ms,
                    "at": timezone.now(), "title": storable(title), "done_reason": done_reason, "asked": request_id,
                },
            )
        except ForeignKeyViolation:  # deleted between the statement's snapshot and its insert
            raise _gone() from None
        if not rows:
            raise _gone()


_orm_store = OrmChatStore()
_postgres_store = PostgresChatStore()


def chat_store() -> ChatStore:
    """The Postgres store when the database is Postgres (and DATABASE_ASYNC is on), else the ORM one."""
    return _postgres_store if asyncdb.async_db_enabled() else _orm_store
