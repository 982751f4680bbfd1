"""One chat completion: OpenAI's request checked and turned into the backends' messages, the
configured backends (and their fallback) asked, and the request's metric row (channel `openai`).

Stateless, as OpenAI's API is: the client sends the whole conversation each time, and nothing is
stored in EVA's conversations. When the client sends no system (or developer) message, EVA's
LLM_SYSTEM_PROMPT goes first, as for EVA's own chat.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from accounts.errors import EvaError
from accounts.ratelimit import rate_limit_check
from accounts.validation import text_validate
from chat.llm.base import ChatMessages, Done, GenerationOptions, NoBackendAvailable, StreamFailed, Token
from chat.llm.fallback import FallbackProvider, StreamStart, default_provider
from metrics.models import Channel, Status
from metrics.recorder import DropReason, metric_dropped, record_metric
from openai_api.errors import OpenAIError
from openai_api.schemas import ChatCompletionIn

# The model that stands for "the configured backends, with their fallback" (GET /v1/models).
EVA_MODEL = "eva"
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def chat_models() -> list[str]:
    """The chat model ids a client may ask for: `eva`, and each configured backend's model."""
    from chat.llm.fallback import default_provider as provider

    ids = [EVA_MODEL]
    for backend in provider().backends:
        if backend.is_configured() and backend.model not in ids:
            ids.append(backend.model)
    return ids


def messages_from(body: ChatCompletionIn) -> ChatMessages:
    """OpenAI's messages as the backends take them; OpenAIError (400) for what EVA cannot take."""
    messages: ChatMessages = []
    for index, message in enumerate(body.messages):
        param = f"messages.[{index}]"
        role = _ROLES.get(message.role)
        if role is None:
            raise OpenAIError(
                f"Messages with role {message.role!r} are not supported (EVA has no tools).",
                code="unsupported_role",
                param=f"{param}.role",
            )
        if isinstance(message.content, list):
            if any(part.type != "text" or part.text is None for part in message.content):
                raise OpenAIError(
                    "Only text content parts are supported.", code="unsupported_content", param=f"{param}.content"
                )
            content = "".join(part.text or "" for part in message.content)
        else:
            content = message.content or ""
        if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
            raise OpenAIError(
                f"A message has {len(content)} characters; the limit is {settings.CHAT_MAX_MESSAGE_CHARS}.",
                code="message_too_long",
                param=f"{param}.content",
            )
        try:
            content = text_validate(content, field="A message")
        except EvaError as exc:
            raise OpenAIError(exc.message, code=exc.code, param=f"{param}.content") from None
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise OpenAIError("There is no user message with text.", code="empty_message", param="messages")
    if settings.LLM_SYSTEM_PROMPT and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": settings.LLM_SYSTEM_PROMPT})
    return messages


def options_from(body: ChatCompletionIn) -> GenerationOptions:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return GenerationOptions(
        max_tokens=body.max_completion_tokens or body.max_tokens, temperature=body.temperature, stop=stop
    )


@dataclass(frozen=True)
class CompletionRequest:
    user_id: int
    api_key_id: int | None
    messages: ChatMessages
    options: GenerationOptions


class Completion:
    """One completion's state; `tokens()` yields the reply's text pieces, then the fields are final."""

    def __init__(self, request: CompletionRequest, *, provider: FallbackProvider | None = None) -> None:
        self.request = request
        self.provider = provider or default_provider()
        self.request_id = str(uuid.uuid4())  # the metric row's (and X-Request-Id's)
        self.id = f"chatcmpl-{self.request_id}"
        self.created = int(time.time())
        self.received_at = time.perf_counter()
        self.backend = ""
        self.model = ""
        self.fell_back = False
        self.parts: list[str] = []
        self.ttft_ms: float | None = None
        self.done: Done | None = None
        self._recorded = False

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def finish_reason(self) -> str:
        return "length" if self.done is not None and self.done.done_reason == "length" else "stop"

    def usage(self) -> dict[str, int]:
        done = self.done or Done()
        prompt = done.tokens_in if done.tokens_in is not None else 0
        completion = done.tokens_out if done.tokens_out is not None else len(self.parts)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def start(self) -> AsyncGenerator[str, None]:
        """Count the request against the rate limits and ask the backends: the reply's token stream.

        Raises EvaError (429, 503) before the reply starts; StreamFailed after it has started.
        """
        request = self.request
        await rate_limit_check(user_id=request.user_id, api_key_id=request.api_key_id)
        stream = self.provider.stream(request.messages, request.options)
        try:
            start = await anext(stream)
        except NoBackendAvailable as exc:
            await stream.aclose()
            self.record(status=Status.ERROR, error_code=exc.code)
            raise EvaError(exc.message, code=exc.code, status=503) from None
        except BaseException:
            await stream.aclose()
            raise
        assert isinstance(start, StreamStart)
        self.backend, self.model, self.fell_back = start.backend, start.model, start.fell_back
        return self._tokens(stream)

    async def _tokens(self, stream: AsyncGenerator[Any, None]) -> AsyncGenerator[str, None]:
        try:
            async for chunk in stream:
                if isinstance(chunk, Token):
                    if self.ttft_ms is None:
                        self.ttft_ms = self._elapsed_ms()
                    self.parts.append(chunk.text)
                    yield chunk.text
                elif isinstance(chunk, Done):
                    self.done = chunk
        except StreamFailed:
            self.record(status=Status.ERROR, error_code="upstream_error")
            raise
        except BaseException:
            self.record(status=Status.CANCELLED, error_code="cancelled")
            raise
        finally:
            await stream.aclose()
        self.record(status=Status.FALLBACK if self.fell_back else Status.OK)

    def _elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.received_at) * 1000, 3)

    def record(self, *, status: str, error_code: str = "") -> None:
        """This request's metric row, once; a recorder failure is logged and counted, never raised."""
        if self._recorded:
            return
        self._recorded = True
        done = self.done or Done()
        fields: dict[str, Any] = dict(
            request_id=self.request_id,
            user_id=self.request.user_id,
            api_key_id=self.request.api_key_id,
            session_id="",
            channel=Channel.OPENAI,
            backend=self.backend,
            model=self.model,
            status=status,
            error_code=error_code,
            ttft_ms=self.ttft_ms,
            total_ms=self._elapsed_ms(),
            tokens_in=done.tokens_in,
            tokens_out=done.tokens_out if done.tokens_out is not None else len(self.parts),
            upstream_load_ms=done.upstream_load_ms,
            upstream_prompt_ms=done.upstream_prompt_ms,
            upstream_generation_ms=done.upstream_generation_ms,
            upstream_queue_ms=done.upstream_queue_ms,
        )
        try:
            record_metric(**fields)
        except Exception as exc:
            metric_dropped(fields=fields, reason=DropReason.RECORD_FAILED, error=exc)
