"""Real `manage.py runworker voice-tts` processes for tests, and waiting on what they log.

Each line a worker prints is collected by a reader thread, which wakes every waiter
(`WorkerProcess.log_changed`, shared by all workers); nothing polls.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


class WorkerProcess:
    """One `manage.py runworker voice-tts` subprocess; its log lines are collected."""

    log_changed = threading.Condition()  # notified on each line of any worker, and when one's output ends

    def __init__(self, *, model: Path, **env: str) -> None:
        self.lines: list[str] = []
        self.ended = False  # its output closed (it exited)
        environment = {
            **os.environ,
            "MMS_TTS_MODEL": str(model),
            "TTS_DEFAULT_VOICE": "fra",
            "TTS_VOICES": f"eng={model}",
            "TTS_CPU_THREADS": "1",
            "LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runworker", "voice-tts"],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.log_changed:
                self.lines.append(line.rstrip())
                self.log_changed.notify_all()
        with self.log_changed:
            self.ended = True
            self.log_changed.notify_all()

    def wait_for_line(self, fragment: str, *, timeout: float = 60.0, start: int = 0) -> int:
        """Index of the first log line (from `start`) containing `fragment`."""

        def found() -> int | None:
            for index in range(start, len(self.lines)):
                if fragment in self.lines[index]:
                    return index
            return None

        index = wait_for(found, give_up=lambda: self.ended, timeout=timeout)
        if index is None:
            raise AssertionError(f"worker never logged {fragment!r}; log:\n" + "\n".join(self.lines[-30:]))
        return index

    def wait_ready(self, *, timeout: float = 60.0) -> WorkerProcess:
        self.wait_for_line("TTS engine ready", timeout=timeout)
        return self

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(timeout=10)


def wait_for(check: Callable[[], T | None], *, give_up: Callable[[], bool], timeout: float) -> T | None:
    """`check()`'s first value that is not None, asked each time a worker logs a line; None once
    `give_up()` holds or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    with WorkerProcess.log_changed:
        while True:
            value = check()
            remaining = deadline - time.monotonic()
            if value is not None or give_up() or remaining <= 0:
                return value
            WorkerProcess.log_changed.wait(remaining)


def first_to_log(workers: Iterable[WorkerProcess], fragment: str, *, timeout: float = 30.0) -> WorkerProcess:
    """The first of `workers` that logs a line containing `fragment`."""
    workers = list(workers)

    def logged() -> WorkerProcess | None:
        return next((w for w in workers if any(fragment in line for line in w.lines)), None)

    worker = wait_for(logged, give_up=lambda: all(w.ended for w in workers), timeout=timeout)
    if worker is None:
        raise AssertionError(f"no worker logged {fragment!r}")
    return worker
