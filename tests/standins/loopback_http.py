"""A minimal HTTP/1.1 server on loopback, run on its own event loop in a thread.

Stand-ins subclass it and implement `route`; it parses the request and leaves the response
(plain or chunked/streamed) to them, so each can reproduce its vendor's bytes exactly.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime
from typing import Any

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
           500: "Internal Server Error", 503: "Service Unavailable"}


def http_date() -> str:
    return f"{datetime.now(UTC):%a, %d %b %Y %H:%M:%S GMT}"


class LoopbackHTTPServer:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Any:
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        self._loop = self._new_loop()
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.port, backlog=2048))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    @staticmethod
    def _new_loop() -> asyncio.AbstractEventLoop:
        # uvloop (when installed, as for the benchmarks) lets one stand-in feed hundreds of streams.
        try:
            import uvloop
        except ImportError:
            return asyncio.new_event_loop()
        return uvloop.new_event_loop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                method, path, _ = request_line.decode("latin1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                raw = await reader.readexactly(length) if length else b""
                if not await self.route(method, path.split("?", 1)[0], headers, raw, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()

    async def route(
        self, method: str, path: str, headers: dict[str, str], raw: bytes,
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; return True to keep the connection open for the next."""
        raise NotImplementedError

    async def send(self, writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str,
                   extra_headers: dict[str, str] | None = None) -> None:
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {content_type}\r\nDate: {http_date()}\r\n"
        )
        for name, value in (extra_headers or {}).items():
            head += f"{name}: {value}\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode("latin1") + body)
        await writer.drain()

    async def send_json(self, writer: asyncio.StreamWriter, status: int, payload: Any,
                        extra_headers: dict[str, str] | None = None) -> None:
        await self.send(writer, status, json.dumps(payload).encode(), "application/json", extra_headers)

    async def start_chunked(self, writer: asyncio.StreamWriter, content_type: str) -> None:
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nDate: {http_date()}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode("latin1")
        )
        await writer.drain()

    async def write_chunk(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    async def end_chunked(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    @staticmethod
    async def wait_or_hangup(reader: asyncio.StreamReader, seconds: float) -> None:
        """Sleep, but raise ConnectionResetError as soon as the client closes the connection."""
        if seconds <= 0:
            return
        try:
            data = await asyncio.wait_for(reader.read(1), timeout=seconds)
        except TimeoutError:
            return
        if data == b"":
            raise ConnectionResetError("client hung up")
