"""record_metric: queued off the request path, then written in batches (async pool on Postgres, ORM elsewhere)."""

from __future__ import annotations

import asyncio

import pytest
from django.utils import timezone

from metrics.models import RequestMetric
from metrics.recorder import flush_metrics, record_metric

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = dict(
    channel="ws",
    backend="ollama",
    model="phi3:mini",
    status="ok",
    session_id="s",
    ttft_ms=12.5,
    total_ms=80.0,
    tokens_in=7,
    tokens_out=20,
    upstream_load_ms=1.2,
    upstream_prompt_ms=3.4,
    upstream_generation_ms=56.7,
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
    before = dropped("refused")
    record_metric(request_id="before", **FIELDS)
    record_metric(request_id="too long", **{**FIELDS, "model": "m" * 101})  # the column holds 100
    record_metric(request_id="after", **FIELDS)
    await flush_metrics()
    stored = [r async for r in RequestMetric.objects.order_by("request_id").values_list("request_id", flat=True)]
    assert stored == ["after", "before"]
    logged = [r for r in caplog.records if r.name == "metrics.recorder"]
    assert [r.levelname for r in logged] == ["ERROR"]  # refused: no retry of the whole batch, no warning
    assert logged[0].getMessage().startswith("request metric dropped (refused): ")
    assert '"request_id": "too long"' in logged[0].getMessage()
    assert dropped("refused") == before + 1


def dropped(reason: str) -> float:
    from metrics.prometheus import PROCESS_REGISTRY

    value = PROCESS_REGISTRY.get_sample_value("eva_metric_rows_dropped_total", {"reason": reason})
    assert value is not None  # the series exists (at 0) before the first loss
    return value


async def test_a_batch_that_fails_twice_is_written_row_by_row_and_a_lost_row_is_logged_and_counted(
    monkeypatch, settings, caplog
):
    import psycopg

    import metrics.recorder as recorder

    settings.DATABASE_ASYNC = True
    settings.GROQ_API_KEY = "gsk_secret_in_a_row"  # a secret setting's value: redacted from the log line
    real_write = recorder._write
    attempts: list[list[str]] = []

    async def flaky_write(rows):
        attempts.append([row.request_id for row in rows])
        if len(rows) > 1 or rows[0].request_id == "doomed":
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        await real_write(rows)

    monkeypatch.setattr(recorder, "_write", flaky_write)
    before = dropped("write_failed")
    for request_id in ("a", "doomed", "b"):
        record_metric(request_id=request_id, **{**FIELDS, "session_id": "gsk_secret_in_a_row"})
    await flush_metrics()
    batch = ["a", "doomed", "b"]
    assert attempts == [batch, batch, ["a"], ["doomed"], ["b"]]  # once, once more, then each alone
    stored = [r async for r in RequestMetric.objects.order_by("request_id").values_list("request_id", flat=True)]
    assert stored == ["a", "b"]
    assert dropped("write_failed") == before + 1
    errors = [r.getMessage() for r in caplog.records if r.name == "metrics.recorder" and r.levelname == "ERROR"]
    assert len(errors) == 1
    assert errors[0].startswith("request metric dropped (write_failed): OperationalError: server closed")
    assert '"request_id": "doomed"' in errors[0] and '"status": "ok"' in errors[0]
    assert "gsk_secret_in_a_row" not in errors[0] and '"session_id": "***"' in errors[0]


async def test_a_batch_that_fails_once_is_written_whole_on_the_retry(monkeypatch, settings):
    import psycopg

    import metrics.recorder as recorder

    real_write = recorder._write
    attempts: list[int] = []

    async def fails_first(rows):
        attempts.append(len(rows))
        if len(attempts) == 1:
            raise psycopg.OperationalError("the connection dropped")
        await real_write(rows)

    monkeypatch.setattr(recorder, "_write", fails_first)
    before = dropped("write_failed")
    for i in range(3):
        record_metric(request_id=f"t{i}", **FIELDS)
    await flush_metrics()
    assert attempts == [3, 3] and await RequestMetric.objects.acount() == 3
    assert dropped("write_failed") == before


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
        for _ in range(3):
            await asyncio.sleep(0)  # requests arriving one after the other: the writer's task runs between
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
