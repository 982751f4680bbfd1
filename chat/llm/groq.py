"""Groq backend through the official SDK (AsyncGroq, OpenAI-style SSE). The only module importing groq.

An error in the middle of a stream arrives as groq.APIError from the SDK's iterator; usage
and Groq's timings (queue_time, prompt_time, completion_time, in seconds) come in the final
chunk's `x_groq.usage` (and `usage` with stream_options include_usage).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator
from typing import Any

import groq
from django.conf import settings
from groq.types.chat import ChatCompletionMessageParam

from accounts.redaction import redact
from chat.llm.base import (
    BackendUnavailable,
    ChatMessages,
    Chunk,
    Done,
    GenerationOptions,
    StreamFailed,
    Token,
)

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[tuple[Any, ...], groq.AsyncGroq]] = (
    weakref.WeakKeyDictionary()
)


def _client() -> groq.AsyncGroq:
    loop = asyncio.get_running_loop()
    config = (settings.GROQ_API_KEY, settings.GROQ_BASE_URL, settings.GROQ_TIMEOUT_S, settings.GROQ_MAX_RETRIES)
    cached = _clients.get(loop)
    if cached is None or cached[0] != config:
        client = groq.AsyncGroq(
            api_key=settings.GROQ_API_KEY,
            base_url=settings.GROQ_BASE_URL or None,
            timeout=settings.GROQ_TIMEOUT_S,
            max_retries=settings.GROQ_MAX_RETRIES,
        )
        _clients[loop] = (config, client)
        return client
    return cached[1]


def _ms(seconds: Any) -> float | None:
    return round(seconds * 1000, 3) if isinstance(seconds, int | float) else None


def _groq_messages(messages: ChatMessages) -> list[ChatCompletionMessageParam]:
    """The history in the SDK's typed form (EVA's roles: system, user, assistant)."""
    typed: list[ChatCompletionMessageParam] = []
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "system":
            typed.append({"role": "system", "content": content})
        elif role == "assistant":
            typed.append({"role": "assistant", "content": content})
        else:
            typed.append({"role": "user", "content": content})
    return typed


class GroqBackend:
    name = "groq"

    @property
    def model(self) -> str:
        return str(settings.GROQ_MODEL)

    def is_configured(self) -> bool:
        return bool(settings.GROQ_API_KEY)

    async def stream(
        self, messages: ChatMessages, options: GenerationOptions | None = None
    ) -> AsyncGenerator[Chunk, None]:
        options = options or GenerationOptions()
        started = False
        usage: Any = None
        finish_reason = "stop"
        stream = None
        try:
            stream = await _client().chat.completions.create(
                model=self.model,
                messages=_groq_messages(messages),
                stream=True,
                # This SDK version has no stream_options argument; the API accepts it in the body.
                extra_body={"stream_options": {"include_usage": True}},
                max_tokens=options.max_tokens if options.max_tokens is not None else settings.LLM_NUM_PREDICT,
                temperature=options.temperature if options.temperature is not None else settings.LLM_TEMPERATURE,
                stop=list(options.stop) if options.stop else groq.omit,
            )
            async for chunk in stream:
                x_groq = getattr(chunk, "x_groq", None)
                if x_groq is not None and x_groq.usage is not None:
                    usage = x_groq.usage
                elif chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        started = True
                        yield Token(choice.delta.content)
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
        except groq.APIStatusError as exc:
            raise self._failure(started, f"Groq answered {exc.status_code}: {exc.message}", exc.status_code) from None
        except groq.APIConnectionError as exc:  # includes APITimeoutError
            raise self._failure(started, f"Groq is not reachable ({type(exc).__name__})", None) from None
        except groq.APIError as exc:  # an error event in the middle of the stream
            raise self._failure(started, f"Groq reported an error: {exc.message}", None) from None
        finally:
            if stream is not None:
                await stream.close()
        yield Done(
            done_reason=finish_reason,
            tokens_in=getattr(usage, "prompt_tokens", None),
            tokens_out=getattr(usage, "completion_tokens", None),
            upstream_prompt_ms=_ms(getattr(usage, "prompt_time", None)),
            upstream_generation_ms=_ms(getattr(usage, "completion_time", None)),
            upstream_queue_ms=_ms(getattr(usage, "queue_time", None)),
        )

    def _failure(self, started: bool, message: str, status: int | None) -> BackendUnavailable | StreamFailed:
        cls = StreamFailed if started else BackendUnavailable
        # The SDK's messages can quote GROQ_BASE_URL or the key: neither may reach a client or a log.
        return cls(redact(message), backend=self.name, status=status)
