"""accounts.aio.within: a deadline that holds even when the awaited work misses its cancellation."""

from __future__ import annotations

import asyncio

import pytest

from accounts.aio import strays, within


async def test_a_result_in_time_is_returned():
    assert await within(asyncio.sleep(0, result="ok"), 5, what="work") == "ok"


async def test_work_past_its_time_is_cancelled_and_the_caller_gets_timeout_error():
    never = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        await within(work(), 0.05, what="work")
    assert cancelled.is_set() and strays() == 0


async def test_a_result_that_comes_as_the_work_is_cancelled_is_kept():
    async def work() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "came as it was cancelled"
        return "unreachable"

    assert await within(work(), 0.05, what="work") == "came as it was cancelled"


async def test_work_that_misses_its_cancellation_is_left_and_forgotten_once_it_ends(caplog):
    let_go = asyncio.Event()
    started: list[asyncio.Task[None]] = []

    async def deaf() -> None:
        task = asyncio.current_task()
        assert task is not None
        started.append(task)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await let_go.wait()
            raise

    with pytest.raises(TimeoutError):
        await within(deaf(), 0.05, what="the deaf work", grace_s=0.05)
    assert strays() == 1 and not started[0].done()
    assert "the deaf work did not end when cancelled" in caplog.text
    let_go.set()
    with pytest.raises(asyncio.CancelledError):
        await started[0]
    assert strays() == 0


async def test_cancelling_the_caller_cancels_the_work_without_waiting_for_it():
    inside = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> None:
        inside.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    caller = asyncio.create_task(within(work(), 60, what="work"))
    await inside.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(cancelled.wait(), 5)
