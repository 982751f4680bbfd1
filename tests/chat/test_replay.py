"""Resumable replies (chat/replay.py) through the real ASGI application, Redis and Postgres:
numbered frames, resume on /ws/chat and SSE, ownership, the buffer's bounds and TTL, the grace.

The cross-process case (two daphne processes sharing Redis) is tests/chat/test_resume_live.py."""

from __future__ import annotations

import json

import pytest
import redis.asyncio
from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator
from django.conf import settings as django_settings

from chat import replay
from chat.generation import drain_background_writes
from chat.models import ChatMessage
from tests.chat.test_sse import _headers, parse_sse, request
from tests.chat.wsclient import receive_until, ws_with_key

pytestmark = pytest.mark.django_db(transaction=True)

LONG = [f" w{i}" for i in range(30)]


@pytest.fixture
def grace(settings):
    settings.REPLAY_GRACE_S = 30.0
    return settings


async def open_socket(key):
    communicator = ws_with_key(key)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@sync_to_async
def stored(username="alice"):
    return list(
        ChatMessage.objects.filter(session__owner__username=username)
        .order_by("created_at", "id")
        .values_list("role", "content", "status")
    )


def numbers(frames):
    return [frame["n"] for frame in frames]


def text(frames):
    return "".join(frame["content"] for frame in frames if frame["type"] == "token")


async def frames_until_tokens(ws, count):
    """The frames of a reply up to and including its `count`-th token."""
    frames = []
    while sum(frame["type"] == "token" for frame in frames) < count:
        frames.append(await ws.receive_json_from(timeout=10))
    return frames


async def test_every_frame_of_a_reply_is_numbered_from_one(ollama, user_key):
    _, key = await user_key()
    ws = await open_socket(key)
    await ws.send_json_to({"type": "message", "content": "un deux trois"})
    frames = await receive_until(ws, "end")
    await ws.disconnect()
    assert [frame["type"] for frame in frames] == ["start", "token", "token", "token", "token", "end"]
    assert numbers(frames) == [1, 2, 3, 4, 5, 6]


async def test_sse_events_carry_the_frame_number_as_their_id(ollama, user_key):
    _, key = await user_key()
    reply = await request("/api/v1/chat/stream", {"message": "un deux"}, key=key)
    blocks = [block for block in reply.body.decode().split("\n\n") if block]
    assert [block.splitlines()[0] for block in blocks] == [f"id: {n}" for n in range(1, len(blocks) + 1)]
    assert [data["n"] for _, data in reply.events()] == list(range(1, len(blocks) + 1))


async def test_a_socket_that_drops_mid_reply_resumes_on_another_with_nothing_missing_or_twice(
    ollama, user_key, grace
):
    ollama.behaviour.reply_tokens = LONG
    ollama.behaviour.token_interval_s = 0.03
    _, key = await user_key()
    first = await open_socket(key)
    await first.send_json_to({"type": "message", "content": "long one"})
    seen = await frames_until_tokens(first, 3)
    await first.disconnect()  # the phone lost its network
    second = await open_socket(key)
    request_id = seen[0]["request_id"]
    await second.send_json_to({"type": "resume", "request_id": request_id, "after": seen[-1]["n"]})
    rest = await receive_until(second, "end")
    await second.disconnect()
    frames = seen + rest
    assert numbers(frames) == list(range(1, len(frames) + 1))
    assert text(frames) == "".join(LONG)
    assert rest[-1]["done_reason"] == "stop" and rest[-1]["request_id"] == request_id
    await replay.drain_writes()
    await drain_background_writes()
    assert await stored() == [("user", "long one", "complete"), ("assistant", "".join(LONG), "complete")]
    assert ollama.chat_requests()[-1].tokens_sent == len(LONG)


async def test_resuming_a_finished_reply_gets_its_remaining_frames_and_end(ollama, user_key):
    _, key = await user_key()
    ws = await open_socket(key)
    await ws.send_json_to({"type": "message", "content": "un deux trois"})
    frames = await receive_until(ws, "end")
    await ws.send_json_to({"type": "resume", "request_id": frames[0]["request_id"], "after": 2})
    again = await receive_until(ws, "end")
    await ws.disconnect()
    assert again == frames[2:]


async def test_someone_elses_reply_is_not_found_on_the_socket_and_over_sse(ollama, user_key):
    _, alice_key = await user_key("alice")
    _, bob_key = await user_key("bob")
    alice = await open_socket(alice_key)
    await alice.send_json_to({"type": "message", "content": "secret plans"})
    frames = await receive_until(alice, "end")
    await alice.disconnect()
    request_id = frames[0]["request_id"]
    bob = await open_socket(bob_key)
    for rid in (request_id, "4f6c1e9e-0000-4000-8000-000000000000"):  # alice's, and one that never was
        await bob.send_json_to({"type": "resume", "request_id": rid, "after": 0})
        error = await bob.receive_json_from(timeout=10)
        assert error["type"] == "error" and error["code"] == "not_found"
        assert "secret" not in error["message"]
    await bob.send_json_to({"type": "ping"})
    assert await bob.receive_json_from(timeout=10) == {"type": "pong"}  # the socket stays open
    await bob.disconnect()
    answer = await request(f"/api/v1/chat/stream/{request_id}", key=bob_key, method="GET")
    assert answer.status == 404 and answer.json()["code"] == "not_found"
    mine = await request(f"/api/v1/chat/stream/{request_id}", key=alice_key, method="GET", **{"last-event-id": "3"})
    assert mine.status == 200 and [data for _, data in mine.events()] == frames[3:]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "resume", "after": 0}, "invalid_resume"),
        ({"type": "resume", "request_id": 5, "after": 0}, "invalid_resume"),
        ({"type": "resume", "request_id": "x" * 65, "after": 0}, "invalid_resume"),
        ({"type": "resume", "request_id": "../../etc", "after": 0}, "not_found"),
        ({"type": "resume", "request_id": "R", "after": -1}, "invalid_resume"),
        ({"type": "resume", "request_id": "R", "after": True}, "invalid_resume"),
        ({"type": "resume", "request_id": "R", "after": "many"}, "invalid_resume"),
        ({"type": "resume", "request_id": "R", "after": 6}, "invalid_resume"),  # past the end
        ({"type": "resume", "request_id": "R", "after": 5}, "invalid_resume"),  # its end already received
    ],
)
async def test_bad_resume_frames_get_an_error_and_the_socket_stays_open(ollama, user_key, frame, code):
    _, key = await user_key()
    ws = await open_socket(key)
    await ws.send_json_to({"type": "message", "content": "un deux"})
    frames = await receive_until(ws, "end")
    assert frames[-1]["n"] == 5
    await replay.drain_writes()  # its end is in the buffer: the reply is known to be finished
    if frame.get("request_id") == "R":
        frame = {**frame, "request_id": frames[0]["request_id"]}
    await ws.send_json_to(frame)
    error = await ws.receive_json_from(timeout=10)
    assert error["type"] == "error" and error["code"] == code, error
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(timeout=10) == {"type": "pong"}
    await ws.disconnect()


@pytest.mark.parametrize(("headers", "status", "code"), [({"last-event-id": "x"}, 422, "invalid_resume")])
async def test_a_bad_last_event_id_is_a_json_error(ollama, user_key, headers, status, code):
    _, key = await user_key()
    reply = await request("/api/v1/chat/stream", {"message": "hi"}, key=key)
    request_id = reply.events()[0][1]["request_id"]
    answer = await request(f"/api/v1/chat/stream/{request_id}", key=key, method="GET", **headers)
    assert answer.status == status and answer.json()["code"] == code
    assert (await request(f"/api/v1/chat/stream/{request_id}", method="GET")).status == 401
    assert (await request(f"/api/v1/chat/stream/{request_id}", {}, key=key)).status == 405
    by_query = await request(f"/api/v1/chat/stream/{request_id}?after=1", key=key, method="GET")
    assert [data for _, data in by_query.events()] == [data for _, data in reply.events()][1:]


async def test_the_buffer_keeps_the_last_frames_with_a_ttl_and_refuses_a_resume_with_a_hole(
    ollama, user_key, settings
):
    settings.REPLAY_MAX_FRAMES = 4
    settings.REPLAY_TTL_S = 60
    settings.REPLAY_FLUSH_MS = 1  # a write per token here, so that there is something to trim
    ollama.behaviour.reply_tokens = [f" t{i}" for i in range(10)]
    ollama.behaviour.token_interval_s = 0.05
    _, key = await user_key()
    ws = await open_socket(key)
    await ws.send_json_to({"type": "message", "content": "ten"})
    frames = await receive_until(ws, "end")
    last = frames[-1]["n"]
    assert last == 12
    await replay.drain_writes()
    client = redis.asyncio.Redis.from_url(django_settings.REDIS_URL)
    stream = f"{django_settings.CHANNEL_LAYER_PREFIX}:reply:{frames[0]['request_id']}"
    try:
        entries = await client.xrange(stream)
        kept = [frame["n"] for _, fields in entries for frame in json.loads(fields[b"f"])]
        # Whole writes are kept: those holding the last 4 frames, and nothing older.
        assert kept[-4:] == [9, 10, 11, 12] and kept[0] > 6 and len(entries) <= 4
        for key_name in (stream, f"{stream}:owner"):
            assert 0 < await client.pttl(key_name) <= 60_000
    finally:
        await client.aclose()
    await ws.send_json_to({"type": "resume", "request_id": frames[0]["request_id"], "after": 0})
    error = await ws.receive_json_from(timeout=10)
    assert error["code"] == "resume_unavailable" and "REPLAY_MAX_FRAMES=4" in error["message"]
    await ws.send_json_to({"type": "resume", "request_id": frames[0]["request_id"], "after": last - 4})
    assert await receive_until(ws, "end") == frames[-4:]
    await ws.disconnect()


async def test_the_memory_buffer_keeps_the_last_frames_and_forgets_a_reply_after_its_ttl(settings):
    settings.REPLAY_MAX_FRAMES = 3
    settings.REPLAY_TTL_S = 60
    now = [1000.0]
    store = replay.MemoryStore(clock=lambda: now[0])
    frames = [(n, json.dumps({"type": "token", "content": str(n), "n": n}).encode()) for n in range(1, 6)]
    await store.append_many([("r1", 7, frames, True)])
    await store.append_many([("r1", 7, [(6, json.dumps({"type": "end", "n": 6}).encode())], True)])
    snapshot = await store.snapshot("r1")
    assert snapshot == replay.Snapshot(owner_id=7, first_n=4, last_n=6, finished=True)
    follower = replay.Follower(store, "r1", 3)
    assert [frame["n"] async for frame in follower.frames()] == [4, 5, 6]
    now[0] += 59.9
    assert await store.snapshot("r1") is not None
    now[0] += 0.2
    assert await store.snapshot("r1") is None
    await store.append_many([("r2", 7, frames[:1], True)])  # a new reply sweeps the expired ones
    assert set(store.replies) == {"r2"}


async def test_a_reply_nobody_resumes_within_the_grace_is_stopped_and_kept_as_partial(ollama, user_key, settings):
    settings.REPLAY_GRACE_S = 0.3
    ollama.behaviour.reply_tokens = [f" t{i}" for i in range(500)]
    ollama.behaviour.token_interval_s = 0.02
    _, key = await user_key()
    ws = await open_socket(key)
    await ws.send_json_to({"type": "message", "content": "long"})
    seen = await frames_until_tokens(ws, 2)
    await ws.disconnect()
    await replay.drain_writes()  # returns once the watchdog stopped the detached reply
    await drain_background_writes()
    assert await ollama.last_chat_hung_up(within_s=5)
    assert ollama.chat_requests()[-1].tokens_sent < 500
    (user, reply) = await stored()
    assert user == ("user", "long", "complete")
    assert reply[0] == "assistant" and reply[2] == "partial" and reply[1].startswith(" t0 t1")
    # The buffer ends as the stored reply does: its text, then an end marked cancelled.
    late = await open_socket(key)
    await late.send_json_to({"type": "resume", "request_id": seen[0]["request_id"], "after": 0})
    frames = await receive_until(late, "end")
    await late.disconnect()
    assert text(frames) == reply[1] and frames[-1]["done_reason"] == "cancelled"
    assert numbers(frames) == list(range(1, len(frames) + 1))


async def test_a_resumed_reply_can_be_cancelled_from_the_new_socket(ollama, user_key, grace):
    ollama.behaviour.reply_tokens = [f" t{i}" for i in range(500)]
    ollama.behaviour.token_interval_s = 0.02
    _, key = await user_key()
    first = await open_socket(key)
    await first.send_json_to({"type": "message", "content": "long"})
    seen = await frames_until_tokens(first, 2)
    await first.disconnect()
    second = await open_socket(key)
    await second.send_json_to({"type": "resume", "request_id": seen[0]["request_id"], "after": seen[-1]["n"]})
    await frames_until_tokens(second, 2)
    await second.send_json_to({"type": "cancel"})
    rest = await receive_until(second, "end", frame_timeout_s=10)
    await second.disconnect()
    assert rest[-1]["done_reason"] == "cancelled"
    await replay.drain_writes()
    await drain_background_writes()
    assert ollama.chat_requests()[-1].tokens_sent < 500
    assert (await stored())[1][2] == "partial"


async def test_an_sse_stream_cut_mid_reply_resumes_with_last_event_id(ollama, user_key, grace):
    from evaproject.asgi import application

    ollama.behaviour.reply_tokens = LONG
    ollama.behaviour.token_interval_s = 0.03
    _, key = await user_key()
    scope = {
        "type": "http", "http_version": "1.1", "method": "POST", "path": "/api/v1/chat/stream",
        "query_string": b"", "headers": _headers(key, {}),
    }
    stream = ApplicationCommunicator(application, scope)
    await stream.send_input({"type": "http.request", "body": json.dumps({"message": "long"}).encode()})
    assert (await stream.receive_output(timeout=10))["status"] == 200
    body = b""
    while body.count(b"event: token") < 3:
        body += (await stream.receive_output(timeout=10))["body"]
    await stream.send_input({"type": "http.disconnect"})  # the connection dropped
    await stream.wait(timeout=10)
    seen = [data for _, data in parse_sse(body)]
    resumed = await request(
        f"/api/v1/chat/stream/{seen[0]['request_id']}", key=key, method="GET", **{"last-event-id": str(seen[-1]["n"])}
    )
    assert resumed.status == 200 and resumed.headers["content-type"] == "text/event-stream"
    frames = seen + [data for _, data in resumed.events()]
    assert numbers(frames) == list(range(1, len(frames) + 1))
    assert text(frames) == "".join(LONG) and frames[-1]["type"] == "end"


async def test_without_redis_a_reply_is_kept_and_resumed_in_memory(ollama, user_key, grace):
    grace.REDIS_URL = ""  # the embedded default: one process, everything in its memory
    ollama.behaviour.reply_tokens = LONG
    ollama.behaviour.token_interval_s = 0.03
    _, key = await user_key()
    first = await open_socket(key)
    await first.send_json_to({"type": "message", "content": "long one"})
    seen = await frames_until_tokens(first, 3)
    await first.disconnect()
    request_id = seen[0]["request_id"]
    assert request_id in replay.replay_store().replies  # type: ignore[attr-defined]
    second = await open_socket(key)
    await second.send_json_to({"type": "resume", "request_id": request_id, "after": seen[-1]["n"]})
    rest = await receive_until(second, "end")
    await second.disconnect()
    frames = seen + rest
    assert numbers(frames) == list(range(1, len(frames) + 1))
    assert text(frames) == "".join(LONG)
