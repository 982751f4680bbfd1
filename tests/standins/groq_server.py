"""A stand-in for Groq's cloud: POST /openai/v1/chat/completions answering Server-Sent Events.

The bytes follow Groq's OpenAI-compatible stream: `data: {chat.completion.chunk}` events, a
first chunk with the role, one chunk per token, a last chunk with finish_reason and
`x_groq.usage` (queue_time, prompt_time, completion_time in seconds), a usage chunk with
empty choices when stream_options.include_usage is set, then `data: [DONE]`. Errors are
JSON bodies `{"error": {"message", "type", "code"}}` with the real status codes, or an
`{"error": ...}` event in the middle of the stream (which the SDK raises as groq.APIError).
Tests reach it through the real `groq` SDK with base_url pointing here.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.standins.loopback_http import LoopbackHTTPServer

# Groq's body for a 503, and for an error event in the middle of a stream.
UNAVAILABLE = {"message": "Service Unavailable", "type": "internal_server_error"}


@dataclass
class GroqBehaviour:
    mode: str = "ok"  # ok | 503 | 401 | 429 | error_mid_stream
    reply_tokens: list[str] = field(default_factory=lambda: ["Hello", " from", " Groq"])
    token_interval_s: float = 0.0
    error_after_tokens: int = 1


class GroqStandIn(LoopbackHTTPServer):
    def __init__(self, behaviour: GroqBehaviour | None = None) -> None:
        super().__init__()
        self.behaviour = behaviour or GroqBehaviour()
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str] = []

    async def route(self, method, path, headers, raw, reader, writer) -> bool:  # type: ignore[no-untyped-def]
        if method != "POST" or path != "/openai/v1/chat/completions":
            error = {"message": "Unknown request URL", "type": "invalid_request_error", "code": "unknown_url"}
            await self.send_json(writer, 404, {"error": error})
            return True
        body = json.loads(raw or b"{}")
        self.requests.append(body)
        self.authorizations.append(headers.get("authorization", ""))
        b = self.behaviour
        if b.mode == "503":
            await self.send_json(writer, 503, {"error": UNAVAILABLE})
            return True
        if b.mode == "401":
            error = {"message": "Invalid API Key", "type": "invalid_request_error", "code": "invalid_api_key"}
            await self.send_json(writer, 401, {"error": error})
            return True
        if b.mode == "429":
            await self.send_json(
                writer, 429,
                {"error": {"message": "Rate limit reached for model", "type": "tokens", "code": "rate_limit_exceeded"}},
                {"retry-after": "2"},
            )
            return True
        await self._stream(body, reader, writer)
        return False

    async def _event(self, writer: asyncio.StreamWriter, payload: Any) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
        await self.write_chunk(writer, f"data: {data}\n\n".encode())

    async def _stream(self, body: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b = self.behaviour
        model = body.get("model", "")
        chunk_id = f"chatcmpl-{uuid.uuid4()}"
        created = int(time.time())
        request_id = f"req_{uuid.uuid4().hex[:26]}"

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
            return {
                "id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_standin",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **extra,
            }

        await self.start_chunked(writer, "text/event-stream")
        try:
            await self._event(writer, chunk({"role": "assistant", "content": ""}, x_groq={"id": request_id}))
            for index, token in enumerate(b.reply_tokens):
                if b.mode == "error_mid_stream" and index == b.error_after_tokens:
                    await self._event(writer, {"error": UNAVAILABLE})
                    await self.end_chunked(writer)
                    return
                await self.wait_or_hangup(reader, b.token_interval_s)
                await self._event(writer, chunk({"content": token}))
            prompt_tokens = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4 + 1
            usage = {
                "queue_time": 0.012, "prompt_tokens": prompt_tokens, "prompt_time": 0.003,
                "completion_tokens": len(b.reply_tokens), "completion_time": 0.021,
                "total_tokens": prompt_tokens + len(b.reply_tokens), "total_time": 0.024,
            }
            await self._event(writer, chunk({}, "stop", x_groq={"id": request_id, "usage": usage}))
            if (body.get("stream_options") or {}).get("include_usage"):
                await self._event(writer, {
                    "id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "system_fingerprint": "fp_standin", "choices": [], "usage": usage,
                    "x_groq": {"id": request_id, "usage": usage},
                })
            await self._event(writer, "[DONE]")
            await self.end_chunked(writer)
        except ConnectionError:
            return
