"""One chat request from message to reply, shared by the WebSocket, REST and SSE edges.

`ChatGeneration.frames()` yields the protocol's frames as dicts: `start`, `token`..., then
`end`, or an `error` frame when the backend fails after the start. Failures before the start
(rate limit, no backend) raise EvaError instead, so that HTTP can answer with a status code;
bad input never gets here: a `ChatRequest` is valid by construction, and the edges build it.
Closing the iterator early (cancel, disconnect) stores the partial reply and records the
request as cancelled; the upstream HTTP request is closed with it. Any other exception (the
reply's write failing, a bug) escapes to the edge, which answers `internal_error`, after the
request is recorded as error/internal_error: every request past the rate limit gets one metric
row, and a failing recorder never stops the stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from django.utils import timezone

from accounts.errors import EvaError, InvalidInput
from accounts.ratelimit import rate_limit_check
from accounts.validation import text_validate
from chat.llm.base import Chunk, Done, NoBackendAvailable, StreamFailed, Token
from chat.llm.fallback import FallbackProvider, StreamStart, default_provider
from chat.models import ChatMessage
from chat.services import llm_messages, session_id_validate, title_from
from chat.store import chat_store
from metrics.models import Status
from metrics.recorder import DropReason, metric_dropped, record_metric

logger = logging.getLogger("chat.generation")

_background: set[asyncio.Task[Any]] = set()


class Speech(Protocol):
    """What generation needs from a speaker (voice.speech_stream.SpeechStream)."""

    first_audio_ms: float | None
    speech_total_ms: float | None

    def feed(self, text: str) -> None: ...

    def text_done(self) -> None: ...

    def when_done(self, callback: Callable[[], None]) -> None: ...

    def cancel(self) -> None: ...


def content_validate(content: object) -> str:
    """A user message: a non-empty string of at most CHAT_MAX_MESSAGE_CHARS storable characters."""
    if not isinstance(content, str):
        raise InvalidInput("content must be a string.", code="invalid_message")
    if not content.strip():
        raise InvalidInput("The message is empty.", code="empty_message")
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise InvalidInput(
            f"The message has {len(content)} characters; the limit is {settings.CHAT_MAX_MESSAGE_CHARS}.",
            code="message_too_long",
        )
    return text_validate(content, field="The message")


@dataclass(frozen=True)
class ChatRequest:
    """One chat message, valid by construction: each edge (WebSocket, SSE, REST) builds it from
    what the client sent and answers the InvalidInput it raises; the generation trusts it."""

    user_id: int
    api_key_id: int | None
    session_id: str
    content: str
    channel: str  # ws | rest | sse

    def __post_init__(self) -> None:
        content_validate(self.content)
        session_id_validate(self.session_id)


class ChatGeneration:
    """State of one reply; readable by the edge after the stream ends or is cancelled."""

    def __init__(
        self,
        request: ChatRequest,
        *,
        provider: FallbackProvider | None = None,
        speech: Speech | None = None,
        admission: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.request = request
        # A check the edge wants passed before the model is asked (the socket's credential still
        # standing): it runs beside the history read and the rate limit, and its EvaError refuses
        # the request as the rate limit's does.
        self.admission = admission
        self.request_id = str(uuid.uuid4())
        self.provider = provider or default_provider()
        self.speech = speech
        self.received_at = time.perf_counter()
        self.received_at_wall = timezone.now()
        self._user_stored: asyncio.Future[int] | None = None
        self.backend = ""
        self.model = ""
        self.parts: list[str] = []
        self.ttft_ms: float | None = None
        self.total_ms: float | None = None
        self.token_count = 0
        self.done: Done | None = None
        self.fell_back = False
        self.finished = False
        self._recorded = False
        self._reply_write_started = False
        # Why a generation closed before its end is recorded: the client's cancel or departure,
        # or the server's restart (chat.drain sets `server_restarting`).
        self.stop_code = "cancelled"

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def _elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.received_at) * 1000, 3)

    def end_frame(self, done_reason: str) -> dict[str, Any]:
        tokens = self.done.tokens_out if self.done and self.done.tokens_out is not None else self.token_count
        return {
            "type": "end",
            "request_id": self.request_id,
            "session_id": self.request.session_id,
            "backend": self.backend,
            "model": self.model,
            "ttft_ms": self.ttft_ms,
            "total_ms": self.total_ms if self.total_ms is not None else self._elapsed_ms(),
            "tokens": tokens,
            "done_reason": done_reason,
        }

    async def frames(self) -> AsyncGenerator[dict[str, Any], None]:
        request = self.request
        # The rate limit and the history read go together (the history in a task of its own, the
        # rate limit, usually the slower, in this one: no gather, one loop trip less before the
        # model is asked); the user's message is stored while the model starts (the reply's
        # write waits for it, so the order in the database holds).
        store = chat_store()
        history_read = asyncio.ensure_future(
            store.history(owner_id=request.user_id, session_id=request.session_id, turns=settings.LLM_HISTORY_TURNS)
        )
        admitted = asyncio.ensure_future(self.admission()) if self.admission is not None else None
        try:
            await rate_limit_check(user_id=request.user_id, api_key_id=request.api_key_id)
            if admitted is not None:
                await admitted
        except EvaError as exc:
            # A refused request (rate limited, credentials gone) leaves its row too: a client
            # error on the dashboard, apart from failures (metrics.classes).
            self._record(status=Status.ERROR, error_code=exc.code)
            history_read.add_done_callback(_retrieve)  # refused: the read's outcome no longer matters
            if admitted is not None:
                admitted.add_done_callback(_retrieve)
            raise
        except BaseException:
            history_read.cancel()
            if admitted is not None:
                admitted.cancel()
            raise
        stream: AsyncGenerator[StreamStart | Chunk, None] | None = None
        try:
            stream = await self._ask(history_read)
            self._user_stored = asyncio.ensure_future(
                store.turn_begin(
                    owner_id=request.user_id,
                    session_id=request.session_id,
                    content=request.content,
                    request_id=self.request_id,
                    at=self.received_at_wall,
                )
            )
            try:
                start = await anext(stream)
            except NoBackendAvailable as exc:
                await self._user_stored
                self.finished = True
                self.total_ms = self._elapsed_ms()
                # Stored as a failed reply, so that a reload still shows it failed (and why); the
                # client is told no_backend even if that write fails (the conversation deleted).
                try:
                    await self._store_reply(status=ChatMessage.Status.ERROR, done_reason=exc.code)
                except Exception:
                    logger.warning("a failed reply could not be stored", exc_info=True)
                self._record(status=Status.ERROR, error_code=exc.code)
                raise EvaError(exc.message, code=exc.code, status=503) from None
            assert isinstance(start, StreamStart)
            self.backend, self.model, self.fell_back = start.backend, start.model, start.fell_back
            yield {
                "type": "start",
                "request_id": self.request_id,
                "session_id": request.session_id,
                "backend": self.backend,
                "model": self.model,
            }
            try:
                async for chunk in stream:
                    if isinstance(chunk, Token):
                        if self.ttft_ms is None:
                            self.ttft_ms = self._elapsed_ms()
                        self.parts.append(chunk.text)
                        self.token_count += 1
                        if self.speech is not None:
                            self.speech.feed(chunk.text)
                        yield {"type": "token", "content": chunk.text}
                    elif isinstance(chunk, Done):
                        self.done = chunk
            except StreamFailed as exc:
                if self.speech is not None:
                    self.speech.cancel()  # no audio after the error frame
                status = ChatMessage.Status.PARTIAL if self.parts else ChatMessage.Status.ERROR
                self.total_ms = self._elapsed_ms()
                self.finished = True
                await self._store_reply(status=status, done_reason="upstream_error")
                self._record(status=Status.ERROR, error_code="upstream_error")
                yield {
                    "type": "error",
                    "code": "upstream_error",
                    "message": f"The model stopped in the middle of the reply ({exc.message})."
                    " The partial reply was kept.",
                    "request_id": self.request_id,
                }
                return
            self.total_ms = self._elapsed_ms()
            self.finished = True
            await self._store_reply(
                status=ChatMessage.Status.COMPLETE, done_reason=self.done.done_reason if self.done else "stop"
            )
            outcome = Status.FALLBACK if self.fell_back else Status.OK
            if self.speech is not None:
                # Speech goes on after `end` (a stream of its own); the metric row, with the text's
                # total and the speech's timings, is recorded when it is over.
                self.speech.text_done()
                self._recorded = True
                self.speech.when_done(lambda: self._record(status=outcome))
            else:
                self._record(status=outcome)
            yield self.end_frame(self.done.done_reason if self.done else "stop")
        except Exception:
            # Unforeseen (the reply's write failing, a bug): the edge answers internal_error, and
            # the request still gets its metric row.
            self._fail()
            raise
        finally:
            if not self.finished:  # cancelled by the client, or the connection went away
                self.finished = True
                self.total_ms = self._elapsed_ms()
                if self.speech is not None:
                    self.speech.cancel()
                self._record(status=Status.CANCELLED, error_code=self.stop_code)
                if self.parts:
                    _in_background(self._store_reply(status=ChatMessage.Status.PARTIAL, done_reason="cancelled"))
            if stream is not None:
                await stream.aclose()  # and with it the upstream request
            if self._user_stored is not None and not self.parts:
                # Nothing to store after it, but the user's message must still land.
                _in_background(_await(self._user_stored))

    def _fail(self) -> None:
        """End a generation that an unexpected exception stopped: status error, internal_error."""
        if self.speech is not None:
            self.speech.cancel()
        if self.total_ms is None:
            self.total_ms = self._elapsed_ms()
        if self.parts and not self._reply_write_started and self._user_stored is not None:
            _in_background(self._store_reply(status=ChatMessage.Status.PARTIAL, done_reason="internal_error"))
        self.finished = True
        if not self._recorded:
            self._record(status=Status.ERROR, error_code="internal_error")

    async def _ask(
        self, history_read: asyncio.Future[list[dict[str, str]]]
    ) -> AsyncGenerator[StreamStart | Chunk, None]:
        """Ask the model with the conversation's history once it is read: the model's stream."""
        history = await history_read
        return self.provider.stream(llm_messages(history=history, content=self.request.content))

    async def _store_reply(self, *, status: str, done_reason: str = "") -> None:
        assert self._user_stored is not None
        self._reply_write_started = True
        await chat_store().turn_finish(
            session_pk=await self._user_stored,
            content=self.text,
            status=status,
            backend=self.backend,
            model=self.model,
            request_id=self.request_id,
            ttft_ms=self.ttft_ms,
            total_ms=self.total_ms,
            title=title_from(self.request.content),
            done_reason=done_reason,
        )

    def _record(self, *, status: str, error_code: str = "") -> None:
        """Queue this request's metric row, once; a recorder failure is logged and counted, never raised."""
        self._recorded = True
        done = self.done or Done()
        fields: dict[str, Any] = dict(
            request_id=self.request_id,
            user_id=self.request.user_id,
            api_key_id=self.request.api_key_id,
            session_id=self.request.session_id,
            channel=self.request.channel,
            backend=self.backend,
            model=self.model,
            status=status,
            error_code=error_code,
            ttft_ms=self.ttft_ms,
            total_ms=self.total_ms if self.total_ms is not None else self._elapsed_ms(),
            time_to_first_audio_ms=getattr(self.speech, "first_audio_ms", None),
            speech_total_ms=getattr(self.speech, "speech_total_ms", None),
            tokens_in=done.tokens_in,
            tokens_out=done.tokens_out if done.tokens_out is not None else self.token_count,
            upstream_load_ms=done.upstream_load_ms,
            upstream_prompt_ms=done.upstream_prompt_ms,
            upstream_generation_ms=done.upstream_generation_ms,
            upstream_queue_ms=done.upstream_queue_ms,
        )
        try:
            record_metric(**fields)
        except Exception as exc:  # the reply matters more than its metric: the stream goes on
            metric_dropped(fields=fields, reason=DropReason.RECORD_FAILED, error=exc)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("a refused request's history read or admission check failed", exc_info=task.exception())


async def _await(future: asyncio.Future[Any]) -> None:
    await future


def _in_background(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("background chat write failed", exc_info=task.exception())


async def drain_background_writes() -> None:
    """Wait for writes started after a cancel (tests, shutdown)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)
