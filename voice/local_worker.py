"""The embedded TTS worker: one child process of the web process, for when there is no Redis.

The in-memory channel layer cannot cross processes, so without REDIS_URL the web process
starts one child (`python -m voice.local_worker`: a fresh interpreter, no inherited event loop,
threads or database connections; unlike multiprocessing's spawn it does not re-import the
parent's __main__, which daphne or a script may not guard) that loads the same engine and
talks to it over a socket pair with multiprocessing's Connection framing. Synthesis
therefore never runs in the web process. Calls are serialised; each has a deadline. A child
that dies answers EOF at once; one that misses the deadline is killed. Either way the call
fails with `tts_unavailable` and the next call starts a fresh child.

No Django here: the child gets its EngineConfig by pickling and imports only voice modules.
"""

from __future__ import annotations

import collections
import logging
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from accounts.errors import EvaError
from voice import allocator
from voice.errors import TTSUnavailable, error_from_wire
from voice.synthesis import EngineConfig

logger = logging.getLogger("voice.local_worker")

CANCEL_POLL_S = 0.05  # how often a waiting stream looks at its cancel flag (a thread, not the event loop)
START_RETRY_S = 30.0  # after a failed start (model missing), fail fast for this long
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def child_main(conn: Connection, config: EngineConfig) -> None:
    """The child's whole life: load the engine, then answer requests until the pipe closes."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[child]: %(message)s")
    try:
        from voice.engine import TTSEngine

        engine = TTSEngine.load(config)
    except EvaError as exc:
        conn.send({"op": "failed", "code": exc.code, "message": exc.message})
        return
    except Exception as exc:  # report, then exit: the parent turns it into tts_unavailable
        conn.send({"op": "failed", "code": "tts_unavailable", "message": f"{type(exc).__name__}: {exc}"})
        return
    conn.send({"op": "ready", "info": engine.describe()})
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the web process is gone
        if request.get("op") == "cancel":
            continue  # for a stream that had already ended
        reply: dict[str, Any] = {"id": request.get("id")}
        try:
            if request.get("op") == "stream":
                _stream_to(conn, engine, request)
                reply.update(ok=True, done=True)
            elif request.get("op") == "ping":
                reply.update(ok=True, info=engine.describe())
            else:
                synthesis = engine.synthesize(text=request["text"], voice=request.get("voice"))
                reply.update(ok=True, result=synthesis.to_wire())
        except EvaError as exc:
            reply.update(ok=False, code=exc.code, message=exc.message)
        except Exception as exc:  # one bad request must not end the child
            logging.getLogger("voice.local_worker").exception("synthesis failed")
            reply.update(ok=False, code="tts_unavailable", message=f"Synthesis failed: {exc}")
        conn.send(reply)


def _stream_to(conn: Connection, engine: Any, request: dict[str, Any]) -> None:
    """Send each chunk of a streamed synthesis as it exists; stop early on the parent's cancel."""
    for chunk in engine.stream(text=request["text"], voice=request.get("voice")):
        conn.send({"id": request.get("id"), "chunk": chunk.to_wire()})
        while conn.poll(0):
            message = conn.recv()
            if message.get("op") == "cancel" and message.get("id") == request.get("id"):
                logging.getLogger("voice.local_worker").info("stopped a streamed synthesis: cancelled")
                return


class Turn:
    """One place in a Turns line."""


class Turns:
    """The child's one-at-a-time use, given in the order the turns were taken.

    A threading.Lock wakes whichever waiter the OS picks: with a reply's next two pieces both
    waiting, the later one could take the child first, and the earlier one (the one the player
    needs next) waited for all of it: a silence of one piece's synthesis (bench/RESULTS.md, #14).
    A stream takes its turn on the event loop, in the order its reply asked for the pieces, then
    waits for it in a thread.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._line: collections.deque[Turn] = collections.deque()
        self._holder: Turn | None = None

    @property
    def busy(self) -> bool:
        """Someone holds the child."""
        return self._holder is not None

    @property
    def queued(self) -> int:
        """How many wait in line."""
        return len(self._line)

    def take(self, *, first: bool = False) -> Turn:
        """A place at the end of the line, or at its head (`first`: stopping the child waits for
        the one holding it, not for the whole line). Cheap, never blocks."""
        with self._changed:
            turn = Turn()
            if first:
                self._line.appendleft(turn)
            else:
                self._line.append(turn)
            return turn

    def wait(self, turn: Turn, *, until: float, give_up: Callable[[], bool] = lambda: False) -> bool:
        """Hold the child once `turn` is first in line and the child is free: True. False (the
        place given up) at `until` (time.monotonic()) or once `give_up()` holds (asked every
        CANCEL_POLL_S)."""
        with self._changed:
            while self._holder is not None or self._line[0] is not turn:
                remaining = until - time.monotonic()
                if remaining <= 0 or give_up():
                    self._line.remove(turn)
                    self._changed.notify_all()  # the next one may be first now
                    return False
                self._changed.wait(min(remaining, CANCEL_POLL_S))
            self._line.popleft()
            self._holder = turn
            return True

    def take_if_free(self) -> Turn | None:
        """The child at once if nobody holds or waits for it, else None."""
        with self._changed:
            if self._holder is not None or self._line:
                return None
            self._holder = Turn()
            return self._holder

    def release(self) -> None:
        with self._changed:
            self._holder = None
            self._changed.notify_all()


class LocalWorker:
    """Owns the child process; `call` is blocking and thread-safe (run it off the event loop)."""

    def __init__(self, config: EngineConfig, *, start_timeout_s: float) -> None:
        self.config = config
        self.start_timeout_s = start_timeout_s
        self.turns = Turns()
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._info: dict[str, Any] = {}
        self._failed: tuple[float, str, str] | None = None
        self._ready = threading.Event()  # set while a child has loaded and runs
        self._next_id = 0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def busy(self) -> bool:
        """A call or stream holds the child (it has a request, or is starting for one)."""
        return self.turns.busy

    @property
    def running(self) -> bool:
        return self._ready.is_set() and self._process is not None and self._process.poll() is None

    def call(self, request: dict[str, Any], *, deadline: float) -> dict[str, Any]:
        """Send one request and wait for its answer until `deadline` (time.monotonic());
        starting a child first if none runs, with TTS_START_TIMEOUT_S on top for its loading."""
        budget = deadline - time.monotonic()
        wait = budget + (0 if self.running else self.start_timeout_s)
        if not self.turns.wait(self.turns.take(), until=time.monotonic() + max(wait, 0.0)):
            raise TTSUnavailable("The text-to-speech process is busy: no turn came before the deadline.")
        try:
            if not self.running:
                self._start()
                deadline = time.monotonic() + budget  # loading the model does not eat the request's budget
            return self._exchange(request, deadline=deadline)
        finally:
            self.turns.release()

    def stream(
        self,
        request: dict[str, Any],
        *,
        deadline: float,
        on_chunk: Callable[[dict[str, Any]], None],
        cancelled: threading.Event,
        turn: Turn | None = None,
    ) -> None:
        """A streamed synthesis: `on_chunk(wire)` for each chunk, in this thread. Setting `cancelled`
        drops it: before its turn it is never sent; under way the child stops after its chunk.
        `turn`: taken beforehand (`turns.take()`, on the event loop) to keep the order of requests."""
        budget = deadline - time.monotonic()
        until = deadline + (0 if self.running else self.start_timeout_s)
        if not self.turns.wait(turn or self.turns.take(), until=until, give_up=cancelled.is_set):
            if cancelled.is_set():
                return  # dropped while waiting for its turn: the child never sees it
            raise TTSUnavailable("The text-to-speech process is busy: no turn came before the deadline.")
        try:
            if cancelled.is_set():
                return
            if not self.running:
                self._start()
                deadline = time.monotonic() + budget
            self._stream_exchange(request, deadline=deadline, on_chunk=on_chunk, cancelled=cancelled)
        finally:
            self.turns.release()

    def _stream_exchange(
        self,
        request: dict[str, Any],
        *,
        deadline: float,
        on_chunk: Callable[[dict[str, Any]], None],
        cancelled: threading.Event,
    ) -> None:
        assert self._conn is not None
        self._next_id += 1
        request = {**request, "id": self._next_id}
        cancel_sent = False
        try:
            self._conn.send(request)
            while True:
                if cancelled.is_set() and not cancel_sent:
                    self._conn.send({"op": "cancel", "id": request["id"]})
                    cancel_sent = True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._kill()
                    raise TTSUnavailable("The text-to-speech process did not answer in time; it has been restarted.")
                if not self._conn.poll(min(remaining, CANCEL_POLL_S)):
                    continue
                reply = self._conn.recv()
                if reply.get("id") != request["id"]:
                    continue
                if "chunk" in reply:
                    if not cancelled.is_set():
                        on_chunk(reply["chunk"])
                    continue
                break
        except (EOFError, OSError, BrokenPipeError):
            self._kill()
            raise TTSUnavailable(
                "The text-to-speech process died during the request; the next request restarts it."
            ) from None
        if not reply.get("ok"):
            raise error_from_wire(reply.get("code", "tts_unavailable"), reply.get("message", "unknown error"))

    def status(self, *, timeout_s: float) -> dict[str, Any]:
        """Readiness: the child answers a ping, or is busy synthesising (which proves it alive).
        A readiness probe also starts the child, in the background, so that it loads early."""
        if not self.running and self._failed is not None and time.monotonic() - self._failed[0] < START_RETRY_S:
            return {"ok": False, "error": self._failed[2]}
        if not self.running:
            failed_before = self._failed
            self._start_in_background()
            until = time.monotonic() + timeout_s
            while not self._ready.wait(0.1):
                if (self._failed is not None and self._failed is not failed_before) or time.monotonic() > until:
                    break
            if not self.running:
                if self._failed is not None:
                    return {"ok": False, "error": self._failed[2]}
                return {"ok": False, "error": "the text-to-speech process is still loading its model"}
        if self.turns.busy or self.turns.queued:  # alive and working: a ping would wait its turn
            return {"ok": True, "busy": True, "pid": self.pid, **self._info}
        try:
            reply = self.call({"op": "ping"}, deadline=time.monotonic() + timeout_s)
        except EvaError as exc:
            return {"ok": False, "error": exc.message}
        return {"ok": True, "pid": self.pid, **reply.get("info", {})}

    def _start_in_background(self) -> None:
        if self.turns.take_if_free() is None:
            return  # a start or a request is under way

        def start() -> None:
            try:
                if not self.running:
                    self._start()
            except EvaError:
                pass  # recorded in self._failed, reported by status()
            finally:
                self.turns.release()

        threading.Thread(target=start, name="tts-child-start", daemon=True).start()

    def stop(self) -> None:
        self.turns.wait(self.turns.take(first=True), until=float("inf"))
        try:
            self._kill()
        finally:
            self.turns.release()

    def _start(self) -> None:
        if self._failed is not None and time.monotonic() - self._failed[0] < START_RETRY_S:
            raise error_from_wire(self._failed[1], self._failed[2])
        self._kill()
        parent_sock, child_sock = socket.socketpair()
        process = subprocess.Popen(
            [sys.executable, "-m", "voice.local_worker", str(child_sock.fileno())],
            pass_fds=(child_sock.fileno(),),
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            env=allocator.child_env(self.config.allocator),
        )
        child_sock.close()  # so that the child's death shows up here as EOF
        parent_conn = Connection(parent_sock.detach())
        parent_conn.send_bytes(pickle.dumps(self.config))
        self._process, self._conn = process, parent_conn
        started = time.monotonic()
        if not parent_conn.poll(self.start_timeout_s):
            self._kill()
            raise TTSUnavailable(
                f"The text-to-speech process did not load its model within {self.start_timeout_s:g} s."
            )
        try:
            hello = parent_conn.recv()
        except (EOFError, OSError):
            self._kill()
            raise TTSUnavailable("The text-to-speech process exited while loading its model.") from None
        if hello.get("op") != "ready":
            self._kill()
            self._failed = (
                time.monotonic(),
                hello.get("code", "tts_unavailable"),
                hello.get("message", "unknown error"),
            )
            logger.error("the TTS child process could not start: %s", self._failed[2])
            raise error_from_wire(self._failed[1], self._failed[2])
        self._failed = None
        self._info = hello.get("info", {})
        self._ready.set()
        logger.info("TTS child process %s ready in %.1f s", process.pid, time.monotonic() - started)

    def _exchange(self, request: dict[str, Any], *, deadline: float) -> dict[str, Any]:
        assert self._conn is not None
        self._next_id += 1
        request = {**request, "id": self._next_id}
        try:
            self._conn.send(request)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._conn.poll(remaining):
                    self._kill()
                    raise TTSUnavailable("The text-to-speech process did not answer in time; it has been restarted.")
                reply = self._conn.recv()
                if reply.get("id") == request["id"]:
                    break
        except (EOFError, OSError, BrokenPipeError):
            self._kill()
            raise TTSUnavailable(
                "The text-to-speech process died during the request; the next request restarts it."
            ) from None
        if not reply.get("ok"):
            raise error_from_wire(reply.get("code", "tts_unavailable"), reply.get("message", "unknown error"))
        return dict(reply)

    def _kill(self) -> None:
        self._ready.clear()
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is not None:
            if process.poll() is None:
                process.kill()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                logger.error("TTS child process %s did not exit after SIGKILL", process.pid)


def _child_entry(fd: int) -> None:
    conn = Connection(fd)
    config = pickle.loads(conn.recv_bytes())
    if not isinstance(config, EngineConfig):
        raise SystemExit("voice.local_worker: expected an EngineConfig")
    child_main(conn, config)


if __name__ == "__main__":
    _child_entry(int(sys.argv[1]))
