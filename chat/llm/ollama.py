"""Ollama backend: POST /api/chat with stream=true, NDJSON out. The only module using httpx for Ollama.

The shared httpx.AsyncClient sends through aiohttp (httpx-aiohttp's transport, as the Groq and
OpenAI SDKs offer): its C parser and asyncio-native connections cost less CPU per relayed token
than httpcore's pure-Python HTTP/1.1 (measured in bench/RESULTS.md).

Ollama's stream is one JSON object per line: `{"message": {"content": ...}, "done": false}`
for each piece, then a `done: true` object that may still carry content and reports
load_duration, prompt_eval_count, prompt_eval_duration, eval_count and eval_duration in
nanoseconds. An `{"error": ...}` line can arrive in the middle of a 200 stream.
Closing the response (our task cancelled) closes the connection, which makes Ollama stop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import socket
import threading
import weakref
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import httpx
import orjson
from django.conf import settings
from httpx_aiohttp import AiohttpTransport

from accounts.redaction import redact, redact_url
from chat.llm.base import (
    BackendUnavailable,
    ChatMessages,
    Chunk,
    Done,
    GenerationOptions,
    StreamFailed,
    Token,
)

logger = logging.getLogger("chat.llm.ollama")

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def shared_client() -> httpx.AsyncClient:
    """One pooled client per event loop (a server has one loop; tests have many)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        client = httpx.AsyncClient(transport=AiohttpTransport(limits=limits, trust_env=False), trust_env=False)
        _clients[loop] = client
    return client


async def close_shared_client() -> None:
    """Close this loop's client and its connections (tests, shutdown)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def _os_reason(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (nothing listens on that port)"
    if isinstance(error, socket.gaierror):
        return "host name not found"
    return f"cannot connect ({error.strerror or type(error).__name__})"


def _connect_failure(exc: httpx.TransportError) -> str | None:
    """Why no connection could be made, or None when the failure came after connecting."""
    cause = exc.__cause__
    # httpx-aiohttp maps every aiohttp connection error to httpx.ConnectTimeout (a refused
    # port, and a server that hangs up mid-reply, too): the aiohttp error under it tells.
    if isinstance(cause, aiohttp.ClientConnectorError):
        return _os_reason(cause.os_error)
    if isinstance(cause, aiohttp.ClientError) and not isinstance(cause, aiohttp.ConnectionTimeoutError):
        return None
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {settings.OLLAMA_CONNECT_TIMEOUT_S:g} s"
    if isinstance(exc, httpx.ConnectError):
        # httpcore over anyio: OSError("All connection attempts failed") over the real error.
        errors = [error for error in _chain(exc) if isinstance(error, OSError)]
        known = [error for error in errors if isinstance(error, ConnectionRefusedError | socket.gaierror)]
        return _os_reason((known or errors)[0]) if errors else "cannot connect"
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    error: BaseException | None = exc
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _timed_out(exc: httpx.TransportError) -> bool:
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return isinstance(cause, aiohttp.ServerTimeoutError)
    return isinstance(exc, httpx.TimeoutException)


def _describe(exc: httpx.TransportError, *, started: bool) -> str:
    """A message for a transport failure, naming the URL without credentials."""
    where = redact_url(str(settings.OLLAMA_URL))
    why = None if started else _connect_failure(exc)
    if why is not None:
        return f"Ollama is not reachable at {where}: {why}; start it with `ollama serve`"
    if _timed_out(exc):
        return f"Ollama at {where} stopped answering (no data within the timeout)"
    what = "reply" if started else "request"
    return f"Ollama at {where} broke off the {what} ({type(exc.__cause__ or exc).__name__})"


_JSON = {"Content-Type": "application/json"}


@functools.lru_cache(maxsize=8)
def _endpoint(base: str, path: str) -> tuple[httpx.URL, httpx.Auth]:
    """The URL without userinfo, and its credentials as basic auth (httpx.Auth(): none).

    aiohttp refuses a URL that carries credentials together with the Authorization header that
    httpx derives from them (a ValueError, not a transport error): send them as auth only.
    """
    url = httpx.URL(f"{base}{path}")
    if not url.userinfo:
        return url, httpx.Auth()
    return url.copy_with(userinfo=b""), httpx.BasicAuth(url.username, url.password)


def _ms(nanoseconds: Any) -> float | None:
    return round(nanoseconds / 1e6, 3) if isinstance(nanoseconds, int | float) else None


def _error_text(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("error") or raw.decode(errors="replace"))
    except (ValueError, AttributeError):
        return raw.decode(errors="replace")[:300]


class OllamaBackend:
    name = "ollama"

    @property
    def model(self) -> str:
        return str(settings.OLLAMA_MODEL)

    def is_configured(self) -> bool:
        return bool(settings.OLLAMA_URL and settings.OLLAMA_MODEL)

    def _payload(self, messages: ChatMessages, options: GenerationOptions | None = None) -> dict[str, Any]:
        sampling: dict[str, Any] = {
            "num_predict": settings.LLM_NUM_PREDICT,
            "num_ctx": settings.LLM_NUM_CTX,
            "temperature": settings.LLM_TEMPERATURE,
        }
        if options is not None:
            if options.max_tokens is not None:
                sampling["num_predict"] = options.max_tokens
            if options.temperature is not None:
                sampling["temperature"] = options.temperature
            if options.stop:
                sampling["stop"] = list(options.stop)
        return {
            "model": self.model,
            "messages": messages,
            "stream": True,
            "keep_alive": _keep_alive(),
            "options": sampling,
        }

    async def stream(
        self, messages: ChatMessages, options: GenerationOptions | None = None
    ) -> AsyncGenerator[Chunk, None]:
        timeout = httpx.Timeout(
            connect=settings.OLLAMA_CONNECT_TIMEOUT_S, read=settings.LLM_TOKEN_IDLE_TIMEOUT_S, write=10.0, pool=10.0
        )
        started = False
        try:
            # A parsed URL and a body encoded by orjson: httpx's own parsing and encoding cost
            # more per request with a long history (bench/RESULTS.md).
            url, auth = _endpoint(settings.OLLAMA_URL, "/api/chat")
            async with shared_client().stream(
                "POST",
                url,
                content=orjson.dumps(self._payload(messages, options)),
                headers=_JSON,
                auth=auth,
                timeout=timeout,
            ) as response:
                if response.status_code != 200:
                    detail = _error_text(await response.aread())
                    hint = f" (run `ollama pull {self.model}`)" if response.status_code == 404 else ""
                    raise BackendUnavailable(
                        redact(f"Ollama answered {response.status_code}: {detail}{hint}"),
                        backend=self.name,
                        status=response.status_code,
                    )
                done: Done | None = None
                # Read to the end of the chunked body even after `done` (nothing follows it), so
                # that the connection goes back to the pool instead of being closed.
                async for line in response.aiter_lines():
                    if not line.strip() or done is not None:
                        continue
                    try:
                        data = orjson.loads(line)
                    except ValueError:
                        raise self._failure(started, f"Ollama sent a line that is not JSON: {line[:100]!r}") from None
                    if data.get("error"):
                        raise self._failure(started, f"Ollama reported an error: {data['error']}")
                    content = (data.get("message") or {}).get("content") or ""
                    if content:
                        started = True
                        yield Token(content)
                    if data.get("done"):
                        done = Done(
                            done_reason=str(data.get("done_reason") or "stop"),
                            tokens_in=data.get("prompt_eval_count"),
                            tokens_out=data.get("eval_count"),
                            upstream_load_ms=_ms(data.get("load_duration")),
                            upstream_prompt_ms=_ms(data.get("prompt_eval_duration")),
                            upstream_generation_ms=_ms(data.get("eval_duration")),
                        )
                if done is None:
                    raise self._failure(started, "Ollama closed the stream before it was done")
            yield done
        except httpx.TransportError as exc:
            raise self._failure(started, _describe(exc, started=started)) from None
        except httpx.InvalidURL as exc:
            raise BackendUnavailable(redact(f"OLLAMA_URL is not a valid URL ({exc})"), backend=self.name) from None

    def _failure(self, started: bool, message: str) -> BackendUnavailable | StreamFailed:
        cls = StreamFailed if started else BackendUnavailable
        return cls(redact(message), backend=self.name)


def _keep_alive() -> int | str:
    value = str(settings.OLLAMA_KEEP_ALIVE)
    try:
        return int(value)
    except ValueError:
        return value  # durations such as "10m" are passed through


async def ollama_readiness() -> dict[str, Any]:
    """Whether Ollama answers and has the configured model pulled (GET /api/tags)."""
    wanted = settings.OLLAMA_MODEL
    where = redact_url(str(settings.OLLAMA_URL))
    report: dict[str, Any] = {"url": where, "model": wanted}
    try:
        url, auth = _endpoint(settings.OLLAMA_URL, "/api/tags")
        response = await shared_client().get(url, auth=auth, timeout=2.0)
        response.raise_for_status()
        models = response.json().get("models", [])
    except httpx.TransportError as exc:
        why = _connect_failure(exc) or type(exc).__name__
        return {**report, "ok": False, "error": f"Ollama unreachable at {where}: {why}"}
    except httpx.InvalidURL as exc:
        return {**report, "ok": False, "error": redact(f"OLLAMA_URL is not a valid URL ({exc})")}
    except (httpx.HTTPError, ValueError) as exc:
        return {**report, "ok": False, "error": f"Ollama unreachable at {where}: {type(exc).__name__}"}
    names = {m.get("name") for m in models} | {m.get("model") for m in models}
    if wanted in names or f"{wanted}:latest" in names:
        return {**report, "ok": True}
    return {**report, "ok": False, "error": f"model {wanted} is not pulled: run `ollama pull {wanted}`"}


async def ollama_warmup() -> bool:
    """Ask Ollama to load the model (empty messages + keep_alive) so the first user does not wait."""
    payload: dict[str, Any] = {"model": settings.OLLAMA_MODEL, "messages": [], "keep_alive": _keep_alive()}
    where = redact_url(str(settings.OLLAMA_URL))
    try:
        url, auth = _endpoint(settings.OLLAMA_URL, "/api/chat")
        async with httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0), trust_env=False) as client:
            response = await client.post(url, json=payload, auth=auth)
        if response.status_code != 200:
            detail = _error_text(response.content)
            logger.warning("Ollama warm-up: %s answered %s: %s", where, response.status_code, redact(detail))
            return False
        logger.info("Ollama warm-up: model %s is loaded", settings.OLLAMA_MODEL)
        return True
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        if isinstance(exc, httpx.InvalidURL):
            why = redact(f"OLLAMA_URL is not a valid URL ({exc})")
        else:
            why = (_connect_failure(exc) if isinstance(exc, httpx.TransportError) else None) or type(exc).__name__
        logger.warning("Ollama warm-up: %s not reachable: %s; chat will fall back if configured", where, why)
        return False


def start_warmup_in_background() -> threading.Thread | None:
    """Run the warm-up in a daemon thread: never blocks or fails server start-up."""
    if not settings.OLLAMA_WARMUP or "ollama" not in settings.LLM_BACKENDS:
        return None
    thread = threading.Thread(target=lambda: asyncio.run(ollama_warmup()), name="ollama-warmup", daemon=True)
    thread.start()
    return thread
