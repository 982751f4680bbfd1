"""tests/polling.py: the value once ready (after a write to the database, or a poll); at the deadline, an
error naming what and the last value."""

from __future__ import annotations

import asyncio
import re
import threading

import pytest
from asgiref.sync import sync_to_async

from tests.polling import aeventually, awritten, eventually, written


def answers(*values):
    """A check that answers `values` one call after the other (then the last one again)."""
    pending = list(values)

    def check():
        return pending.pop(0) if len(pending) > 1 else pending[0]

    return check


def test_the_first_truthy_value_is_returned():
    assert eventually(answers(None, [], ("hello", "complete")), "the reply", every_s=0) == ("hello", "complete")


def test_ready_decides_and_the_value_is_what_check_gave():
    check = answers([1], [1, 2], [1, 2, 3])
    assert eventually(check, "two rows", ready=lambda rows: len(rows) >= 2, every_s=0) == [1, 2]


def test_at_the_deadline_the_error_names_what_and_the_last_value():
    with pytest.raises(AssertionError, match=re.escape("not so within 0.05 s: the stop stored (last value: [1])")):
        eventually(answers([], [1]), "the stop stored", within_s=0.05, ready=lambda rows: len(rows) > 1, every_s=0.01)


async def test_the_async_variant_runs_a_plain_check_in_a_thread_and_awaits_a_coroutine_one():
    answer, threads = answers(0, "", "row"), []

    def plain():
        threads.append(threading.current_thread())
        return answer()

    assert await aeventually(plain, "a plain check", every_s=0) == "row"
    assert len(threads) == 3 and threading.current_thread() not in threads  # not on the event loop's thread
    assert await aeventually(sync_to_async(answers(None, 7)), "a coroutine check", every_s=0) == 7
    with pytest.raises(AssertionError, match=re.escape("not so within 0.05 s: nothing (last value: None)")):
        await aeventually(answers(None), "nothing", within_s=0.05, every_s=0.01)


# --- written / awritten: woken by the database's notices of writes, not by a clock -------------


def metric(request_id: str):
    from metrics.models import RequestMetric

    return RequestMetric.objects.filter(request_id=request_id).first()


def write_metric_elsewhere(request_id: str) -> threading.Thread:
    """Another connection (as a live server's) writes a metric row, in a thread of its own."""
    from django.db import connection

    from metrics.models import RequestMetric

    def write() -> None:
        try:
            RequestMetric.objects.create(request_id=request_id, channel="ws", status="ok", total_ms=1.0)
        finally:
            connection.close()

    thread = threading.Thread(target=write)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_written_asks_again_when_another_connection_writes_a_watched_table():
    asked: list[object] = []

    def check():
        row = metric("w1")
        if not asked:
            writer = write_metric_elsewhere("w1")  # only once the listener is up and the first ask saw nothing
            asked.append(writer)
        asked.append(row)
        return row

    row = written(check, "the row written elsewhere", within_s=30)
    assert row.request_id == "w1" and asked[1] is None  # the first ask found nothing; a notice woke the next
    asked[0].join()


@pytest.mark.django_db(transaction=True)
async def test_awritten_asks_again_when_another_connection_writes_and_fails_at_the_deadline_otherwise():
    writers: list[threading.Thread] = []

    def check():
        row = metric("w2")
        if not writers:
            writers.append(write_metric_elsewhere("w2"))
        return row

    row = await awritten(check, "the row written elsewhere", within_s=30)
    assert row.request_id == "w2"
    await asyncio.to_thread(writers[0].join)
    with pytest.raises(AssertionError, match=re.escape("not so within 0.2 s: a row never written (last value: None)")):
        await awritten(lambda: metric("never"), "a row never written", within_s=0.2)


@pytest.mark.django_db(transaction=True)
def test_the_watched_tables_notify_on_each_write_statement():
    import psycopg
    from django.db import connection

    from tests.polling import WRITES, _conninfo, install_write_notices, watched_tables

    with psycopg.connect(**_conninfo(), autocommit=True) as listener:
        install_write_notices(listener)
        install_write_notices(listener)  # once is enough: the second does nothing
        listener.execute(f"LISTEN {WRITES}")
        write_metric_elsewhere("w3").join()
        notices = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
    assert notices == ["metrics_requestmetric"] and "metrics_requestmetric" in watched_tables()
    assert connection.vendor == "postgresql"
