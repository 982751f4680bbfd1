"""accounts.layer_wait.receive_within on the real Redis channel layer: a receive that has waited
long enough is ended by a message on its channel, never cancelled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import channel_layers

from accounts.layer_wait import GAVE_UP, ending, receive_within


@pytest.fixture
async def layer() -> AsyncIterator[Any]:
    layer = channel_layers.make_backend("default")  # this test's own: its receive is bound to this loop
    yield layer
    await layer.close_pools()


async def test_a_message_in_time_is_returned(layer):
    channel = await layer.new_channel("wait")
    await layer.send(channel, {"type": "hello", "n": 1})
    assert await receive_within(layer, channel, 5) == {"type": "hello", "n": 1}


async def test_nothing_in_time_gives_none_and_leaves_no_receive_behind(layer):
    channel = await layer.new_channel("wait")
    assert await receive_within(layer, channel, 0.05) is None
    assert ending() == 0
    # the channel is usable again, and holds no leftover wake-up
    await layer.send(channel, {"type": "later"})
    assert await receive_within(layer, channel, 5) == {"type": "later"}


async def test_a_wake_up_left_over_from_an_earlier_wait_is_skipped(layer):
    channel = await layer.new_channel("wait")
    await layer.send(channel, {"type": GAVE_UP, "token": "an-earlier-wait"})  # as one a real message beat
    await layer.send(channel, {"type": "real"})
    assert await receive_within(layer, channel, 5) == {"type": "real"}
