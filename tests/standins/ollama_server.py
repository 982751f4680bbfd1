"""A stand-in for `ollama serve` on loopback, speaking Ollama's HTTP API byte for byte.

POST /api/chat streams NDJSON (`application/x-ndjson`, chunked): one object per token with
`message.content`, then a final `done: true` object carrying done_reason and the timing
fields in nanoseconds. Errors are `{"error": "..."}` bodies with the real status codes, or an
`{"error": ...}` line in the middle of a 200 stream. GET /api/tags lists the models.

The server runs its own event loop in a thread, so tests and benchmarks on any loop can use
it; it records each request and whether the client hung up before the stream ended.
Run alone: `python -m tests.standins.ollama_server --port 11434`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.standins.loopback_http import LoopbackHTTPServer


class _Dropped(Exception):
    """The stand-in reset the connection in the middle of a reply (mode drop_after_first)."""


@dataclass
class OllamaBehaviour:
    """How the stand-in answers. Mutate between requests to change modes."""

    models: list[str] = field(default_factory=lambda: ["phi3:mini"])
    mode: str = "ok"  # ok | busy | error_mid_stream | stall | stall_after_first | drop_after_first | http_500
    first_token_delay_s: float = 0.0
    token_interval_s: float = 0.0
    reply_tokens: list[str] | None = None  # None: echo the last user message
    error_after_tokens: int = 2
    final_chunk_content: str = ""  # Ollama may put the last piece of text in the done chunk
    load_duration_ns: int = 1_234_567
    done_reason: str = "stop"


@dataclass
class RecordedRequest:
    path: str
    body: dict[str, Any]
    received_at: float
    finished: bool = False
    client_disconnected: bool = False
    tokens_sent: int = 0
    peer: tuple[str, int] | None = None  # the client's address: the same one means a reused connection
    hung_up: threading.Event = field(default_factory=threading.Event, repr=False)  # set with client_disconnected

    def mark_disconnected(self) -> None:
        self.client_disconnected = True
        self.hung_up.set()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def echo_tokens(messages: list[dict[str, Any]]) -> list[str]:
    """The default reply: 'Echo:' and the last user message, word by word with their spaces."""
    last = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
    words = f"Echo: {last}".split(" ")
    return [words[0]] + [" " + word for word in words[1:]]


class OllamaStandIn(LoopbackHTTPServer):
    def __init__(self, behaviour: OllamaBehaviour | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host=host, port=port)
        self.behaviour = behaviour or OllamaBehaviour()
        self.requests: list[RecordedRequest] = []

    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == "/api/chat" and r.body.get("messages")]

    async def last_chat_hung_up(self, *, within_s: float = 2.5) -> bool:
        """Whether the client closed the last chat request's connection (waits up to `within_s`)."""
        return await asyncio.to_thread(self.chat_requests()[-1].hung_up.wait, within_s)

    async def route(
        self, method: str, path: str, headers: dict[str, str], raw: bytes,
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
    ) -> bool:
        if method == "GET" and path in ("/", "/api/version"):
            body = b"Ollama is running" if path == "/" else b'{"version":"0.12.0"}'
            await self.send(writer, 200, body, "text/plain; charset=utf-8" if path == "/" else "application/json")
            return True
        if method == "GET" and path == "/api/tags":
            models = [
                {"name": m, "model": m, "modified_at": _now_iso(), "size": 2_176_178_913, "digest": "a" * 64}
                for m in self.behaviour.models
            ]
            await self.send_json(writer, 200, {"models": models})
            return True
        if method == "POST" and path == "/api/chat":
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError as exc:
                await self.send_json(writer, 400, {"error": f"invalid character: {exc}"})
                return True
            record = RecordedRequest(
                path=path, body=body, received_at=time.perf_counter(), peer=writer.get_extra_info("peername")
            )
            self.requests.append(record)
            await self._chat(body, record, reader, writer)
            # Like Ollama's Go server: keep-alive after a complete response, closed after a hang-up.
            return not record.client_disconnected
        await self.send(writer, 404, b"404 page not found", "text/plain")
        return True

    async def _chunk(self, writer: asyncio.StreamWriter, payload: dict[str, Any], record: RecordedRequest) -> None:
        line = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
        try:
            await self.write_chunk(writer, line)
        except ConnectionError:
            record.mark_disconnected()
            raise

    async def _hangup_aware_wait(self, reader: asyncio.StreamReader, seconds: float, record: RecordedRequest) -> None:
        try:
            await self.wait_or_hangup(reader, seconds)
        except ConnectionResetError:
            record.mark_disconnected()
            raise

    async def _chat(
        self, body: dict[str, Any], record: RecordedRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        b = self.behaviour
        model = body.get("model", "")
        if model not in b.models:
            await self.send_json(writer, 404, {"error": f"model '{model}' not found"})
            return
        if b.mode == "busy":
            busy = "server busy, please try again.  maximum pending requests exceeded"
            await self.send_json(writer, 503, {"error": busy})
            return
        if b.mode == "http_500":
            await self.send_json(writer, 500, {"error": "llama runner process has terminated: exit status 2"})
            return
        await self.start_chunked(writer, "application/x-ndjson")
        messages = body.get("messages") or []
        started = time.perf_counter_ns()
        try:
            if not messages:  # a load request (warm-up): one done chunk with done_reason "load"
                await self._chunk(
                    writer,
                    {"model": model, "created_at": _now_iso(), "message": {"role": "assistant", "content": ""},
                     "done_reason": "load", "done": True},
                    record,
                )
            else:
                await self._stream_tokens(body, messages, record, reader, writer, started)
            await self.end_chunked(writer)
            record.finished = True
        except _Dropped:
            pass  # the stand-in broke the stream itself: neither finished nor hung up on by the client
        except ConnectionError:
            record.mark_disconnected()

    async def _stream_tokens(
        self,
        body: dict[str, Any],
        messages: list[dict[str, Any]],
        record: RecordedRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        started: int,
    ) -> None:
        b = self.behaviour
        model = body["model"]
        tokens = list(b.reply_tokens) if b.reply_tokens is not None else echo_tokens(messages)
        if b.mode == "stall":
            await self._hangup_aware_wait(reader, 3600, record)
            return
        await self._hangup_aware_wait(reader, b.first_token_delay_s, record)
        first_token_at = time.perf_counter_ns()
        for index, token in enumerate(tokens):
            if index:
                await self._hangup_aware_wait(reader, b.token_interval_s, record)
            if b.mode == "error_mid_stream" and index == b.error_after_tokens:
                failure = "an error was encountered while running the model: unexpected EOF"
                await self._chunk(writer, {"error": failure}, record)
                return
            if b.mode == "stall_after_first" and index == 1:
                await self._hangup_aware_wait(reader, 3600, record)
                return
            if b.mode == "drop_after_first" and index == 1:
                writer.transport.abort()  # the process died: no terminating chunk, connection reset
                raise _Dropped
            await self._chunk(
                writer,
                {
                    "model": model,
                    "created_at": _now_iso(),
                    "message": {"role": "assistant", "content": token},
                    "done": False,
                },
                record,
            )
            record.tokens_sent += 1
        finished = time.perf_counter_ns()
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
        await self._chunk(
            writer,
            {
                "model": model,
                "created_at": _now_iso(),
                "message": {"role": "assistant", "content": b.final_chunk_content},
                "done_reason": b.done_reason,
                "done": True,
                "total_duration": finished - started + b.load_duration_ns,
                "load_duration": b.load_duration_ns,
                "prompt_eval_count": max(1, prompt_chars // 4),
                "prompt_eval_duration": max(1, first_token_at - started),
                "eval_count": len(tokens) + (1 if b.final_chunk_content else 0),
                "eval_duration": max(1, finished - first_token_at),
            },
            record,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--first-token-ms", type=float, default=50.0)
    parser.add_argument("--token-interval-ms", type=float, default=10.0)
    parser.add_argument("--tokens", type=int, default=20, help="reply length in tokens (0: echo the prompt)")
    args = parser.parse_args()
    behaviour = OllamaBehaviour(
        models=args.model or ["phi3:mini"],
        first_token_delay_s=args.first_token_ms / 1000,
        token_interval_s=args.token_interval_ms / 1000,
        reply_tokens=[f" tok{i}" for i in range(args.tokens)] if args.tokens else None,
    )
    server = OllamaStandIn(behaviour, host=args.host, port=args.port).start()
    print(f"Ollama stand-in on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
