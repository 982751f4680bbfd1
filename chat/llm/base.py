"""The small interface every LLM backend implements, and the errors it may raise.

A backend's `stream(messages)` is an async iterator of `Token` items followed by exactly one
`Done`. Vendor errors never leave a backend module: they become `BackendUnavailable` (raised
before any token: safe to fall back) or `StreamFailed` (raised after tokens have flowed).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Token:
    text: str


@dataclass(slots=True)
class Done:
    """The end of a stream, with what the upstream reported (milliseconds, token counts)."""

    done_reason: str = "stop"
    tokens_in: int | None = None
    tokens_out: int | None = None
    upstream_load_ms: float | None = None
    upstream_prompt_ms: float | None = None
    upstream_generation_ms: float | None = None
    upstream_queue_ms: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


Chunk = Token | Done
ChatMessages = list[dict[str, str]]


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """A request's own sampling settings (the OpenAI-compatible API's); None: the configured one."""

    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()


class LLMError(Exception):
    """Base of the errors a backend raises; `code` is the stable client-facing code."""

    code = "upstream_error"

    def __init__(self, message: str, *, backend: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.backend = backend
        self.status = status


class BackendUnavailable(LLMError):
    """The backend cannot answer this request (refused, 404 model, 503 busy, 5xx, timeout)."""


class StreamFailed(LLMError):
    """The backend failed after the stream had started."""


class NoBackendAvailable(LLMError):
    code = "no_backend"


class LLMBackend(Protocol):
    name: str

    @property
    def model(self) -> str: ...

    def is_configured(self) -> bool: ...

    def stream(
        self, messages: ChatMessages, options: GenerationOptions | None = None
    ) -> AsyncGenerator[Chunk, None]: ...
