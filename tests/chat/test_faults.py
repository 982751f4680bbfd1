"""Faults after the start (#16): every stream ends with `end` or `error`, and every request that
reached the generation leaves a metric row, or a logged and counted trace when even that fails.

The database error is psycopg's OperationalError, what a dead connection raises; the model is
the Ollama stand-in.
"""

from __future__ import annotations

import psycopg
import pytest

from chat.generation import drain_background_writes
from metrics.models import RequestMetric
from metrics.prometheus import PROCESS_REGISTRY
from metrics.recorder import flush_metrics
from tests.chat.test_sse import STREAM, request
from tests.chat.wsclient import receive_until, ws_with_key

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def reply_write_fails(monkeypatch):
    """The assistant's reply cannot be written: the store raises as on a dead connection."""
    from chat.store import chat_store

    async def dead_connection(self, **fields):
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(type(chat_store()), "turn_finish", dead_connection)


@pytest.fixture
def recorder_fails(monkeypatch):
    """record_metric itself raises (a bug, an observer's failure leaking out)."""
    import chat.generation

    def broken_record_metric(**fields):
        raise RuntimeError("the recorder is broken")

    monkeypatch.setattr(chat.generation, "record_metric", broken_record_metric)


def dropped(reason: str) -> float:
    value = PROCESS_REGISTRY.get_sample_value("eva_metric_rows_dropped_total", {"reason": reason})
    assert value is not None
    return value


async def metric_of(request_id: str) -> RequestMetric:
    await drain_background_writes()
    await flush_metrics()
    return await RequestMetric.objects.aget(request_id=request_id)


async def test_a_failing_reply_write_over_ws_is_a_last_error_frame_and_an_error_row(
    ollama, user_key, reply_write_fails
):
    _, key = await user_key()
    ws = ws_with_key(key)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "message", "content": "un deux"})
    frames = await receive_until(ws, "error")
    assert [f["type"] for f in frames] == ["start", "token", "token", "token", "error"]
    assert frames[-1]["code"] == "internal_error" and frames[-1]["request_id"] == frames[0]["request_id"]
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from(timeout=10) == {"type": "pong"}  # still open, and nothing after the error
    await ws.disconnect()
    metric = await metric_of(frames[0]["request_id"])
    assert (metric.channel, metric.status, metric.error_code) == ("ws", "error", "internal_error")
    assert (metric.backend, metric.tokens_out) == ("ollama", 3) and metric.ttft_ms is not None


async def test_a_failing_reply_write_over_sse_is_a_last_error_event_and_an_error_row(
    ollama, user_key, reply_write_fails
):
    _, key = await user_key()
    reply = await request(STREAM, {"message": "un deux"}, key=key)
    events = reply.events()
    assert reply.status == 200 and [name for name, _ in events] == ["start", "token", "token", "token", "error"]
    assert events[-1][1]["code"] == "internal_error"
    metric = await metric_of(events[0][1]["request_id"])
    assert (metric.channel, metric.status, metric.error_code) == ("sse", "error", "internal_error")


async def test_a_failing_write_after_an_upstream_error_is_recorded_as_internal_error(
    ollama, user_key, reply_write_fails
):
    ollama.behaviour.mode = "error_mid_stream"
    _, key = await user_key()
    ws = ws_with_key(key)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "message", "content": "a b c d"})
    frames = await receive_until(ws, "error")
    await ws.disconnect()
    assert frames[-1]["code"] == "internal_error"  # the partial could not be kept: not upstream_error
    metric = await metric_of(frames[0]["request_id"])
    assert (metric.status, metric.error_code) == ("error", "internal_error")


async def test_a_failing_recorder_never_breaks_a_ws_stream(ollama, user_key, recorder_fails, caplog):
    before = dropped("record_failed")
    _, key = await user_key()
    ws = ws_with_key(key)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "message", "content": "un deux"})
    frames = await receive_until(ws, "end")
    await ws.disconnect()
    assert [f["type"] for f in frames] == ["start", "token", "token", "token", "end"]
    assert dropped("record_failed") == before + 1
    lost = [r.getMessage() for r in caplog.records if r.name == "metrics.recorder" and r.levelname == "ERROR"]
    assert len(lost) == 1 and lost[0].startswith("request metric dropped (record_failed): RuntimeError")
    assert f'"request_id": "{frames[0]["request_id"]}"' in lost[0]


async def test_a_failing_recorder_never_breaks_an_sse_stream(ollama, user_key, recorder_fails):
    before = dropped("record_failed")
    _, key = await user_key()
    reply = await request(STREAM, {"message": "un deux"}, key=key)
    assert [name for name, _ in reply.events()] == ["start", "token", "token", "token", "end"]
    assert dropped("record_failed") == before + 1
