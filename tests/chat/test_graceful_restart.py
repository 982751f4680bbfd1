"""Graceful restart (#16): SIGTERM to a real daphne or uvicorn process in the middle of replies.

Replies in flight finish within DRAIN_TIMEOUT_S; the one still running then is stopped, stored as
partial with its metric row, and its client gets `server_restarting` (WebSocket: then close 1012,
4012 under daphne;
SSE: the last event); idle sockets get the same at once; new requests during the drain get 503
`server_restarting`; the process exits (daphne: 0; uvicorn re-raises the signal after its own
shutdown). A client that reconnects gets a model history where user and assistant alternate.

Ordering is by events: each stream's first token is read before the signal; the short reply is a
few tokens, the long one 400 tokens at 50 ms each (20 s), against a 6 s drain.

A reply whose client left, going on for a resume (chat/replay.py's grace), is drained as well: that
one runs through the real ASGI application in this process, the drain called as SIGTERM calls it
(a client's departure is then known to have been handled before the drain starts).
"""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator

from chat import drain, replay
from chat.models import ChatMessage
from metrics.models import RequestMetric
from tests.chat.test_sse import _headers, parse_sse
from tests.chat.wsclient import receive_until, ws_with_key
from tests.live_server import start_server, stop_process

pytestmark = pytest.mark.django_db(transaction=True)

LONG = " ".join(["mot"] * 400)
WAIT_S = 60  # a bound for a frame to come on a loaded machine, not an ordering


async def frames_until_closed(ws: Any) -> tuple[list[dict[str, Any]], int | None]:
    frames: list[dict[str, Any]] = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT_S)))
    except websockets.ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd is not None else None


async def first_token(ws: Any) -> list[dict[str, Any]]:
    frames = [json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))]
    while frames[-1]["type"] != "token":
        frames.append(json.loads(await asyncio.wait_for(ws.recv(), WAIT_S)))
    return frames


def events_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line.removeprefix("data: ")) for line in text.splitlines() if line.startswith("data: ")]


@sync_to_async
def stored(session_id: str) -> list[tuple[str, str, str]]:
    return [
        (m.role, m.status, m.content)
        for m in ChatMessage.objects.filter(session__session_id=session_id).order_by("created_at", "id")
    ]


@sync_to_async
def metric(request_id: str) -> tuple[str, str, str]:
    row = RequestMetric.objects.get(request_id=request_id)
    return row.channel, row.status, row.error_code


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
async def test_sigterm_drains_replies_stores_the_rest_and_exits(kind, web_ollama, ollama_behaviour, user_key, tmp_path):
    ollama_behaviour.token_interval_s = 0.05
    _, key = await user_key()
    env = {"OLLAMA_URL": web_ollama.url, "DRAIN_TIMEOUT_S": "6"}
    restart_close = 1012 if kind == "uvicorn" else 4012  # daphne cannot send 1012 (chat/drain.py)
    server = start_server(kind, env, tmp_path / f"{kind}.log")
    ws_url = server.url.replace("http://", "ws://") + "/ws/chat"
    headers = {"X-API-Key": key}
    try:
        async with (
            websockets.connect(ws_url, additional_headers=headers) as short_ws,
            websockets.connect(ws_url, additional_headers=headers) as long_ws,
            websockets.connect(ws_url, additional_headers=headers) as idle_ws,
            httpx.AsyncClient(timeout=WAIT_S, headers=headers) as client,
            client.stream(
                "POST", f"{server.url}/api/v1/chat/stream", json={"message": LONG, "session_id": "sse"}
            ) as sse,
        ):
            sse_lines: list[str] = []
            lines = sse.aiter_lines()
            while not any(line == "event: token" for line in sse_lines):
                sse_lines.append(await asyncio.wait_for(anext(lines), WAIT_S))
            await long_ws.send(json.dumps({"type": "message", "content": LONG, "session_id": "long"}))
            long_frames = await first_token(long_ws)
            await short_ws.send(json.dumps({"type": "message", "content": "un deux trois", "session_id": "short"}))
            short_frames = await first_token(short_ws)
            await idle_ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(idle_ws.recv(), WAIT_S)) == {"type": "pong"}

            server.process.send_signal(signal.SIGTERM)

            idle_frames, idle_close = await frames_until_closed(idle_ws)
            assert [f["code"] for f in idle_frames] == ["server_restarting"] and idle_close == restart_close
            # The drain has begun: new work is refused.
            refused = await client.get(f"{server.url}/health")
            assert refused.status_code == 503 and refused.json()["code"] == "server_restarting"
            async with websockets.connect(ws_url, additional_headers=headers) as late_ws:
                late_frames, late_close = await frames_until_closed(late_ws)
            assert [f["code"] for f in late_frames] == ["server_restarting"] and late_close == restart_close

            more, short_close = await frames_until_closed(short_ws)
            short_frames += more
            more, long_close = await frames_until_closed(long_ws)
            long_frames += more
            async for line in lines:
                sse_lines.append(line)
        returncode = await asyncio.to_thread(server.process.wait, WAIT_S)
    finally:
        stop_process(server.process)

    # The short reply finished: its end, then server_restarting and the close.
    assert [f["type"] for f in short_frames][-2:] == ["end", "error"] and short_close == restart_close
    assert short_frames[-1]["code"] == "server_restarting" and "request_id" not in short_frames[-1]
    # The long reply was stopped at the deadline: tokens, then server_restarting naming it, the close.
    long_id = long_frames[0]["request_id"]
    assert "end" not in [f["type"] for f in long_frames]
    assert long_frames[-1] == {**long_frames[-1], "code": "server_restarting", "request_id": long_id}
    assert long_close == restart_close
    long_text = "".join(f["content"] for f in long_frames if f["type"] == "token")
    assert 0 < len(long_text) < len("Echo: " + LONG)
    # The SSE reply the same, as its last event.
    events = events_of("\n".join(sse_lines))
    assert events[-1]["code"] == "server_restarting" and events[-1]["request_id"] == events[0]["request_id"]
    assert "end" not in [e["type"] for e in events]
    sse_text = "".join(e["content"] for e in events if e["type"] == "token")

    assert returncode == (0 if kind == "daphne" else -signal.SIGTERM), server.log_tail()
    # Stored: the stopped replies as partial (exactly what their clients saw), with metric rows.
    assert await stored("long") == [("user", "complete", LONG), ("assistant", "partial", long_text)]
    assert await stored("sse") == [("user", "complete", LONG), ("assistant", "partial", sse_text)]
    assert (await stored("short"))[-1][:2] == ("assistant", "complete")
    assert await metric(long_id) == ("ws", "cancelled", "server_restarting")
    assert await metric(events[0]["request_id"]) == ("sse", "cancelled", "server_restarting")
    assert await metric(short_frames[0]["request_id"]) == ("ws", "ok", "")

    # A client that reconnects and goes on: the model sees user and assistant alternate.
    ollama_behaviour.token_interval_s = 0.0
    server = start_server(kind, env, tmp_path / f"{kind}-again.log")
    try:
        ws_url = server.url.replace("http://", "ws://") + "/ws/chat"
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            await ws.send(json.dumps({"type": "message", "content": "encore", "session_id": "long"}))
            while json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))["type"] != "end":
                pass
    finally:
        stop_process(server.process)
    roles = [m["role"] for m in web_ollama.chat_requests()[-1].body["messages"] if m["role"] != "system"]
    assert roles == ["user", "assistant", "user"]


@pytest.fixture
def draining_here(settings):
    """Replies go on for a resume when their client leaves; the drain is run in this process, which
    serves again after the test."""
    settings.REPLAY_GRACE_S = 60.0
    yield
    drain.reset_for_tests()


async def ws_reply_left_after_its_first_token(key: str, content: str, session_id: str) -> str:
    socket = ws_with_key(key)
    assert (await socket.connect())[0]
    await socket.send_json_to({"type": "message", "content": content, "session_id": session_id})
    frames = await receive_until(socket, "token", frame_timeout_s=WAIT_S)
    await socket.disconnect()  # returns once the consumer has handled it: the reply is detached
    return frames[0]["request_id"]


async def sse_reply_left_after_its_first_token(key: str, content: str, session_id: str) -> str:
    from evaproject.asgi import application

    scope = {
        "type": "http", "http_version": "1.1", "method": "POST", "path": "/api/v1/chat/stream",
        "query_string": b"", "headers": _headers(key, {}),
    }
    stream = ApplicationCommunicator(application, scope)
    body = json.dumps({"message": content, "session_id": session_id}).encode()
    await stream.send_input({"type": "http.request", "body": body})
    assert (await stream.receive_output(timeout=WAIT_S))["status"] == 200
    received = b""
    while b"event: token" not in received:
        received += (await stream.receive_output(timeout=WAIT_S))["body"]
    await stream.send_input({"type": "http.disconnect"})  # the connection dropped
    await stream.wait(timeout=WAIT_S)
    return parse_sse(received)[0][1]["request_id"]


async def last_buffered_frame(request_id: str) -> dict[str, Any]:
    store = replay.replay_store()
    snapshot = await store.snapshot(request_id)
    assert snapshot is not None and snapshot.finished
    return (await store.read(request_id, snapshot.last_n - 1, block_s=0))[-1][1]


async def test_replies_whose_clients_left_for_a_resume_are_drained_too(ollama, user_key, draining_here):
    """Detached replies (chat/replay.py) stay registered with the drain: one that ends within the
    deadline is stored complete; those still running then are stopped and stored as partial with
    their metric rows (`server_restarting`). The buffer has each one's end, for a resume."""
    ollama.behaviour.token_interval_s = 0.05
    _, key = await user_key()
    medium = " ".join(["mot"] * 40)  # 2 s of tokens, against a 6 s drain
    ws_long = await ws_reply_left_after_its_first_token(key, LONG, "ws-long")
    sse_long = await sse_reply_left_after_its_first_token(key, LONG, "sse-long")
    ws_medium = await ws_reply_left_after_its_first_token(key, medium, "ws-medium")
    assert ollama.chat_requests()[-1].finished is False  # going on without its client: the drain waits for it

    await drain.drain_streams(asyncio.get_running_loop().time() + 6)  # what SIGTERM starts (evaproject.restart)

    for session_id, request_id, channel in (("ws-long", ws_long, "ws"), ("sse-long", sse_long, "sse")):
        rows = await stored(session_id)
        assert [row[:2] for row in rows] == [("user", "complete"), ("assistant", "partial")], session_id
        assert rows[0][2] == LONG and 0 < len(rows[1][2]) < len("Echo: " + LONG)
        assert await metric(request_id) == (channel, "cancelled", "server_restarting")
        end = await last_buffered_frame(request_id)
        assert (end["type"], end["done_reason"]) == ("end", "cancelled")
    assert await stored("ws-medium") == [
        ("user", "complete", medium),
        ("assistant", "complete", "Echo: " + medium),
    ]
    assert await metric(ws_medium) == ("ws", "ok", "")
    end = await last_buffered_frame(ws_medium)
    assert (end["type"], end["done_reason"]) == ("end", "stop")
    await replay.drain_writes()  # nothing is left running: the watchdogs end with their replies


def test_the_models_history_leaves_out_user_messages_that_got_no_reply():
    from chat.services import llm_messages

    def said(role: str, content: str) -> dict[str, str]:
        return {"role": role, "content": content}

    history = [
        said("user", "a"),
        said("assistant", "A"),
        said("user", "b"),
        said("user", "c"),
        said("assistant", "C"),
        said("user", "d"),
    ]
    messages = [m for m in llm_messages(history=history, content="e") if m["role"] != "system"]
    assert messages == [
        said("user", "a"),
        said("assistant", "A"),
        said("user", "c"),
        said("assistant", "C"),
        said("user", "e"),
    ]
