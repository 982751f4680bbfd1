"""Chat replies as Server-Sent Events, served by a Channels consumer instead of Django.

`POST /api/v1/chat/stream` takes the JSON body of `POST /api/v1/chat` (`message`, `session_id`;
`stream` is implied) and answers `text/event-stream`: `event: start|token|end|error` with
`data:` the WebSocket's frame as JSON. Every stream ends with `end` or `error`: a failure after
the start (the model stopping: `upstream_error`; anything else, such as the reply's write:
`internal_error`) is an `error` event, and the body ends.

Failures before the start are JSON errors in the REST API's shape (`accounts.errors.error_body`)
with a status code: 400 `bad_request` (not JSON), 405 (not POST), 413 `request_too_large` (a body
over DATA_UPLOAD_MAX_MEMORY_SIZE), 422 (`invalid_request` with per-field `errors` from the REST
schema `ChatIn`, `empty_message`, `message_too_long`, `invalid_session_id`,
`invalid_text_characters`), 401/403 (credentials, scope, Origin), 429 `rate_limited` with Retry-After, 503 `no_backend`.

Aliases, routed here without a redirect (chat/routing.py): `POST /api/v1/chat` with
`Accept: text/event-stream`, or with `"stream": true` in its body, and the same on the legacy
`POST /chat` (API key only, as there). `StreamSwitch` sits on those URLs: it reads a POST's body
(the Accept header alone decides when present), then hands the request, body replayed, either to
this consumer or to Django, which answers JSON. A body over the limit comes here for its 413.

Auth: an API key (`X-API-Key` or `Authorization: Bearer`) with the chat scope; or, when no key is
sent, the browser's session cookie (Channels' AuthMiddlewareStack, applied only then), accepted
only from an allowed Origin (`accounts.ws_auth.origin_allowed`, as for WebSockets): browsers send
Origin with every POST, so the check stands in for Django's CSRF token.

A consumer handles one ASGI message at a time, so the response runs in a task this consumer owns:
`http.disconnect` (the client went away, or, as ASGI servers send once the response is complete,
the end) cancels the task if it still runs, which closes the generation and its upstream request
to the model, and stops the consumer; a reply that had started goes on instead for REPLAY_GRACE_S,
unsent, for a resume (`GET /api/v1/chat/stream/{request_id}`: chat/replay.py, chat/replay_sse.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Protocol, cast

import orjson
import pydantic
from asgiref.typing import (
    ASGIReceiveCallable,
    ASGIReceiveEvent,
    ASGISendCallable,
    HTTPDisconnectEvent,
    HTTPRequestEvent,
)
from channels.auth import AuthMiddlewareStack
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from accounts.api_keys import api_key_authenticate_bounded
from accounts.errors import AuthenticationFailed, EvaError, InvalidInput, PermissionDenied, RateLimited, error_body
from accounts.models import Scope
from accounts.ratelimit import current_rate_limit, rate_limit_headers
from accounts.ws_auth import origin_allowed, presented_api_key
from chat import drain, replay
from chat.api import ChatIn
from chat.generation import ChatGeneration, ChatRequest

logger = logging.getLogger("chat.sse")

Headers = Sequence[tuple[bytes, bytes]]


class AsgiApp(Protocol):
    """An ASGI 3 application: Django's handler, Channels' consumers and middleware, the ones here."""

    # Loosely typed: each of them declares its scope and messages its own way.
    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[Any]: ...


SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
    (b"x-content-type-options", b"nosniff"),
]
JSON_HEADERS = [(b"content-type", b"application/json"), (b"x-content-type-options", b"nosniff")]
_STREAM_FLAG = pydantic.TypeAdapter(bool)  # the same lax booleans as ChatIn.stream


def sse_event(frame: dict[str, Any]) -> bytes:
    """One frame as a Server-Sent Event named after its type; a reply's numbered frame has its `id:`."""
    if "n" in frame:  # chat/replay.py: a client that lost the stream resumes after its Last-Event-ID
        return b"id: %d\nevent: %s\ndata: %s\n\n" % (frame["n"], frame["type"].encode(), orjson.dumps(frame))
    return b"event: %s\ndata: %s\n\n" % (frame["type"].encode(), orjson.dumps(frame))


def accepts_event_stream(scope: Mapping[str, Any]) -> bool:
    """Whether the request's Accept header asks for text/event-stream."""
    return any(name == b"accept" and b"text/event-stream" in value for name, value in scope.get("headers", ()))


def _asks_stream(body: bytes) -> bool:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(data, dict) or "stream" not in data:
        return False
    try:
        return bool(_STREAM_FLAG.validate_python(data["stream"]))
    except pydantic.ValidationError:
        return False  # Django's schema answers the 422


def _replayed(body: bytes, receive: ASGIReceiveCallable, *, more_body: bool = False) -> ASGIReceiveCallable:
    """`receive` for an app downstream of one that already read `body`: that first, then the rest."""
    pending = True

    async def replay() -> ASGIReceiveEvent:
        nonlocal pending
        if pending:
            pending = False
            first: HTTPRequestEvent = {"type": "http.request", "body": body, "more_body": more_body}
            return first
        return await receive()

    return replay


class StreamSwitch:
    """A chat URL that streams when asked to: a POST with Accept: text/event-stream or with
    `"stream": true` in its JSON body goes to `stream`, anything else to `other` (Django)."""

    def __init__(self, *, stream: AsgiApp, other: AsgiApp) -> None:
        self.stream = stream
        self.other = other

    async def __call__(self, scope: Mapping[str, Any], receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.other(scope, receive, send)
            return
        if accepts_event_stream(scope):
            await self.stream(scope, receive, send)
            return
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # http.disconnect: the client left before its body arrived
            chunk = message.get("body") or b""
            chunks.append(chunk)
            size += len(chunk)
            more = bool(message.get("more_body", False))
            if limit is not None and size > limit:
                # Too large either way: the consumer answers 413 without reading the rest.
                await self.stream(scope, _replayed(b"".join(chunks), receive, more_body=more), send)
                return
            if not more:
                break
        body = b"".join(chunks)
        app = self.stream if _asks_stream(body) else self.other
        await app(scope, _replayed(body, receive), send)


class SessionUnlessKey:
    """The session cookie's user (Channels' AuthMiddlewareStack) only for requests without an
    API key: a key is checked by the consumer, with no session lookup."""

    def __init__(self, inner: AsgiApp) -> None:
        self.inner = inner
        # Channels' stack around an ASGI 3 app is an ASGI 3 app (its stubs allow ASGI 2 too).
        self.with_session = cast(AsgiApp, AuthMiddlewareStack(inner))

    async def __call__(self, scope: Mapping[str, Any], receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if presented_api_key(scope) is None:
            await self.with_session(scope, receive, send)
        else:
            await self.inner(scope, receive, send)


class _InvalidBody(InvalidInput):
    """The body does not fit ChatIn: 422 with per-field errors, named as the REST API names them."""

    def __init__(self, exc: pydantic.ValidationError) -> None:
        # The REST view's parameter is `payload`: its errors read payload.message and so on.
        self.errors = [
            {"field": ".".join(["payload", *(str(part) for part in err.get("loc", ()))]), "message": err.get("msg", "")}
            for err in exc.errors(include_url=False)
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in self.errors) or "The request is not valid."
        super().__init__(summary, code="invalid_request")


def _payload(body: bytes) -> ChatIn:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise EvaError("Cannot parse request body", code="bad_request", status=400) from None
    try:
        return ChatIn.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _InvalidBody(exc) from None


class ChatStreamConsumer(AsyncHttpConsumer):
    """One streamed chat reply per request (see the module's docstring)."""

    # No channel-layer messages come to this consumer: no layer channel (and no Redis reads) for it.
    channel_layer_alias = "chat-streams-need-no-layer"

    def __init__(self, *, session_auth: bool = True) -> None:
        super().__init__()
        self.session_auth = session_auth
        self.received = 0
        self.task: asyncio.Task[None] | None = None
        self.generation: ChatGeneration | None = None
        self.streaming = False  # the 200 and its headers went out
        self.gone = False  # the client went away: a detached reply goes on without sending (chat/replay.py)

    # --- ASGI messages -------------------------------------------------------------------
    async def http_request(self, message: HTTPRequestEvent) -> None:
        """Gather the body, then start the response in a task of its own."""
        if self.scope.get("method") != "POST":
            refusal = error_body(code="method_not_allowed", message="Use POST.")
            await self._send_json(405, refusal, [(b"allow", b"POST")])
            raise StopConsumer()
        chunk = message.get("body") or b""
        self.received += len(chunk)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and self.received > limit:
            await self._send_json(
                413, error_body(code="request_too_large", message=f"The request body is limited to {limit} bytes.")
            )
            raise StopConsumer()
        self.body.append(chunk)
        if not message.get("more_body", False):
            self.task = asyncio.create_task(self._respond(b"".join(self.body)))
            drain.stream_opened(self)
            self.task.add_done_callback(lambda _: drain.stream_closed(self))

    async def http_disconnect(self, message: HTTPDisconnectEvent) -> None:
        """The client went away, or the response is complete: stop the stream if it still runs."""
        task = self.task
        self.gone = True
        if task is not None and replay.detach(task):
            # The reply goes on for its grace, for a resume; the consumer ends now. The drain
            # (chat.drain) waits for the reply itself: replay.detach registered it.
            drain.stream_closed(self)
        elif task is not None:
            if not task.done():
                task.cancel()
            await asyncio.wait([task])  # the stream's cleanup (upstream closed, partial stored) first
            if not task.cancelled() and task.exception() is not None:
                logger.error("chat stream failed", exc_info=task.exception())
        await super().http_disconnect(message)  # raises StopConsumer

    async def drain(self, deadline: float) -> None:
        """The process is stopping (chat.drain): the reply may finish until `deadline`; one still
        running then is stopped, kept as partial, and its stream ends with `server_restarting`."""
        task = self.task
        if task is None or not await drain.finish_or_stop(task, self.generation, deadline):
            return
        if self.gone:
            return  # its client left during the drain: nobody to tell
        if self.streaming:
            error = {"type": "error", "code": drain.RESTARTING_CODE, "message": drain.RESTARTING_MESSAGE}
            if self.generation is not None:
                error["request_id"] = self.generation.request_id
            await self.send_body(sse_event(error), more_body=True)
            await self.send_body(b"")
        else:
            await self._send_json(503, error_body(code=drain.RESTARTING_CODE, message=drain.RESTARTING_MESSAGE))

    # --- the response --------------------------------------------------------------------
    async def _respond(self, body: bytes) -> None:
        try:
            generation = self.generation = ChatGeneration(await self._chat_request(body))
            frames = replay.numbered(generation)
            try:
                first = await anext(frames)  # raises EvaError (429/503) before anything is sent
            except BaseException:
                await frames.aclose()
                raise
        except EvaError as exc:
            await self._send_error(exc)
            return
        except Exception:
            logger.exception("chat stream request failed before its start")
            await self._send_json(500, error_body(code="internal_error", message="Something went wrong on our side."))
            return
        await self.send_headers(status=200, headers=[*SSE_HEADERS, *_rate_limit_headers()])
        self.streaming = True
        async with aclosing(frames):
            try:
                await self.send_body(sse_event(first), more_body=True)
                async for frame in frames:
                    if not self.gone:
                        await self.send_body(sse_event(frame), more_body=True)
            except Exception:
                logger.exception("chat stream %s failed", generation.request_id)
                error = {
                    "type": "error",
                    "code": "internal_error",
                    "message": "Something went wrong on our side.",
                    "request_id": generation.request_id,
                }
                await self.send_body(sse_event(error), more_body=True)
        if not self.gone:
            await self.send_body(b"")

    async def _chat_request(self, body: bytes) -> ChatRequest:
        user_id, api_key_id = await self._caller()
        payload = _payload(body)
        return ChatRequest(  # validates the message and the conversation's id (422)
            user_id=user_id,
            api_key_id=api_key_id,
            session_id=payload.session_id,
            content=payload.message,
            channel="sse",
        )

    async def _caller(self) -> tuple[int, int | None]:
        """Who asks, as (user id, API key id): by API key, else by the session from an allowed Origin."""
        raw_key = presented_api_key(self.scope)
        if raw_key is not None:
            key = await api_key_authenticate_bounded(raw_key=raw_key, scope=Scope.CHAT)
            return int(key.owner_id), int(key.pk)
        scope: Mapping[str, Any] = self.scope  # with the session middleware's `user`, when it ran
        user = scope.get("user") if self.session_auth else None
        if user is None or not user.is_authenticated:
            raise AuthenticationFailed("Authentication required: send X-API-Key or Authorization: Bearer, or log in.")
        if not origin_allowed(scope):
            raise PermissionDenied("This origin may not use a logged-in session here.", code="origin_not_allowed")
        return int(user.pk), None

    # --- JSON answers --------------------------------------------------------------------
    async def _send_error(self, exc: EvaError) -> None:
        extra: dict[str, object] = {"errors": exc.errors} if isinstance(exc, _InvalidBody) else {}
        headers: list[tuple[bytes, bytes]] = []
        if isinstance(exc, RateLimited):
            headers.append((b"retry-after", str(exc.retry_after).encode()))
        if exc.status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="eva"'))
        headers += _rate_limit_headers()
        await self._send_json(exc.status, error_body(code=exc.code, message=exc.message, **extra), headers)

    async def _send_json(self, status: int, body: dict[str, object], headers: Headers = ()) -> None:
        await self.send_response(status, orjson.dumps(body), headers=[*JSON_HEADERS, *headers])


def _rate_limit_headers() -> list[tuple[bytes, bytes]]:
    """X-RateLimit-* of this request's check (accounts.ratelimit), as ASGI headers; none before it."""
    headers = rate_limit_headers(current_rate_limit())
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


def chat_stream_app(*, session_auth: bool = True) -> AsgiApp:
    """The consumer as an ASGI app; with `session_auth`, the session cookie is read for key-less requests."""
    app: AsgiApp = ChatStreamConsumer.as_asgi(session_auth=session_auth)
    return SessionUnlessKey(app) if session_auth else app
