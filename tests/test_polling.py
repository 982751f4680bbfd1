"""tests/polling.py: the value once ready; at the deadline, an error naming what and the last value."""

from __future__ import annotations

import re
import threading

import pytest
from asgiref.sync import sync_to_async

from tests.polling import aeventually, eventually


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
