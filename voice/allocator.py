"""Which malloc the TTS process runs on: jemalloc when it is installed (the default), or the system's.

Synthesis allocates tensors of new sizes for every text and chunk. Under glibc's malloc the
heap fragments and an MMS-sized voice's process settles at 1.4 to 1.9 GB; under jemalloc the
same work stays at about 0.8 GB and is no slower (bench/RESULTS.md, #14 memory). A malloc
cannot be swapped in a running process: it is chosen when the process starts, through the
dynamic loader's LD_PRELOAD. So the embedded worker's child is started with it
(voice.local_worker), and `manage.py runworker voice-tts` starts itself again with it once
(`exec_with`); elsewhere (a test, a script) nothing changes.

TTS_ALLOCATOR: "jemalloc" (default: used when the library is found, else the system's, with a
warning) or "system". `in_use()` says what the current process actually runs on; each TTS
process reports it in its readiness answer (`allocator`, in /ready's details).
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger("voice.allocator")

LIBRARIES = {"jemalloc": "jemalloc"}  # allocator -> the name ctypes.util.find_library looks up
EXEC_GUARD = "EVA_TTS_ALLOCATOR_EXEC"  # set in the environment of a process started again by exec_with


def library_for(allocator: str) -> str | None:
    """The shared library that gives `allocator` (e.g. "libjemalloc.so.2"), None for the system's or if absent."""
    if allocator not in LIBRARIES:
        return None
    return ctypes.util.find_library(LIBRARIES[allocator])


def in_use(maps: Path = Path("/proc/self/maps")) -> str:
    """The malloc this process runs on: "jemalloc", "tcmalloc" or "system" (read from its mappings)."""
    try:
        mapped = maps.read_text()
    except OSError:
        return "system"
    for name in ("jemalloc", "tcmalloc"):
        if f"lib{name}" in mapped:
            return name
    return "system"


def child_env(allocator: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a new TTS process that should run on `allocator` (LD_PRELOAD set)."""
    out = dict(os.environ if env is None else env)
    library = library_for(allocator)
    if allocator != "system" and library is None:
        logger.warning("TTS_ALLOCATOR=%s but lib%s is not installed: the system's malloc is used", allocator, allocator)
    if library is not None:
        preload = out.get("LD_PRELOAD", "")
        if library not in preload.split():
            out["LD_PRELOAD"] = f"{library} {preload}".strip()
    return out


def exec_with(allocator: str, argv: Sequence[str] | None = None) -> None:
    """Start this process again on `allocator` (same interpreter, options and arguments), unless it already is.

    Returns when nothing needs doing: the allocator is already in use, it is "system", its library
    is missing, or this process was itself started by exec_with (at most once, even if the
    loader ignored LD_PRELOAD). Otherwise it does not return.
    """
    if allocator == "system" or in_use() == allocator or os.environ.get(EXEC_GUARD):
        return
    env = child_env(allocator)
    if "LD_PRELOAD" not in env or env.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD"):
        return  # library missing (child_env warned)
    env[EXEC_GUARD] = "1"
    args = [sys.executable, *(sys.orig_argv[1:] if argv is None else argv)]
    logger.info("starting again on %s (LD_PRELOAD=%s)", allocator, env["LD_PRELOAD"])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, args, env)


__all__ = ["child_env", "exec_with", "in_use", "library_for"]
