"""`GET /api/v1/chat/stream/{request_id}`: resume a reply as Server-Sent Events (chat/replay.py).

An SSE client that lost its stream (a `POST /api/v1/chat/stream`, or one of its aliases) names
the reply by the `request_id` of its `start` event and the last event it got by the standard
`Last-Event-ID` header (each event's `id:` is the frame's number `n`); `?after=N` does the same
for clients that cannot set headers, and neither means from the first frame. The answer is the
same `text/event-stream`: the missed events, then the rest live, then `end` (or `error`).

Failures before the stream are JSON errors as on `POST /api/v1/chat/stream`: 401/403 (the same
credentials and chat scope; a session cookie only from an allowed Origin), 404 `not_found` (not
the caller's reply, unknown, or expired), 410 `resume_unavailable` (frames no longer kept), 422
`invalid_resume` (a bad or too large `Last-Event-ID`), 405 for another method. A failure while
following (`resume_interrupted`, `resume_unavailable`) is an `error` event, and the body ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from asgiref.typing import HTTPRequestEvent
from channels.exceptions import StopConsumer

from accounts.errors import EvaError, error_body
from chat import replay
from chat.sse import SSE_HEADERS, AsgiApp, ChatStreamConsumer, SessionUnlessKey, sse_event

logger = logging.getLogger("chat.replay_sse")


def resume_after(scope: Mapping[str, Any]) -> object:
    """The client's last frame: `Last-Event-ID`, else `?after=`, else 0 (replay.follow validates it)."""
    for name, value in scope.get("headers", ()):
        if name == b"last-event-id":
            return value.decode("latin-1").strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return query["after"][0] if "after" in query else 0


class ChatResumeConsumer(ChatStreamConsumer):
    """One resumed reply per request; credentials checked as for a new stream."""

    async def http_request(self, message: HTTPRequestEvent) -> None:
        if self.scope.get("method") != "GET":
            refusal = error_body(code="method_not_allowed", message="Use GET.")
            await self._send_json(405, refusal, [(b"allow", b"GET")])
            raise StopConsumer()
        if not message.get("more_body", False) and self.task is None:
            self.task = asyncio.create_task(self._resume())

    async def _resume(self) -> None:
        scope: Mapping[str, Any] = self.scope
        request_id = scope["url_route"]["kwargs"]["request_id"]
        try:
            user_id, _ = await self._caller()
            following = await replay.follow(request_id=request_id, owner_id=user_id, after=resume_after(scope))
        except EvaError as exc:
            await self._send_error(exc)
            return
        except Exception:
            logger.exception("resume of %s failed before its start", request_id)
            await self._send_json(500, error_body(code="internal_error", message="Something went wrong on our side."))
            return
        await self.send_headers(status=200, headers=SSE_HEADERS)

        async def send_frame(frame: dict[str, Any]) -> None:
            await self.send_body(sse_event(frame), more_body=True)

        await following.relay(send_frame)
        await self.send_body(b"")


def chat_resume_app() -> AsgiApp:
    """The consumer as an ASGI app; the session cookie is read for key-less requests."""
    return SessionUnlessKey(ChatResumeConsumer.as_asgi(session_auth=True))
