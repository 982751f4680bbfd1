"""Fallback across backends, in the configured order, only before the first token.

Rules (DESIGN.md): a backend that refuses the connection, answers 404 (model missing), 503
(busy) or another 5xx, or sends no first token within LLM_FIRST_TOKEN_DEADLINE_S is skipped
and the next one is tried. Once a token has been relayed, a failure ends the reply
(`StreamFailed`) and the caller keeps the partial text. Each backend has a circuit breaker:
after BREAKER_FAILURE_THRESHOLD failures in a row it is skipped for BREAKER_COOLDOWN_S, then
one request probes it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from django.conf import settings

from chat.llm.base import (
    BackendUnavailable,
    ChatMessages,
    Chunk,
    Done,
    GenerationOptions,
    LLMBackend,
    NoBackendAvailable,
)
from chat.llm.breaker import CircuitBreaker

logger = logging.getLogger("chat.llm.fallback")


@dataclass
class Attempt:
    backend: str
    model: str
    error: str


@dataclass
class StreamStart:
    """Emitted once, before the first token: who answers, who was tried and failed first, and
    who was passed over because its circuit breaker is open."""

    backend: str
    model: str
    failed_attempts: list[Attempt] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)

    @property
    def fell_back(self) -> bool:
        """Whether a backend ahead of this one failed now or is paused by its breaker (a backend left
        unconfigured on purpose does not count: the next one is then the primary)."""
        return bool(self.failed_attempts or self.paused)


class FallbackProvider:
    def __init__(self, backends: list[LLMBackend]) -> None:
        self.backends = backends
        self.breakers = {
            b.name: CircuitBreaker(settings.BREAKER_FAILURE_THRESHOLD, settings.BREAKER_COOLDOWN_S) for b in backends
        }

    def _deadline(self) -> float:
        return float(settings.LLM_FIRST_TOKEN_DEADLINE_S)

    async def stream(
        self, messages: ChatMessages, options: GenerationOptions | None = None
    ) -> AsyncGenerator[StreamStart | Chunk, None]:
        """Yield a StreamStart, then the chosen backend's Tokens and its Done."""
        attempts: list[Attempt] = []
        skipped: list[str] = []
        paused: list[str] = []
        for backend in self.backends:
            if not backend.is_configured():
                skipped.append(f"{backend.name} is not configured")
                continue
            breaker = self.breakers[backend.name]
            if not breaker.allow():
                retry_s = breaker.seconds_until_probe()
                skipped.append(f"{backend.name} is paused after repeated failures (retry in {retry_s:.0f} s)")
                paused.append(backend.name)
                continue
            iterator = backend.stream(messages, options) if options is not None else backend.stream(messages)
            try:
                # asyncio.timeout keeps the first read in this task (wait_for would start another).
                async with asyncio.timeout(self._deadline()):
                    first = await anext(iterator)
            except (BackendUnavailable, TimeoutError, StopAsyncIteration) as exc:
                await iterator.aclose()
                breaker.record_failure()
                if isinstance(exc, BackendUnavailable):
                    reason = exc.message
                else:
                    reason = f"no first token within {self._deadline():g} s"
                logger.warning("backend %s failed before the first token: %s", backend.name, reason)
                attempts.append(Attempt(backend.name, backend.model, reason))
                continue
            except BaseException:
                await iterator.aclose()
                breaker.release()
                raise
            breaker.record_success()
            yield StreamStart(backend=backend.name, model=backend.model, failed_attempts=attempts, paused=paused)
            try:
                yield first
                if not isinstance(first, Done):
                    async for chunk in iterator:
                        yield chunk
            finally:
                await iterator.aclose()
            return
        raise NoBackendAvailable(_no_backend_message(attempts, skipped))


def _no_backend_message(attempts: list[Attempt], skipped: list[str]) -> str:
    parts = [f"{a.backend}: {a.error}" for a in attempts] + skipped
    advice = []
    if any(a.backend == "ollama" for a in attempts) or not attempts:
        advice.append(f"start Ollama (`ollama serve`, `ollama pull {settings.OLLAMA_MODEL}`)")
    if not settings.GROQ_API_KEY:
        advice.append("or set GROQ_API_KEY for the cloud fallback")
    return "No language model is available. " + "; ".join(parts) + (". To fix: " + " ".join(advice) if advice else "")


_provider: FallbackProvider | None = None


def default_provider() -> FallbackProvider:
    """The process-wide provider (its breakers must be shared by every request)."""
    global _provider
    if _provider is None or [b.name for b in _provider.backends] != settings.LLM_BACKENDS:
        from chat.llm.groq import GroqBackend
        from chat.llm.ollama import OllamaBackend

        known: dict[str, LLMBackend] = {"ollama": OllamaBackend(), "groq": GroqBackend()}
        _provider = FallbackProvider([known[name] for name in settings.LLM_BACKENDS])
    return _provider


def reset_default_provider() -> None:
    """Forget breaker state (tests, settings change)."""
    global _provider
    _provider = None
