"""The chat hot path's database work, through the async Postgres store and the ORM store alike.

That the two give the same rows, results and errors (also on SQLite) is tests/test_db_parity.py's.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.utils import timezone

from chat.models import ChatMessage, ChatSession
from chat.store import OrmChatStore, PostgresChatStore, chat_store

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["postgres", "orm"])
def store(request):
    return PostgresChatStore() if request.param == "postgres" else OrmChatStore()


@sync_to_async
def make_owner(name: str = "alice") -> int:
    return get_user_model().objects.create_user(name).pk


@sync_to_async
def rows(session_pk: int) -> list[tuple]:
    return list(
        ChatMessage.objects.filter(session_id=session_pk)
        .order_by("created_at", "id")
        .values_list("role", "content", "status", "backend", "model", "request_id", "ttft_ms", "total_ms")
    )


async def test_the_hot_path_uses_the_postgres_store_unless_turned_off(settings):
    assert isinstance(chat_store(), PostgresChatStore)
    settings.DATABASE_ASYNC = False
    assert isinstance(chat_store(), OrmChatStore)


async def test_a_turn_creates_the_conversation_stores_both_messages_and_moves_updated_at(store):
    owner = await make_owner()
    at = timezone.now() - timedelta(seconds=5)
    long_first_message = "Bonjour,   quel temps fait-il à Paris aujourd'hui ? " * 3
    session_pk = await store.turn_begin(
        owner_id=owner, session_id="s1", content=long_first_message, request_id="r1", at=at
    )
    session = await ChatSession.objects.aget(pk=session_pk)
    assert (session.owner_id, session.session_id, session.created_at) == (owner, "s1", at)
    assert len(session.title) == 60 and session.title.endswith("…") and "  " not in session.title

    await store.turn_finish(
        session_pk=session_pk, content="Il fait beau.", status="complete", backend="ollama", model="phi3:mini",
        request_id="r1", ttft_ms=12.5, total_ms=80.25,
    )
    assert await rows(session_pk) == [
        ("user", long_first_message, "complete", "", "", "r1", None, None),
        ("assistant", "Il fait beau.", "complete", "ollama", "phi3:mini", "r1", 12.5, 80.25),
    ]
    user_message = await ChatMessage.objects.aget(session_id=session_pk, role="user")
    assert user_message.created_at == at
    assert (await ChatSession.objects.aget(pk=session_pk)).updated_at > at

    again = await store.turn_begin(
        owner_id=owner, session_id="s1", content="et demain ?", request_id="r2", at=timezone.now()
    )
    assert again == session_pk
    assert (await ChatSession.objects.aget(pk=session_pk)).title == session.title  # the first message names it


async def test_a_conversation_created_without_a_title_is_named_by_its_first_stored_reply(store):
    owner = await make_owner()
    untitled = await ChatSession.objects.acreate(owner_id=owner, session_id="api", title="")
    titled = await ChatSession.objects.acreate(owner_id=owner, session_id="named", title="Mine")
    for session in (untitled, titled):
        pk = await store.turn_begin(
            owner_id=owner, session_id=session.session_id, content="q", request_id="r", at=timezone.now()
        )
        assert pk == session.pk
        await store.turn_finish(
            session_pk=pk, content="a", status="complete", backend="ollama", model="m", request_id="r",
            ttft_ms=None, total_ms=None, title="Où partir en mai ?",
        )
    assert (await ChatSession.objects.aget(pk=untitled.pk)).title == "Où partir en mai ?"
    assert (await ChatSession.objects.aget(pk=titled.pk)).title == "Mine"  # a title is never replaced


async def test_first_messages_racing_for_a_new_conversation_all_land_in_one(store):
    owner = await make_owner()
    pks = await asyncio.gather(
        *(
            store.turn_begin(owner_id=owner, session_id="new", content=f"m{i}", request_id=str(i), at=timezone.now())
            for i in range(8)
        )
    )
    assert len(set(pks)) == 1
    assert await ChatSession.objects.filter(owner_id=owner).acount() == 1
    assert sorted(r[1] for r in await rows(pks[0])) == [f"m{i}" for i in range(8)]


async def test_history_is_the_last_turns_oldest_first_without_empty_or_failed_replies(store):
    owner = await make_owner()
    other = await make_owner("bob")
    for i in range(4):
        pk = await store.turn_begin(
            owner_id=owner, session_id="s", content=f"q{i}", request_id=str(i), at=timezone.now()
        )
        await store.turn_finish(
            session_pk=pk, content=f"a{i}" if i != 2 else "", status="error" if i == 1 else "complete",
            backend="ollama", model="m", request_id=str(i), ttft_ms=None, total_ms=None,
        )
    await store.turn_begin(owner_id=other, session_id="s", content="bob's secret", request_id="b", at=timezone.now())

    # Kept: q0 a0 q1 q2 q3 a3 (a1 failed, a2 is empty); 2 turns are the newest 4 of them.
    assert await store.history(owner_id=owner, session_id="s", turns=2) == [
        {"role": "user", "content": "q1"},
        {"role": "user", "content": "q2"},
        {"role": "user", "content": "q3"},
        {"role": "assistant", "content": "a3"},
    ]
    assert await store.history(owner_id=owner, session_id="s", turns=0) == []
    assert await store.history(owner_id=owner, session_id="unknown", turns=5) == []
    assert await store.history(owner_id=other, session_id="s", turns=5) == [{"role": "user", "content": "bob's secret"}]
