"""Helpers to open /ws/chat through the real ASGI application (routing, auth middleware)."""

from __future__ import annotations

import json
from typing import Any

from channels.testing import WebsocketCommunicator
from django.conf import settings


def ws_with_key(raw_key: str, *, path: str = "/ws/chat") -> WebsocketCommunicator:
    from evaproject.asgi import application

    return WebsocketCommunicator(application, path, headers=[(b"x-api-key", raw_key.encode())])


def ws_with_session(session_key: str, *, origin: str | None = "http://localhost:8000") -> WebsocketCommunicator:
    from evaproject.asgi import application

    # A browser sends the Host it addressed: the Origin check compares it with the Origin.
    headers: list[tuple[bytes, bytes]] = [
        (b"host", b"localhost:8000"),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_key}".encode()),
    ]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return WebsocketCommunicator(application, "/ws/chat", headers=headers)


async def receive_until(
    communicator: WebsocketCommunicator, frame_type: str, *, frame_timeout_s: float = 10
) -> list[dict[str, Any]]:
    """Collect JSON frames up to and including the first of `frame_type`, waiting at most `frame_timeout_s` for each."""
    frames: list[dict[str, Any]] = []
    while True:
        frame = await communicator.receive_json_from(timeout=frame_timeout_s)
        frames.append(frame)
        if frame.get("type") == frame_type:
            return frames


async def receive_reply_with_audio(communicator: WebsocketCommunicator, *, frame_timeout_s: float) -> list[Any]:
    """A spoken reply's frames up to its `end` or `error`: JSON frames as dicts, audio as bytes."""
    frames: list[Any] = []
    while True:
        output = await communicator.receive_output(timeout=frame_timeout_s)
        if output.get("bytes") is not None:
            frames.append(output["bytes"])
            continue
        frame = json.loads(output["text"])
        frames.append(frame)
        if frame["type"] in ("end", "error"):
            return frames
