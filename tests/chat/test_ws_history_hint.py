"""A socket's next message asks the model before its history read returns; the read checks it.

The consumer keeps what the history read should return for the conversation it spoke in last
(ChatGeneration.next_history). The model is asked with that at once; when the read differs
(another device wrote to the conversation meanwhile), that request is closed before its first
token and the model is asked again with the history as read.
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from chat.models import ChatMessage
from chat.store import PostgresChatStore
from tests.chat.wsclient import receive_until, ws_with_key

pytestmark = pytest.mark.django_db(transaction=True)

SYSTEM = {"role": "system", "content": "You are EVA."}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def echo(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": f"Echo: {text}"}


async def open_socket(key: str):
    communicator = ws_with_key(key)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def ask(ws, text: str, session_id: str = "s") -> list[dict]:
    await ws.send_json_to({"type": "message", "content": text, "session_id": session_id})
    frames = await receive_until(ws, "end")
    assert [f["type"] for f in frames][0] == "start" and frames[-1]["type"] == "end"
    return frames


@sync_to_async
def stored(session_id: str = "s") -> list[tuple[str, str]]:
    return list(
        ChatMessage.objects.filter(session__session_id=session_id).order_by("created_at", "id").values_list("role", "content")
    )


def hold_history_reads(monkeypatch) -> asyncio.Event:
    """From now on, history reads wait for the returned event before they run."""
    gate = asyncio.Event()
    read = PostgresChatStore.history

    async def held_history(self, **kwargs):
        await gate.wait()
        return await read(self, **kwargs)

    monkeypatch.setattr(PostgresChatStore, "history", held_history)
    return gate


async def wait_for_requests(ollama, count: int) -> None:
    for _ in range(500):
        if len(ollama.chat_requests()) >= count:
            break
        await asyncio.sleep(0.01)
    assert len(ollama.chat_requests()) == count


async def test_the_next_message_reaches_the_model_before_its_history_read_returns(ollama, user_key, monkeypatch):
    _, key = await user_key()
    ws = await open_socket(key)
    await ask(ws, "first")
    gate = hold_history_reads(monkeypatch)
    await ws.send_json_to({"type": "message", "content": "second", "session_id": "s"})
    try:
        await wait_for_requests(ollama, 2)  # the model is asked while the read is held back
        assert ollama.chat_requests()[1].body["messages"] == [SYSTEM, user("first"), echo("first"), user("second")]
        assert await ws.receive_nothing(timeout=0.3)  # nothing is relayed before the read has checked the hint
    finally:
        gate.set()
    frames = await receive_until(ws, "end")
    assert "".join(f["content"] for f in frames if f["type"] == "token") == "Echo: second"
    assert len(ollama.chat_requests()) == 2  # the hint matched: asked once
    assert await stored() == [("user", "first"), ("assistant", "Echo: first"), ("user", "second"), ("assistant", "Echo: second")]
    await ws.disconnect()


async def test_over_many_turns_the_hint_always_matches_the_read(ollama, user_key, settings):
    # Two turns of history; one empty reply, which the read leaves out too.
    settings.LLM_HISTORY_TURNS = 2
    _, key = await user_key()
    ws = await open_socket(key)
    sent = []
    for i in range(5):
        ollama.behaviour.reply_tokens = [] if i == 2 else None
        await ask(ws, f"m{i}")
        sent.append(ollama.chat_requests()[-1].body["messages"])
    assert len(ollama.chat_requests()) == 5  # one request per message: no hint was ever wrong
    assert sent[3] == [SYSTEM, echo("m0"), user("m1"), echo("m1"), user("m2"), user("m3")]
    assert sent[4] == [SYSTEM, echo("m1"), user("m2"), user("m3"), echo("m3"), user("m4")]
    await ws.disconnect()


async def test_when_another_device_wrote_meanwhile_the_model_is_asked_again_with_the_history(ollama, user_key):
    _, key = await user_key()
    phone, laptop = await open_socket(key), await open_socket(key)
    await ask(phone, "from the phone")
    await ask(laptop, "from the laptop")  # the phone's hint is now stale
    ollama.behaviour.first_token_delay_s = 1.5  # the stale request is still waiting for its first token
    before = len(ollama.chat_requests())
    frames = await ask(phone, "and now?")
    requests = ollama.chat_requests()[before:]
    assert len(requests) == 2
    stale, asked_again = requests
    assert stale.body["messages"] == [SYSTEM, user("from the phone"), echo("from the phone"), user("and now?")]
    assert stale.client_disconnected  # closed, so the model stops
    assert asked_again.body["messages"] == [
        SYSTEM, user("from the phone"), echo("from the phone"), user("from the laptop"), echo("from the laptop"),
        user("and now?"),
    ]
    assert [f["type"] for f in frames].count("start") == 1
    assert "".join(f["content"] for f in frames if f["type"] == "token") == "Echo: and now?"
    assert (await stored())[-2:] == [("user", "and now?"), ("assistant", "Echo: and now?")]
    await phone.disconnect()
    await laptop.disconnect()


async def test_a_clear_or_another_conversation_starts_without_a_hint(ollama, user_key):
    _, key = await user_key()
    ws = await open_socket(key)
    await ask(ws, "one", "a")
    await ws.send_json_to({"type": "clear", "session_id": "a"})
    await receive_until(ws, "cleared")
    await ask(ws, "two", "a")
    await ask(ws, "three", "b")
    requests = ollama.chat_requests()
    assert len(requests) == 3  # no request with a stale hint was made and closed
    assert requests[1].body["messages"] == [SYSTEM, user("two")]
    assert requests[2].body["messages"] == [SYSTEM, user("three")]
    await ws.disconnect()


async def test_a_disconnect_while_the_read_checks_the_hint_closes_the_upstream_request(ollama, user_key, monkeypatch):
    _, key = await user_key()
    ws = await open_socket(key)
    await ask(ws, "first")
    gate = hold_history_reads(monkeypatch)
    ollama.behaviour.first_token_delay_s = 5  # the request is still open when the socket goes
    await ws.send_json_to({"type": "message", "content": "second", "session_id": "s"})
    await wait_for_requests(ollama, 2)
    await asyncio.wait_for(ws.disconnect(), 5)  # the consumer stops its reply and returns
    assert await ollama.last_chat_hung_up()
    gate.set()
