"""The OpenAI-compatible endpoints as Channels HTTP consumers (streamed answers, as chat/sse.py).

Each request: the body gathered (over DATA_UPLOAD_MAX_MEMORY_SIZE: 413), the API key checked
(`Authorization: Bearer`, or X-API-Key; no session cookie: these are for programs), then the
response runs in a task this consumer owns, so that `http.disconnect` (the client went away)
cancels it: the upstream request closes, and the metric row says cancelled. Errors before the
response starts are OpenAI's error body with its status; a failure in the middle of a streamed
completion is a `data: {"error": ...}` event, which the SDKs raise as APIError.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from contextlib import aclosing
from typing import Any

import orjson
import pydantic
from asgiref.typing import HTTPDisconnectEvent, HTTPRequestEvent
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from accounts.api_keys import api_key_authenticate_async
from accounts.errors import AuthenticationFailed, EvaError, RateLimited
from accounts.models import Scope
from accounts.ratelimit import current_rate_limit, rate_limit_headers
from accounts.ws_auth import presented_api_key
from chat.llm.base import StreamFailed
from openai_api.completion import Completion, CompletionRequest, chat_models, messages_from, options_from
from openai_api.errors import OpenAIError, error_body, error_status
from openai_api.schemas import ChatCompletionIn, SpeechIn
from openai_api.speech import FORMATS, SPEECH_MODELS, Speech, speech_request

logger = logging.getLogger("openai_api")

Headers = Sequence[tuple[bytes, bytes]]
JSON_HEADERS = [(b"content-type", b"application/json"), (b"x-content-type-options", b"nosniff")]
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"x-content-type-options", b"nosniff"),
]


def invalid_body(exc: pydantic.ValidationError) -> OpenAIError:
    """The first of pydantic's errors as OpenAI names a field: `messages.[0].content`."""
    first = exc.errors(include_url=False)[0]
    param = ".".join(f"[{part}]" if isinstance(part, int) else str(part) for part in first.get("loc", ())) or None
    message = f"{param}: {first.get('msg', 'invalid')}" if param else str(first.get("msg", "invalid"))
    return OpenAIError(message, code="invalid_value", param=param)


def parse_body(body: bytes, model: type[pydantic.BaseModel]) -> Any:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise OpenAIError("The body is not valid JSON.", code="invalid_json") from None
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise invalid_body(exc) from None


class OpenAIConsumer(AsyncHttpConsumer):
    """Body, credentials, the response's task and OpenAI's errors; subclasses `respond`."""

    # No channel-layer messages come here: no layer channel (and no Redis reads) for it.
    channel_layer_alias = "openai-needs-no-layer"
    method: str | None = "POST"
    key_scope: str | None = Scope.CHAT

    def __init__(self) -> None:
        super().__init__()
        self.received = 0
        self.task: asyncio.Task[None] | None = None
        self.headers_sent = False

    async def http_request(self, message: HTTPRequestEvent) -> None:
        if self.method is not None and self.scope.get("method") != self.method:
            refusal = OpenAIError(f"Use {self.method}.", code="method_not_allowed", status=405)
            await self.send_error(refusal, [(b"allow", self.method.encode())])
            raise StopConsumer()
        chunk = message.get("body") or b""
        self.received += len(chunk)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and self.received > limit:
            too_large = f"The request body is limited to {limit} bytes."
            await self.send_error(OpenAIError(too_large, code="request_too_large", status=413))
            raise StopConsumer()
        self.body.append(chunk)
        if not message.get("more_body", False):
            self.task = asyncio.create_task(self._run(b"".join(self.body)))

    async def http_disconnect(self, message: HTTPDisconnectEvent) -> None:
        task = self.task
        if task is not None:
            if not task.done():
                task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                logger.error("OpenAI-compatible request failed", exc_info=task.exception())
        await super().http_disconnect(message)  # raises StopConsumer

    async def _run(self, body: bytes) -> None:
        try:
            user_id, api_key_id = await self._caller()
            await self.respond(body, user_id=user_id, api_key_id=api_key_id)
        except EvaError as exc:
            if self.headers_sent:
                logger.warning("OpenAI-compatible response failed after its start: %s", exc.message)
                await self.send_body(b"")
            else:
                await self.send_error(exc)
        except Exception:
            logger.exception("OpenAI-compatible request failed")
            if self.headers_sent:
                await self.send_body(b"")
            else:
                failure = OpenAIError("Something went wrong on our side.", code="internal_error", status=500)
                await self.send_error(failure)

    async def _caller(self) -> tuple[int, int | None]:
        raw_key = presented_api_key(self.scope)
        if raw_key is None:
            raise AuthenticationFailed(
                "Send an EVA API key as the bearer token (Authorization: Bearer eva_...).", code="missing_api_key"
            )
        key = await api_key_authenticate_async(raw_key=raw_key, scope=self.key_scope)
        return int(key.owner_id), int(key.pk)

    async def respond(self, body: bytes, *, user_id: int, api_key_id: int | None) -> None:
        raise NotImplementedError

    # --- answers ---------------------------------------------------------------------------
    async def start_response(self, status: int, headers: Headers) -> None:
        self.headers_sent = True
        await self.send_headers(status=status, headers=[*headers, *_rate_limit_headers()])

    async def send_json(self, status: int, body: dict[str, Any], headers: Headers = ()) -> None:
        self.headers_sent = True
        all_headers = [*JSON_HEADERS, *headers, *_rate_limit_headers()]
        await self.send_response(status, orjson.dumps(body), headers=all_headers)

    async def send_error(self, exc: EvaError, headers: Headers = ()) -> None:
        extra = list(headers)
        if isinstance(exc, RateLimited):
            extra.append((b"retry-after", str(exc.retry_after).encode()))
        if exc.status == 401:
            extra.append((b"www-authenticate", b'Bearer realm="eva"'))
        await self.send_json(error_status(exc), error_body(exc), extra)


def _rate_limit_headers() -> list[tuple[bytes, bytes]]:
    """X-RateLimit-* of this request's check (accounts.ratelimit), as ASGI headers; none before it."""
    headers = rate_limit_headers(current_rate_limit())
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


class ChatCompletionsConsumer(OpenAIConsumer):
    """POST /v1/chat/completions: JSON, or with `stream: true` `data:` chunks and `data: [DONE]`."""

    async def respond(self, body: bytes, *, user_id: int, api_key_id: int | None) -> None:
        payload: ChatCompletionIn = parse_body(body, ChatCompletionIn)
        if payload.model not in chat_models():
            raise OpenAIError(
                f"The model {payload.model!r} does not exist; see GET /v1/models.",
                code="model_not_found",
                status=404,
                param="model",
            )
        request = CompletionRequest(
            user_id=user_id, api_key_id=api_key_id, messages=messages_from(payload), options=options_from(payload)
        )
        completion = Completion(request)
        tokens = await completion.start()  # EvaError (429, 503) before anything is sent
        async with aclosing(tokens):
            if payload.stream:
                include_usage = bool(payload.stream_options and payload.stream_options.include_usage)
                await self._stream(completion, tokens, include_usage=include_usage)
            else:
                await self._whole(completion, tokens)

    async def _whole(self, completion: Completion, tokens: Any) -> None:
        try:
            async for _ in tokens:
                pass
        except StreamFailed as exc:
            raise OpenAIError(
                f"The model stopped in the middle of the reply ({exc.message}).", code="upstream_error", status=502
            ) from None
        await self.send_json(
            200,
            {
                "id": completion.id,
                "object": "chat.completion",
                "created": completion.created,
                "model": completion.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": completion.text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": completion.finish_reason,
                    }
                ],
                "usage": completion.usage(),
                "system_fingerprint": None,
            },
            _eva_headers(completion),
        )

    async def _stream(self, completion: Completion, tokens: Any, *, include_usage: bool) -> None:
        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            data: dict[str, Any] = {
                "id": completion.id,
                "object": "chat.completion.chunk",
                "created": completion.created,
                "model": completion.model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            if include_usage:
                data["usage"] = None
            return b"data: " + orjson.dumps(data) + b"\n\n"

        await self.start_response(200, [*SSE_HEADERS, *_eva_headers(completion)])
        await self.send_body(chunk({"role": "assistant", "content": ""}), more_body=True)
        try:
            async for text in tokens:
                await self.send_body(chunk({"content": text}), more_body=True)
        except StreamFailed as exc:
            failure = OpenAIError(
                f"The model stopped in the middle of the reply ({exc.message}).", code="upstream_error", status=502
            )
            await self.send_body(b"data: " + orjson.dumps(error_body(failure)) + b"\n\n")
            return
        await self.send_body(chunk({}, completion.finish_reason), more_body=True)
        if include_usage:
            usage = {
                "id": completion.id,
                "object": "chat.completion.chunk",
                "created": completion.created,
                "model": completion.model,
                "system_fingerprint": None,
                "choices": [],
                "usage": completion.usage(),
            }
            await self.send_body(b"data: " + orjson.dumps(usage) + b"\n\n", more_body=True)
        await self.send_body(b"data: [DONE]\n\n")


def _eva_headers(completion: Completion) -> list[tuple[bytes, bytes]]:
    return [(b"x-request-id", completion.request_id.encode()), (b"x-eva-backend", completion.backend.encode())]


class ModelsConsumer(OpenAIConsumer):
    """GET /v1/models and GET /v1/models/{id}: the chat models (`eva`: the configured backends with
    their fallback; each backend's model) and the speech models; any valid key may list them."""

    method = "GET"
    key_scope = None

    async def respond(self, body: bytes, *, user_id: int, api_key_id: int | None) -> None:
        listed = [_model(name) for name in [*chat_models(), *SPEECH_MODELS]]
        route: Any = self.scope.get("url_route") or {}
        wanted = route.get("kwargs", {}).get("model_id")
        if wanted is None:
            await self.send_json(200, {"object": "list", "data": listed})
            return
        for model in listed:
            if model["id"] == wanted:
                await self.send_json(200, model)
                return
        raise OpenAIError(f"The model {wanted!r} does not exist.", code="model_not_found", status=404, param="model")


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "eva"}


class SpeechConsumer(OpenAIConsumer):
    """POST /v1/audio/speech: wav or pcm, streamed piece by piece (openai_api.speech)."""

    key_scope = Scope.TTS

    async def respond(self, body: bytes, *, user_id: int, api_key_id: int | None) -> None:
        payload: SpeechIn = parse_body(body, SpeechIn)
        request = speech_request(payload, user_id=user_id, api_key_id=api_key_id)
        speech = Speech(request)
        audio = await speech.start()  # EvaError (429, 503) before anything is sent
        headers = [
            (b"content-type", FORMATS[request.response_format].encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-request-id", request.request_id.encode()),
            (b"x-sample-rate", str(speech.sample_rate).encode()),
            (b"x-voice", request.voice.encode()),
        ]
        await self.start_response(200, headers)
        async with aclosing(audio):
            async for data in audio:
                await self.send_body(data, more_body=True)
        await self.send_body(b"")


class UnknownPathConsumer(OpenAIConsumer):
    """Any other path under /v1/: OpenAI's 404, so that a client learns what EVA does not serve."""

    method = None

    async def _caller(self) -> tuple[int, int | None]:
        return 0, None  # nothing is served here: no credential to check

    async def respond(self, body: bytes, *, user_id: int, api_key_id: int | None) -> None:
        path = self.scope.get("path", "")
        raise OpenAIError(
            f"EVA does not serve {path}: it offers /v1/chat/completions, /v1/models and /v1/audio/speech.",
            code="unknown_url",
            status=404,
        )
