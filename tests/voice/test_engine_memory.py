"""The TTS process's allocator: blocks above the threshold are their own mappings (voice.engine.fix_mmap_threshold).

Under glibc's adaptive threshold, freeing a large mapped block raises the threshold to its size,
and from then on blocks below it come from the heap, which synthesis's ever-new tensor sizes
fragment (bench/RESULTS.md, #14 memory: the worker grew past 2 GB). Each case runs in a fresh
interpreter, since the setting is process-wide and cannot be undone; glibc's own counters
(mallinfo2) say whether a 1 MiB block was mapped.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import ctypes, sys
sys.path.insert(0, sys.argv[2])
from voice.engine import fix_mmap_threshold

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
print("set" if fix_mmap_threshold(int(sys.argv[1])) else "unset")
libc.free(libc.malloc(8 << 20))  # a mapped 8 MiB block, freed: glibc's adaptive threshold rises to 8 MiB
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)
print(libc.mallinfo2().hblks - before)
libc.free(block)
"""


def mapped_after_a_large_free(threshold: int) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(threshold), str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    state, mapped = result.stdout.split()
    return state, int(mapped)


glibc = pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="glibc 2.33+ only")


@glibc
def test_with_the_threshold_fixed_a_large_block_is_still_mapped_after_a_larger_one_was_freed():
    assert mapped_after_a_large_free(128 * 1024) == ("set", 1)


@glibc
def test_glibcs_adaptive_threshold_would_take_it_from_the_heap():
    # The check can fail: 0 leaves glibc's default, and the 1 MiB block comes from the heap.
    assert mapped_after_a_large_free(0) == ("unset", 0)
