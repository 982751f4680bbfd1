"""Log-scaled latency histograms with at most 1 % relative error (DDSketch's bucket mapping).

A value v > 0 (milliseconds) falls in bucket k = ceil(log(v) / log(gamma)), gamma = (1 + a) / (1 - a)
with a = 0.01: bucket k holds (gamma^(k-1), gamma^k], and its representative value
2 * gamma^k / (1 + gamma) is within a relative 1 % of every value in it. The mapping is the
`ddsketch` library's `LogarithmicMapping` (key() and value()); this module only stores the
counts of the buckets (as a dense array between the lowest and highest bucket used) so that
histograms of minutes, hours and days can be summed.

Percentiles are read as Postgres' `percentile_cont` reads sorted values (linear interpolation
between the ranks floor(h) and floor(h) + 1, h = q * (n - 1)), with each of the two ranked
values replaced by its bucket's representative. Both are within 1 % of the true ranked values,
so their interpolation is within 1 % of the exact percentile (a convex combination of two
values each off by at most 1 % is off by at most 1 %).

Values of 0 (or less) have a bucket of their own and read back as exactly 0. Values below
MIN_MS count as MIN_MS and above MAX_MS as MAX_MS (outside any latency EVA measures).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence

import numpy as np
from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY = 0.01
MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
MIN_MS = 0.01
MAX_MS = 1e8  # about 28 hours
# LogarithmicMapping.key(v) is ceil(log2(v) * m), m = ln 2 / ln(gamma) computed as the library
# does (same float operations); `keys_of` applies it to arrays at once (a rebuild's millions of values).
_GAMMA_MANTISSA = 2 * MAPPING.relative_accuracy / (1 - MAPPING.relative_accuracy)
MULTIPLIER = (1 / math.log1p(_GAMMA_MANTISSA)) * math.log(2)
KEY_MIN: int = MAPPING.key(MIN_MS)
KEY_MAX: int = MAPPING.key(MAX_MS)
SIZE = KEY_MAX - KEY_MIN + 1
# The representative value of every bucket, by index (key - KEY_MIN).
REPRESENTATIVES = np.array([MAPPING.value(key) for key in range(KEY_MIN, KEY_MAX + 1)], dtype=float)
_HEADER = struct.Struct("<iI")  # lowest key used, count of zeros
HEADER_SIZE = _HEADER.size


def header(blob: bytes) -> tuple[int, int]:
    """(lowest key, count of zeros) of an encoded histogram."""
    low, zeros = _HEADER.unpack_from(blob)
    return int(low), int(zeros)


def key_of(value: float) -> int:
    """The bucket of a positive value, clamped to [KEY_MIN, KEY_MAX]."""
    clipped = min(max(value, MIN_MS), MAX_MS)
    return min(max(math.ceil(math.log2(clipped) * MULTIPLIER), KEY_MIN), KEY_MAX)


def keys_of(values: np.ndarray) -> np.ndarray:
    """key_of of each (positive) value of an array."""
    clipped = np.clip(values, MIN_MS, MAX_MS)
    keys: np.ndarray = np.clip(np.ceil(np.log2(clipped) * MULTIPLIER).astype(np.int64), KEY_MIN, KEY_MAX)
    return keys


def encode(counts: dict[int, int], zeros: int = 0) -> bytes:
    """Bucket counts (key -> count) and the count of zeros as bytes; b"" when empty."""
    if not counts and not zeros:
        return b""
    if not counts:
        return _HEADER.pack(0, zeros)
    low, high = min(counts), max(counts)
    dense = np.zeros(high - low + 1, dtype="<u4")
    for key, count in counts.items():
        dense[key - low] = count
    return _HEADER.pack(low, zeros) + dense.tobytes()


def pack(low: int, zeros: int, dense: np.ndarray) -> bytes:
    """Counts of the keys low, low + 1, ... (a uint32 array) and the count of zeros as bytes."""
    return _HEADER.pack(low, zeros) + dense.astype("<u4").tobytes()


def decode(blob: bytes | memoryview | None) -> tuple[dict[int, int], int]:
    """The inverse of encode: (key -> count, zeros)."""
    if not blob:
        return {}, 0
    data = bytes(blob)
    low, zeros = _HEADER.unpack_from(data)
    dense = np.frombuffer(data, dtype="<u4", offset=_HEADER.size)
    return {low + int(i): int(dense[i]) for i in np.flatnonzero(dense)}, int(zeros)


def merge_encoded(blobs: Iterable[bytes | memoryview | None]) -> bytes:
    """The sum of encoded histograms, encoded."""
    total = Histogram()
    for blob in blobs:
        total.add_encoded(blob)
    return total.encode()


def add_value(counts: dict[int, int], value: float) -> bool:
    """Count one positive value in `counts`; False for a value that belongs to the zero bucket."""
    if value <= 0:
        return False
    key = key_of(value)
    counts[key] = counts.get(key, 0) + 1
    return True


class Histogram:
    """A dense sum of encoded histograms, read for counts and percentiles."""

    __slots__ = ("counts", "zeros")

    def __init__(self) -> None:
        self.counts = np.zeros(SIZE, dtype=np.int64)
        self.zeros = 0

    @classmethod
    def of(cls, counts: np.ndarray, zeros: int) -> Histogram:
        """A histogram over already summed dense counts (no copy)."""
        histogram = cls.__new__(cls)
        histogram.counts = counts
        histogram.zeros = zeros
        return histogram

    def add_encoded(self, blob: bytes | memoryview | None) -> None:
        if not blob:
            return
        low, zeros = _HEADER.unpack_from(blob)
        self.zeros += zeros
        dense = np.frombuffer(blob, dtype="<u4", offset=_HEADER.size)
        if dense.size:
            start = low - KEY_MIN
            self.counts[start : start + dense.size] += dense

    def add(self, other: Histogram) -> None:
        self.counts += other.counts
        self.zeros += other.zeros

    def add_values(self, values: Iterable[float]) -> None:
        for value in values:
            if value <= 0:
                self.zeros += 1
            else:
                self.counts[key_of(value) - KEY_MIN] += 1

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.zeros

    def encode(self) -> bytes:
        used = np.flatnonzero(self.counts)
        if used.size == 0:
            return _HEADER.pack(0, self.zeros) if self.zeros else b""
        low, high = int(used[0]), int(used[-1])
        return _HEADER.pack(low + KEY_MIN, self.zeros) + self.counts[low : high + 1].astype("<u4").tobytes()

    def percentiles(self, fractions: Sequence[float]) -> list[float | None]:
        """percentile_cont of each fraction, within RELATIVE_ACCURACY of the exact one."""
        total = self.total
        if total == 0:
            return [None for _ in fractions]
        cumulative = np.cumsum(self.counts)

        def ranked(rank: int) -> float:
            if rank < self.zeros:
                return 0.0
            index = int(np.searchsorted(cumulative, rank - self.zeros, side="right"))
            return float(REPRESENTATIVES[index])

        answers: list[float | None] = []
        for fraction in fractions:
            position = fraction * (total - 1)
            lower = int(np.floor(position))
            upper = min(lower + 1, total - 1)
            low_value, high_value = ranked(lower), ranked(upper)
            answers.append(low_value + (position - lower) * (high_value - low_value))
        return answers

    def binned(self, edges: Sequence[float]) -> list[int]:
        """Counts per bin [0, e0), [e0, e1), ..., [e_last, inf), each bucket by its representative."""
        bins = np.zeros(len(edges) + 1, dtype=np.int64)
        used = np.flatnonzero(self.counts)
        if used.size:
            where = np.searchsorted(np.asarray(edges, dtype=float), REPRESENTATIVES[used], side="right")
            np.add.at(bins, where, self.counts[used])
        bins[0] += self.zeros
        return [int(count) for count in bins]
