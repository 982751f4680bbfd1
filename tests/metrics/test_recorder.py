"""record_metric: queued off the request path, then written in batches (async pool on Postgres, ORM elsewhere)."""

from __future__ import annotations

import asyncio

import pytest
from django.utils import timezone

from metrics.models import RequestMetric
from metrics.recorder import flush_metrics, record_metric

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = dict(
    channel="ws", backend="ollama", model="phi3:mini", status="ok", session_id="s", ttft_ms=12.5, total_ms=80.0,
    tokens_in=7, tokens_out=20, upstream_load_ms=1.2, upstream_prompt_ms=3.4, upstream_generation_ms=56.7,
)


@pytest.mark.parametrize("async_db", [True, False], ids=["async-pool", "orm"])
async def test_queued_metrics_are_written_with_every_field(settings, async_db):
    settings.DATABASE_ASYNC = async_db
    before = timezone.now()
    queued = [record_metric(request_id=f"r{i}", **FIELDS) for i in range(250)]  # more than one batch
    await flush_metrics()
    assert await RequestMetric.objects.acount() == 250
    row = await RequestMetric.objects.aget(request_id="r7")
    for name, expected in FIELDS.items():
        assert getattr(row, name) == expected, name
    assert (row.user_id, row.api_key_id, row.time_to_first_audio_ms, row.error_code) == (None, None, None, "")
    assert row.created_at == queued[7].created_at and row.created_at >= before


@pytest.mark.parametrize("async_db", [True, False], ids=["async-pool", "orm"])
async def test_a_row_the_database_refuses_is_lost_alone(settings, async_db, caplog):
    settings.DATABASE_ASYNC = async_db
    record_metric(request_id="before", **FIELDS)
    record_metric(request_id="too long", **{**FIELDS, "model": "m" * 101})  # the column holds 100
    record_metric(request_id="after", **FIELDS)
    await flush_metrics()
    stored = [r async for r in RequestMetric.objects.order_by("request_id").values_list("request_id", flat=True)]
    assert stored == ["after", "before"]
    assert [r.getMessage() for r in caplog.records if r.name == "metrics.recorder"] == [
        "could not write the request metric of request 'too long'"
    ]


async def test_rows_gather_into_one_insert_until_the_wait_ends_or_a_flush(settings, monkeypatch):
    import metrics.recorder as recorder

    settings.METRICS_BATCH_WAIT_S = 5.0
    batches: list[int] = []
    real_insert = recorder._insert_async

    async def counting_insert(rows):
        batches.append(len(rows))
        await real_insert(rows)

    monkeypatch.setattr(recorder, "_insert_async", counting_insert)
    for i in range(3):
        record_metric(request_id=f"g{i}", **FIELDS)
        await asyncio.sleep(0.05)  # requests arriving one after the other
    assert batches == [] and await RequestMetric.objects.acount() == 0  # still gathering
    await flush_metrics()  # does not wait the 5 s out
    assert batches == [3] and await RequestMetric.objects.acount() == 3


async def test_a_full_batch_is_written_without_waiting(settings, monkeypatch):
    import metrics.recorder as recorder

    settings.METRICS_BATCH_WAIT_S = 30.0
    written = asyncio.Event()
    real_insert = recorder._insert_async

    async def signalling_insert(rows):
        await real_insert(rows)
        written.set()

    monkeypatch.setattr(recorder, "_insert_async", signalling_insert)
    for i in range(recorder.BATCH_SIZE):
        record_metric(request_id=f"f{i}", **FIELDS)
    await asyncio.wait_for(written.wait(), 10)  # not the 30 s of METRICS_BATCH_WAIT_S
    assert await RequestMetric.objects.acount() == recorder.BATCH_SIZE


def test_rows_queued_on_a_loop_that_shuts_down_are_still_written(settings):
    # asgiref runs async views of sync callers on short-lived loops (asyncio.run), which cancel
    # leftover tasks as they close: the writer, cancelled while rows gather, writes them first.
    settings.METRICS_BATCH_WAIT_S = 30.0

    async def one_request() -> None:
        record_metric(request_id="short-lived", **FIELDS)

    async def written() -> int:
        count = await RequestMetric.objects.filter(request_id="short-lived").acount()
        await close_async_pool()
        return count

    from accounts.asyncdb import close_async_pool

    asyncio.run(one_request())  # ends at once: asyncio.run cancels the waiting writer
    assert asyncio.run(written()) == 1
