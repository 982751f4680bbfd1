"""/ws/chat end to end: the real ASGI app, Redis layer, Postgres, and the Ollama stand-in."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from chat.generation import drain_background_writes
from chat.models import ChatMessage
from metrics.models import RequestMetric
from metrics.recorder import flush_metrics
from tests.chat.wsclient import receive_until, ws_with_key

pytestmark = pytest.mark.django_db(transaction=True)


async def open_socket(user_key, username="alice"):
    _, key = await user_key(username)
    communicator = ws_with_key(key)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@sync_to_async
def stored(session_id="default", username="alice"):
    return list(
        ChatMessage.objects.filter(session__session_id=session_id, session__owner__username=username)
        .order_by("created_at", "id")
        .values_list("role", "content", "status")
    )


async def test_tokens_stream_in_order_between_start_and_end(ollama, user_key):
    ws = await open_socket(user_key)
    await ws.send_json_to({"type": "message", "content": "bonjour le monde", "session_id": "default"})
    frames = await receive_until(ws, "end")
    assert frames[0]["type"] == "start" and frames[0]["backend"] == "ollama" and frames[0]["model"] == "phi3:mini"
    tokens = [f["content"] for f in frames if f["type"] == "token"]
    assert tokens == ["Echo:", " bonjour", " le", " monde"]
    end = frames[-1]
    assert end["request_id"] == frames[0]["request_id"]
    assert end["done_reason"] == "stop" and end["tokens"] == 4
    assert end["ttft_ms"] > 0 and end["total_ms"] >= end["ttft_ms"]
    await ws.disconnect()
    expected = [("user", "bonjour le monde", "complete"), ("assistant", "Echo: bonjour le monde", "complete")]
    assert await stored() == expected


async def test_the_history_and_system_prompt_go_to_the_model(ollama, user_key):
    ws = await open_socket(user_key)
    for text in ("first", "second"):
        await ws.send_json_to({"type": "message", "content": text})
        await receive_until(ws, "end")
    await ws.disconnect()
    sent = ollama.chat_requests()[-1].body
    assert sent["messages"] == [
        {"role": "system", "content": "You are EVA."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Echo: first"},
        {"role": "user", "content": "second"},
    ]
    assert sent["stream"] is True and sent["keep_alive"] == -1
    assert set(sent["options"]) == {"num_predict", "num_ctx", "temperature"}


async def test_a_final_done_chunk_with_content_is_not_lost(ollama, user_key):
    ollama.behaviour.reply_tokens = ["Hel", "lo"]
    ollama.behaviour.final_chunk_content = "!"
    ws = await open_socket(user_key)
    await ws.send_json_to({"type": "message", "content": "hi"})
    frames = await receive_until(ws, "end")
    assert "".join(f["content"] for f in frames if f["type"] == "token") == "Hello!"
    await ws.disconnect()


async def test_the_request_is_recorded_with_upstream_timings(ollama, user_key):
    ws = await open_socket(user_key)
    await ws.send_json_to({"type": "message", "content": "time me"})
    end = (await receive_until(ws, "end"))[-1]
    await ws.disconnect()
    await flush_metrics()
    metric = await RequestMetric.objects.aget(request_id=end["request_id"])
    assert (metric.channel, metric.backend, metric.status) == ("ws", "ollama", "ok")
    assert metric.ttft_ms == end["ttft_ms"] and metric.tokens_out == 3
    assert metric.upstream_load_ms == pytest.approx(1.234567, abs=0.001)
    assert metric.upstream_prompt_ms > 0 and metric.upstream_generation_ms >= 0 and metric.tokens_in >= 1


async def test_cancel_stops_the_reply_keeps_the_partial_and_closes_upstream(ollama, user_key):
    ollama.behaviour.reply_tokens = [f" w{i}" for i in range(200)]
    ollama.behaviour.token_interval_s = 0.02
    ws = await open_socket(user_key)
    await ws.send_json_to({"type": "message", "content": "long please"})
    await receive_until(ws, "token")
    await ws.send_json_to({"type": "cancel"})
    frames = await receive_until(ws, "end")
    assert frames[-1]["done_reason"] == "cancelled"
    assert await ollama.last_chat_hung_up()  # the upstream request is closed, so Ollama stops
    assert ollama.chat_requests()[-1].tokens_sent < 200
    # The socket stays usable.
    await ws.send_json_to({"type": "ping"})
    assert (await receive_until(ws, "pong"))[-1] == {"type": "pong"}
    await ws.disconnect()
    await drain_background_writes()
    rows = await stored()
    assert rows[-1][0] == "assistant" and rows[-1][2] == "partial" and rows[-1][1].startswith(" w0")


async def test_disconnect_closes_the_upstream_request(ollama, user_key):
    ollama.behaviour.reply_tokens = [f" w{i}" for i in range(200)]
    ollama.behaviour.token_interval_s = 0.02
    ws = await open_socket(user_key)
    await ws.send_json_to({"type": "message", "content": "long please"})
    await receive_until(ws, "token")
    await ws.disconnect()
    assert await ollama.last_chat_hung_up()  # the upstream request is closed, so Ollama stops
    await drain_background_writes()
    await flush_metrics()
    assert await RequestMetric.objects.filter(status="cancelled").acount() == 1


async def test_a_second_message_while_streaming_is_busy(ollama, user_key):
    ollama.behaviour.token_interval_s = 0.05
    ws = await open_socket(user_key)
    await ws.send_json_to({"type": "message", "content": "one two three"})
    await receive_until(ws, "start")
    await ws.send_json_to({"type": "message", "content": "again"})
    frames = await receive_until(ws, "end")
    errors = [f for f in frames if f["type"] == "error"]
    assert [e["code"] for e in errors] == ["busy"]
    await ws.disconnect()


async def test_clear_forgets_the_conversation(ollama, user_key):
    ws = await open_socket(user_key)
    await ws.send_json_to({"type": "message", "content": "remember me", "session_id": "s1"})
    await receive_until(ws, "end")
    await ws.send_json_to({"type": "clear", "session_id": "s1"})
    assert (await receive_until(ws, "cleared"))[-1] == {"type": "cleared", "session_id": "s1"}
    assert await stored("s1") == []
    await ws.disconnect()


async def test_two_users_with_the_same_session_id_never_share_history(ollama, user_key):
    alice = await open_socket(user_key, "alice")
    bob = await open_socket(user_key, "bob")
    await alice.send_json_to({"type": "message", "content": "alice secret", "session_id": "default"})
    await receive_until(alice, "end")
    await bob.send_json_to({"type": "message", "content": "bob here", "session_id": "default"})
    await receive_until(bob, "end")
    bob_request = ollama.chat_requests()[-1].body["messages"]
    assert all("alice" not in m["content"] for m in bob_request)
    expected = [("user", "bob here", "complete"), ("assistant", "Echo: bob here", "complete")]
    assert await stored(username="bob") == expected
    await alice.disconnect()
    await bob.disconnect()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ('["a list"]', "unknown_type"),
        ('{"type": "shout"}', "unknown_type"),
        ('{"no": "type"}', "unknown_type"),
        ('{"type": "message", "content": ""}', "empty_message"),
        ('{"type": "message", "content": "   "}', "empty_message"),
        ('{"type": "message", "content": 42}', "invalid_message"),
        ('{"type": "message"}', "invalid_message"),
        ('{"type": "message", "content": "hi", "session_id": 7}', "invalid_session_id"),
        ('{"type": "message", "content": "hi", "session_id": "../etc"}', "invalid_session_id"),
        ('{"type": "message", "content": "hi", "voice": "yes"}', "invalid_message"),
        ('{"type": "cancel"}', "nothing_to_cancel"),
        ('{"type": "clear", "session_id": ""}', "invalid_session_id"),
    ],
)
async def test_a_bad_frame_gets_an_error_and_the_socket_stays_open(ollama, user_key, frame, code):
    ws = await open_socket(user_key)
    await ws.send_to(text_data=frame)
    error = await ws.receive_json_from()
    assert error["type"] == "error" and error["code"] == code and error["message"]
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from() == {"type": "pong"}
    await ws.disconnect()


async def test_a_too_long_message_is_refused(ollama, user_key, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 50
    ws = await open_socket(user_key)
    await ws.send_json_to({"type": "message", "content": "x" * 51})
    assert (await ws.receive_json_from())["code"] == "message_too_long"
    await ws.send_json_to({"type": "message", "content": "x" * 50})
    assert (await receive_until(ws, "end"))[-1]["type"] == "end"
    await ws.disconnect()


async def test_a_binary_frame_gets_an_error(ollama, user_key):
    ws = await open_socket(user_key)
    await ws.send_to(bytes_data=b"\x00\x01")
    assert (await ws.receive_json_from())["code"] == "invalid_frame"
    await ws.disconnect()


async def test_legacy_clients_message_in_tokens_and_end_out(ollama, user_key):
    """EVA's earlier FastAPI clients sent only type+content (+session_id) and read token/end."""
    ws = await open_socket(user_key)
    await ws.send_json_to({"type": "message", "content": "Salut", "session_id": "test"})
    frames = await receive_until(ws, "end")
    assert [f["type"] for f in frames][-1] == "end"
    assert "".join(f.get("content", "") for f in frames if f["type"] == "token") == "Echo: Salut"
    await ws.disconnect()


async def test_consecutive_replies_reuse_the_connection_to_ollama(ollama, user_key):
    ws = await open_socket(user_key)
    for text in ("one", "two", "three"):
        await ws.send_json_to({"type": "message", "content": text})
        await receive_until(ws, "end")
    await ws.disconnect()
    peers = {request.peer for request in ollama.chat_requests()}
    assert len(peers) == 1  # kept alive: no new TCP connection (and handshake) per reply


async def test_a_replys_timings_are_kept_with_the_history(ollama, user_key):
    from django.test import AsyncClient

    _, key = await user_key()
    ws = ws_with_key(key)
    await ws.connect()
    await ws.send_json_to({"type": "message", "content": "time me", "session_id": "t"})
    end = (await receive_until(ws, "end"))[-1]
    await ws.disconnect()
    page = (await AsyncClient().get("/api/v1/sessions/t/messages", headers={"X-API-Key": key})).json()
    user, reply = page["items"]
    assert user["ttft_ms"] is None
    assert reply["ttft_ms"] == end["ttft_ms"] and reply["total_ms"] == end["total_ms"]


async def test_a_key_without_the_tts_scope_cannot_ask_for_speech(ollama, user_key):
    _, key = await user_key("chatonly", scopes="chat")
    ws = ws_with_key(key)
    await ws.connect()
    await ws.send_json_to({"type": "message", "content": "speak", "voice": True})
    frame = await ws.receive_json_from()
    assert frame["type"] == "error" and frame["code"] == "missing_scope"
    await ws.send_json_to({"type": "message", "content": "just text"})
    assert (await receive_until(ws, "end"))[-1]["type"] == "end"
    await ws.disconnect()
