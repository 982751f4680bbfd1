"""TTS processes run on jemalloc when it is installed (flat memory, #14), or on the system's malloc.

The real paths: the embedded child process and `manage.py runworker voice-tts` report the malloc
they actually run on (read from their own mappings); a process started again by exec_with.
tests/run installs libjemalloc2 on Debian, as the README's set-up does.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voice import allocator, client

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def jemalloc() -> str:
    library = allocator.library_for("jemalloc")
    assert library is not None, "libjemalloc is not installed (Debian: apt-get install libjemalloc2)"
    return library


def test_a_child_environment_preloads_the_library_and_keeps_what_was_preloaded(jemalloc):
    env = allocator.child_env("jemalloc", {"LD_PRELOAD": "libother.so", "PATH": "/bin"})
    assert env["LD_PRELOAD"].split() == [jemalloc, "libother.so"] and env["PATH"] == "/bin"
    again = allocator.child_env("jemalloc", env)
    assert again["LD_PRELOAD"] == env["LD_PRELOAD"]  # not twice
    assert allocator.child_env("system", {"PATH": "/bin"}) == {"PATH": "/bin"}


def test_a_missing_library_leaves_the_system_malloc_and_says_so(monkeypatch, caplog):
    monkeypatch.setitem(allocator.LIBRARIES, "jemalloc", "no-such-malloc-for-eva")
    with caplog.at_level(logging.WARNING, logger="voice.allocator"):
        env = allocator.child_env("jemalloc", {"PATH": "/bin"})
    assert env == {"PATH": "/bin"}
    assert "libjemalloc is not installed" in caplog.text


def test_this_test_process_runs_on_the_system_malloc_and_reads_it_from_its_mappings(tmp_path):
    assert allocator.in_use() == "system"  # pytest is not started again: only TTS processes are
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f10 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n")
    assert allocator.in_use(maps) == "jemalloc"
    assert allocator.in_use(tmp_path / "missing") == "system"


def run_python(code: str, **env: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split()


EXEC_WITH = (
    "import os; from voice import allocator; print(os.getpid(), flush=True); "
    "allocator.exec_with('jemalloc'); "
    "print(os.getpid(), allocator.in_use(), os.environ.get(allocator.EXEC_GUARD, '-'))"
)


def test_exec_with_starts_the_same_process_again_once_on_jemalloc(jemalloc):
    # The script's first line runs twice (before and after the exec), in the same process.
    pid, again, same, malloc, guard = run_python(EXEC_WITH)
    assert pid == again == same and (malloc, guard) == ("jemalloc", "1")
    # Started by exec_with already (the loader ignored LD_PRELOAD, say): never again.
    pid, same, malloc, guard = run_python(EXEC_WITH, **{allocator.EXEC_GUARD: "1"})
    assert pid == same and (malloc, guard) == ("system", "1")
    # "system": nothing to do.
    pid, same, malloc, guard = run_python(EXEC_WITH.replace("'jemalloc'", "'system'"))
    assert pid == same and (malloc, guard) == ("system", "-")


async def test_the_embedded_child_runs_on_jemalloc_by_default_and_on_the_system_malloc_when_set(
    local_transport, jemalloc
):
    await client.synthesize(text="Bonjour", voice=None)
    ready = await client.tts_readiness(timeout_s=10)
    assert ready["ok"] is True and ready["allocator"] == "jemalloc"
    client.stop_local_worker()
    local_transport.TTS_ALLOCATOR = "system"
    await client.synthesize(text="Bonjour", voice=None)
    ready = await client.tts_readiness(timeout_s=10)
    assert ready["ok"] is True and ready["allocator"] == "system"


async def test_runworker_voice_tts_starts_itself_again_on_jemalloc(voice_settings, start_worker, jemalloc):
    worker = start_worker()
    worker.wait_for_line("starting again on jemalloc")
    ready = await client.tts_readiness(timeout_s=10)
    assert ready["ok"] is True and ready["allocator"] == "jemalloc"
    synthesis = await client.synthesize(text="Bonjour à tous", voice="fra")
    assert synthesis.duration_s > 0


async def test_runworker_voice_tts_with_the_system_malloc_is_not_started_again(voice_settings, start_worker):
    worker = start_worker(TTS_ALLOCATOR="system")
    ready = await client.tts_readiness(timeout_s=10)
    assert ready["ok"] is True and ready["allocator"] == "system"
    assert not any("starting again" in line for line in worker.lines)
