"""Writes RequestMetric rows off the hot path.

`record_metric` only puts the row on an in-process queue and returns; one background task per
event loop drains the queue and bulk-inserts. A token stream therefore never waits on the
database. The task lets a batch gather for METRICS_BATCH_WAIT_S (or until BATCH_SIZE rows) before
writing: under load one INSERT carries many requests instead of one transaction each (what that
saves: bench/RESULTS.md). `flush_metrics` writes what is queued at once and waits for it (tests,
shutdown). On Postgres the batch goes through the event loop's async pool (accounts.asyncdb),
elsewhere through the ORM in an executor thread; both write the same rows
(tests/test_db_parity.py). A batch that fails is tried once more (a dropped connection), then
row by row (a row the database refuses is lost alone; when the database refuses a row the whole
batch goes row by row at once). No row is lost without a trace: one that cannot be written is
logged at ERROR with its content (redacted) and counted in eva_metric_rows_dropped_total.
A batch's rows and their rollups (metrics.rollups) are written in one transaction: a batch
that fails, is retried or whose writer is killed counts in the rollups exactly as often as its
rows are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DataError, IntegrityError, close_old_connections, transaction

from accounts import asyncdb
from accounts.redaction import redact
from metrics import rollups
from metrics.models import RequestMetric
from metrics.prometheus import METRIC_ROWS_DROPPED

logger = logging.getLogger("metrics.recorder")

BATCH_SIZE = 200
_queues: dict[asyncio.AbstractEventLoop, asyncio.Queue[RequestMetric]] = {}
_writers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}
_wakes: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
_observers: list[Any] = []


def add_metric_observer(observer: Any) -> None:
    """Call `observer(metric)` for every recorded metric, before it is written (e.g. Prometheus)."""
    if observer not in _observers:
        _observers.append(observer)


def remove_metric_observer(observer: Any) -> None:
    """Stop calling `observer` (tests that watch for a row being recorded)."""
    if observer in _observers:
        _observers.remove(observer)


def _observed(metric: RequestMetric) -> RequestMetric:
    for observer in _observers:
        try:
            observer(metric)
        except Exception:
            logger.exception("metric observer %r failed", observer)
    return metric


def _insert(rows: list[RequestMetric]) -> None:
    close_old_connections()
    try:
        with transaction.atomic():  # the rows and their rollups commit together, or neither
            RequestMetric.objects.bulk_create(rows)
            rollups.apply_sync([rollups.raw_tuple(row) for row in rows])
    finally:
        close_old_connections()


_FIELDS = [f for f in RequestMetric._meta.concrete_fields if not f.primary_key]
_INSERT_SQL = (
    f"INSERT INTO {RequestMetric._meta.db_table} ({', '.join(str(f.column) for f in _FIELDS)}) "
    f"VALUES ({', '.join(['%s'] * len(_FIELDS))})"
)


async def _insert_async(rows: list[RequestMetric]) -> None:
    async with asyncdb.transaction() as conn:  # the rows and their rollups commit together, or neither
        await conn.cursor().executemany(_INSERT_SQL, [[getattr(row, f.attname) for f in _FIELDS] for row in rows])
        await rollups.apply_async(conn, [rollups.raw_tuple(row) for row in rows])


async def _write(rows: list[RequestMetric]) -> None:
    if asyncdb.async_db_enabled():
        await _insert_async(rows)
    else:
        await sync_to_async(_insert, thread_sensitive=False)(rows)


def _refused_a_row(exc: Exception) -> bool:
    """Whether the database refused a row (too long, a user deleted meanwhile), not the batch."""
    if isinstance(exc, DataError | IntegrityError):  # the ORM's
        return True
    if asyncdb.async_db_enabled():
        import psycopg

        return isinstance(exc, psycopg.DataError | psycopg.IntegrityError)
    return False


class DropReason(enum.StrEnum):
    """Why a metric row was lost (the `reason` label of eva_metric_rows_dropped_total)."""

    REFUSED = "refused"  # the database refused the row itself (too long, a user deleted meanwhile)
    WRITE_FAILED = "write_failed"  # the write failed (database unreachable) after the retries
    RECORD_FAILED = "record_failed"  # record_metric itself raised: the row was never queued


for _reason in DropReason:  # each series shown at 0 before the first loss
    METRIC_ROWS_DROPPED.labels(_reason.value)


def metric_dropped(*, fields: dict[str, Any], reason: DropReason, error: BaseException) -> None:
    """Leave a trace of a metric row that is lost: an ERROR line with its content, and the counter."""
    METRIC_ROWS_DROPPED.labels(reason.value).inc()
    content = redact(json.dumps(fields, default=str, sort_keys=True))
    logger.error(
        "request metric dropped (%s): %s: %s; row: %s", reason.value, type(error).__name__, redact(str(error)), content
    )


def _row_fields(row: RequestMetric) -> dict[str, Any]:
    return {f.attname: getattr(row, f.attname) for f in _FIELDS}


async def _write_batch(batch: list[RequestMetric]) -> None:
    """Write `batch`; never raises (a lost metric must never take the web process down)."""
    try:
        await _write(batch)
        return
    except Exception as exc:
        error: Exception = exc
    if not _refused_a_row(error):
        # A dropped connection or a failover: the same batch once more, on a fresh connection.
        logger.warning("could not write %d request metric(s), trying once more: %s", len(batch), redact(str(error)))
        try:
            await _write(batch)
            return
        except Exception as exc:
            error = exc
    if len(batch) == 1:
        _dropped(batch[0], error)
        return
    # The batch's insert was all or nothing: the rows again, each alone, so only a bad one is lost.
    for row in batch:
        try:
            await _write([row])
        except Exception as exc:
            _dropped(row, exc)


def _dropped(row: RequestMetric, error: Exception) -> None:
    reason = DropReason.REFUSED if _refused_a_row(error) else DropReason.WRITE_FAILED
    metric_dropped(fields=_row_fields(row), reason=reason, error=error)


async def _writer(queue: asyncio.Queue[RequestMetric], wake: asyncio.Event) -> None:
    # Runs while there is something to write, then ends: no task is left pending on a loop
    # that closes (asgiref's short-lived loops), and the next record_metric starts a new one.
    closing = False
    while not queue.empty():
        if queue.qsize() < BATCH_SIZE and not wake.is_set() and not closing:
            try:
                async with asyncio.timeout(settings.METRICS_BATCH_WAIT_S):
                    await wake.wait()  # a full batch or flush_metrics() ends the wait early
            except TimeoutError:
                pass
            except asyncio.CancelledError:
                closing = True  # the loop is shutting down: write what is queued, then end
        wake.clear()
        batch = [queue.get_nowait()]
        while not queue.empty() and len(batch) < BATCH_SIZE:
            batch.append(queue.get_nowait())
        try:
            await _write_batch(batch)
        finally:
            for _ in batch:
                queue.task_done()
    if closing:
        raise asyncio.CancelledError


def _enqueue(metric: RequestMetric) -> None:
    loop = asyncio.get_running_loop()
    for stale in [known for known in _queues if known.is_closed()]:
        _queues.pop(stale, None)
        _writers.pop(stale, None)
        _wakes.pop(stale, None)
    queue = _queues.setdefault(loop, asyncio.Queue())
    wake = _wakes.setdefault(loop, asyncio.Event())
    queue.put_nowait(metric)
    if queue.qsize() >= BATCH_SIZE:
        wake.set()
    writer = _writers.get(loop)
    if writer is None or writer.done():
        _writers[loop] = loop.create_task(_writer(queue, wake), name="metrics-writer")


def record_metric(**fields: Any) -> RequestMetric:
    """Queue one RequestMetric (fields as on the model); returns the unsaved row at once."""
    metric = _observed(RequestMetric(**fields))
    _enqueue(metric)
    return metric


async def flush_metrics() -> None:
    """Write what is queued on this loop now, and wait until it has been written."""
    loop = asyncio.get_running_loop()
    queue = _queues.get(loop)
    if queue is not None:
        _wakes[loop].set()
        await queue.join()  # rows queued meanwhile wait at most METRICS_BATCH_WAIT_S more


def record_metric_sync(**fields: Any) -> RequestMetric:
    """For code outside an event loop (management commands, sync views): writes at once."""
    metric = _observed(RequestMetric(**fields))
    with transaction.atomic():
        metric.save()
        rollups.apply_sync([rollups.raw_tuple(metric)])
    return metric


async def stop_metric_writer() -> None:
    """Write what is queued, then stop this loop's writer task (server shutdown, tests)."""
    loop = asyncio.get_running_loop()
    await flush_metrics()
    writer = _writers.pop(loop, None)
    _queues.pop(loop, None)
    _wakes.pop(loop, None)
    if writer is not None and not writer.done():
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
