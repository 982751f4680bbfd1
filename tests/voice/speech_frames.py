"""Reading a spoken reply off /ws/chat: text frames, then speech that may go on after `end`."""

from __future__ import annotations

import json
from typing import Any

from channels.testing import WebsocketCommunicator

SPEECH_CLOSERS = ("speech_end", "speech_stopped")


async def receive_spoken_reply(communicator: WebsocketCommunicator, *, frame_timeout_s: float) -> list[Any]:
    """A spoken reply's frames up to its speech's closing frame (speech_end, speech_stopped or an
    error): JSON frames as dicts, audio as bytes."""
    frames: list[Any] = []
    while True:
        output = await communicator.receive_output(timeout=frame_timeout_s)
        if output.get("bytes") is not None:
            frames.append(output["bytes"])
            continue
        frame = json.loads(output["text"])
        frames.append(frame)
        if frame["type"] in SPEECH_CLOSERS or frame["type"] == "error":
            return frames


def json_frames(frames: list[Any], kind: str | None = None) -> list[dict[str, Any]]:
    return [frame for frame in frames if isinstance(frame, dict) and (kind is None or frame["type"] == kind)]
