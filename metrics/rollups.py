"""Rollups: the requests of each minute, hour and day, summed, so that a window's cost does not grow with its rows.

A LatencyRollup row holds, for one (level, bucket, backend, model, channel, status class), the
count, the sums behind every mean and rate, and a log-scaled histogram (metrics.sketch) per
latency series. A window is tiled by days, hours and minutes (`tiles`) and its figures are the
sums of those rows: about 90 day rows per group for 90 days, whatever the traffic.

Written with the raw rows, in the same transaction (`apply_sync`, `apply_async`, called by
metrics.recorder): a batch counts in the rollups exactly when its rows are committed, so a
writer killed mid-batch, a restart or a retried batch never counts a row twice or misses one.
Writers of rollups take one transaction-level advisory lock on Postgres (held from the
rollups' read to the commit: a batch's few milliseconds), so that two web processes adding to
the same row never lose an update; SQLite lets one writer in at a time anyway. `rebuild` takes
the same lock and recomputes days from the raw rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from metrics import sketch
from metrics.classes import status_class
from metrics.models import ROLLUP_SERIES, ROLLUP_UPSTREAM, LatencyRollup, RequestMetric, RollupState

MINUTE, HOUR, DAY = 60, 3600, 86400
LEVELS = (MINUTE, HOUR, DAY)
ADVISORY_LOCK = 7_318_018  # any constant; the rollup writers' pg_advisory_xact_lock key
TABLE = LatencyRollup._meta.db_table
KEY_COLUMNS = ("level", "bucket", "backend", "model", "channel", "status_class")
SUM_COLUMNS = (
    "count",
    "fallbacks",
    "tokens_out_sum",
    "generation_ms_sum",
    "other_ms_sum",
    "other_ms_count",
    *(f"{name}_{part}" for name in ROLLUP_UPSTREAM for part in ("sum", "count")),
    *(f"{name}_{part}" for name in ROLLUP_SERIES for part in ("sum", "count")),
)
HIST_COLUMNS = tuple(f"{name}_hist" for name in ROLLUP_SERIES)
VALUE_COLUMNS = (*SUM_COLUMNS, *HIST_COLUMNS, "error_codes")
# What a raw row contributes, in this order (see `RAW_FIELDS` users).
RAW_FIELDS = (
    "created_at",
    "backend",
    "model",
    "channel",
    "status",
    "error_code",
    "tokens_out",
    "ttft_ms",
    "total_ms",
    "time_to_first_audio_ms",
    "speech_total_ms",
    *ROLLUP_UPSTREAM,
)

Key = tuple[int, int, str, str, str, str]


@dataclass
class Sums:
    """What rows add to one rollup row (or what a window's rollups add up to)."""

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SUM_COLUMNS, 0))
    hists: dict[str, dict[int, int]] = field(default_factory=lambda: {name: {} for name in ROLLUP_SERIES})
    zeros: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLLUP_SERIES, 0))
    error_codes: dict[str, int] = field(default_factory=dict)

    def add_row(self, row: tuple[Any, ...]) -> None:
        """One raw row, as a tuple in RAW_FIELDS order."""
        (_, _, _, _, status, error_code, tokens_out, ttft, total, _, _, queue, load, prompt, generation) = row
        sums = self.sums
        sums["count"] += 1
        if status == "fallback":
            sums["fallbacks"] += 1
        if error_code and status == "error":
            self.error_codes[error_code] = self.error_codes.get(error_code, 0) + 1
        if tokens_out and tokens_out > 0 and (
            (generation is not None and generation > 0) or (generation is None and ttft is not None)
        ):
            sums["tokens_out_sum"] += tokens_out
            sums["generation_ms_sum"] += generation if generation is not None else total - ttft
        for name, value in zip(ROLLUP_UPSTREAM, (queue, load, prompt, generation), strict=True):
            if value is not None:
                sums[f"{name}_sum"] += value
                sums[f"{name}_count"] += 1
        if generation is not None:
            sums["other_ms_sum"] += total - sum(v for v in (queue, load, prompt, generation) if v is not None)
            sums["other_ms_count"] += 1
        for name, value in zip(ROLLUP_SERIES, row[7:11], strict=True):
            if value is not None:
                sums[f"{name}_sum"] += value
                sums[f"{name}_count"] += 1
                if not sketch.add_value(self.hists[name], value):
                    self.zeros[name] += 1

    def add(self, other: Sums) -> None:
        for name, value in other.sums.items():
            self.sums[name] += value
        for name, counts in other.hists.items():
            mine = self.hists[name]
            for key, count in counts.items():
                mine[key] = mine.get(key, 0) + count
            self.zeros[name] += other.zeros[name]
        for code, count in other.error_codes.items():
            self.error_codes[code] = self.error_codes.get(code, 0) + count

    def values_after(self, old: tuple[Any, ...] | None) -> list[Any]:
        """The row's VALUE_COLUMNS once these sums are added to `old` (its current values, or None)."""
        values: list[Any] = []
        for index, name in enumerate(SUM_COLUMNS):
            values.append((old[index] if old else 0) + self.sums[name])
        for index, name in enumerate(ROLLUP_SERIES):
            mine = sketch.encode(self.hists[name], self.zeros[name])
            previous = old[len(SUM_COLUMNS) + index] if old else b""
            values.append(sketch.merge_encoded([previous, mine]) if previous else mine)
        codes = json.loads(old[-1]) if old else {}
        for code, count in self.error_codes.items():
            codes[code] = codes.get(code, 0) + count
        values.append(json.dumps(codes, sort_keys=True))
        return values


def bucket_of(moment: datetime, level: int) -> int:
    seconds = math.floor(moment.timestamp())
    return seconds - seconds % level


def contributions(rows: Iterable[tuple[Any, ...]], levels: Iterable[int] = LEVELS) -> dict[Key, Sums]:
    """The sums each rollup row gets from raw rows (tuples in RAW_FIELDS order)."""
    out: dict[Key, Sums] = {}
    levels = tuple(levels)
    for row in rows:
        created_at, backend, model, channel, status, error_code = row[:6]
        cls = status_class(status, error_code).value
        seconds = math.floor(created_at.timestamp())
        for level in levels:
            key = (level, seconds - seconds % level, backend or "", model or "", channel, cls)
            sums = out.get(key)
            if sums is None:
                sums = out[key] = Sums()
            sums.add_row(row)
    return out


def raw_tuple(metric: RequestMetric) -> tuple[Any, ...]:
    return tuple(getattr(metric, name) for name in RAW_FIELDS)


# --- writing -----------------------------------------------------------------------------------

_SELECT_SQL = (
    f"SELECT {', '.join(KEY_COLUMNS)}, {', '.join(VALUE_COLUMNS)} FROM {TABLE} WHERE "
)
_UPDATE_SQL = (
    f"UPDATE {TABLE} SET {', '.join(f'{name} = %s' for name in VALUE_COLUMNS)} WHERE "
    + " AND ".join(f"{name} = %s" for name in KEY_COLUMNS)
)
_INSERT_SQL = (
    f"INSERT INTO {TABLE} ({', '.join((*KEY_COLUMNS, *VALUE_COLUMNS))}) "
    f"VALUES ({', '.join(['%s'] * (len(KEY_COLUMNS) + len(VALUE_COLUMNS)))})"
)


def _select(keys: Iterable[Key]) -> tuple[str, list[Any]]:
    """The current rows of the (level, bucket) pairs `keys` touch (a batch spans a few)."""
    pairs = sorted({(key[0], key[1]) for key in keys})
    sql = _SELECT_SQL + " OR ".join(["(level = %s AND bucket = %s)"] * len(pairs))
    return sql, [value for pair in pairs for value in pair]


def _plan(deltas: dict[Key, Sums], current: list[tuple[Any, ...]]) -> tuple[list[list[Any]], list[list[Any]]]:
    """(updates, inserts) parameter lists that add `deltas` to the `current` rows."""
    existing = {tuple(row[: len(KEY_COLUMNS)]): tuple(row[len(KEY_COLUMNS) :]) for row in current}
    updates, inserts = [], []
    for key in sorted(deltas):
        old = existing.get(key)
        values = deltas[key].values_after(old)
        if old is None:
            inserts.append([*key, *values])
        else:
            updates.append([*values, *key])
    return updates, inserts


def apply_sync(rows: list[tuple[Any, ...]]) -> None:
    """Add raw rows (RAW_FIELDS tuples) to the rollups, inside the caller's transaction."""
    if not rows:
        return
    deltas = contributions(rows)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK])
        sql, params = _select(deltas)
        cursor.execute(sql, params)
        updates, inserts = _plan(deltas, [tuple(_bytes(v) for v in row) for row in cursor.fetchall()])
        if updates:
            cursor.executemany(_UPDATE_SQL, updates)
        if inserts:
            cursor.executemany(_INSERT_SQL, inserts)


async def apply_async(conn: Any, rows: list[tuple[Any, ...]]) -> None:
    """apply_sync on an async psycopg connection, inside its transaction (the recorder's)."""
    if not rows:
        return
    deltas = contributions(rows)
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK])
    sql, params = _select(deltas)
    cursor = await conn.execute(sql, params)
    updates, inserts = _plan(deltas, [tuple(_bytes(v) for v in row) for row in await cursor.fetchall()])
    if updates:
        await conn.cursor().executemany(_UPDATE_SQL, updates)
    if inserts:
        await conn.cursor().executemany(_INSERT_SQL, inserts)


def _bytes(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


# --- rebuilding --------------------------------------------------------------------------------


def raw_complete_since() -> datetime | None:
    """Since when every raw row is still there (None: since the beginning)."""
    state = RollupState.objects.filter(pk=1).first()
    return state.raw_complete_since if state else None


def note_pruned(cutoff: datetime) -> None:
    """metrics_prune deleted the raw rows before `cutoff`: a rebuild must not start before it."""
    with transaction.atomic():
        state, _ = RollupState.objects.select_for_update().get_or_create(pk=1)
        if state.raw_complete_since is None or state.raw_complete_since < cutoff:
            state.raw_complete_since = cutoff
            state.save(update_fields=["raw_complete_since"])


def rebuild_start(since: datetime | None) -> datetime | None:
    """The first whole day a rebuild recomputes (None: there are no raw rows to read).

    Not before the oldest raw row's day, nor before the raw rows' complete-since mark: a day
    that metrics_prune emptied, or partly emptied, keeps the rollups it has.
    """
    oldest = RequestMetric.objects.order_by("created_at").values_list("created_at", flat=True).first()
    if oldest is None:
        return None
    start = max(since, oldest) if since is not None else oldest
    day = bucket_of(start, DAY)
    complete = raw_complete_since()
    if complete is not None:
        day = max(day, -(-math.floor(complete.timestamp()) // DAY) * DAY)
    return datetime.fromtimestamp(day, tz=UTC)


def rebuild(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    on_day: Callable[[datetime, int], None] | None = None,
) -> int:
    """Recompute the rollups of every day from `since` (see rebuild_start) to `until` (now); returns raw rows read.

    Each day is one transaction under the writers' lock: its rollups are deleted and written
    again from its raw rows, so that writers wait at most one day's recomputation and never
    see a half-built day.
    """
    day = rebuild_start(since)
    end = until or timezone.now()
    read = 0
    while day is not None and day < end:
        count = _rebuild_day(day)
        read += count
        if on_day is not None:
            on_day(day, count)
        day += timedelta(days=1)
    return read


def _rebuild_day(day: datetime) -> int:
    first = int(day.timestamp())
    levels = (HOUR, DAY) if first + DAY <= minute_cutoff() else LEVELS
    with transaction.atomic():
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK])
        LatencyRollup.objects.filter(bucket__gte=first, bucket__lt=first + DAY).delete()
        if connection.vendor == "postgresql":
            cells, read = _aggregate_in_postgres(first, first + DAY, levels=levels)
        else:
            rows = list(
                RequestMetric.objects.filter(created_at__gte=day, created_at__lt=day + timedelta(days=1))
                .order_by()
                .values_list(*RAW_FIELDS)
                .iterator(chunk_size=20_000)
            )
            cells, read = aggregate(rows, levels=levels), len(rows)
        inserts = [[*key, *values] for key, values in cells]
        with connection.cursor() as cursor:
            for start in range(0, len(inserts), 2000):
                cursor.executemany(_INSERT_SQL, inserts[start : start + 2000])
        return read


def _class_sql() -> tuple[str, list[Any]]:
    """metrics.classes.status_class as an SQL expression over a raw row, and its parameters."""
    from metrics.classes import CLIENT_ERROR_CODES, CLIENT_ERROR_PREFIX, UPSTREAM_ERROR_CODES, UPSTREAM_ERROR_PREFIX

    sql = (
        "CASE WHEN status = 'cancelled' THEN 'cancelled' WHEN status <> 'error' THEN 'ok' "
        "WHEN error_code = ANY(%s) OR starts_with(error_code, %s) THEN 'client_error' "
        "WHEN error_code = ANY(%s) OR starts_with(error_code, %s) THEN 'upstream_error' "
        "ELSE 'server_error' END"
    )
    return sql, [sorted(CLIENT_ERROR_CODES), CLIENT_ERROR_PREFIX, sorted(UPSTREAM_ERROR_CODES), UPSTREAM_ERROR_PREFIX]


def _aggregate_in_postgres(first: int, end: int, *, levels: Iterable[int]) -> tuple[list[tuple[Key, list[Any]]], int]:
    """`aggregate` of the raw rows of [first, end) computed by Postgres: sums and per-bucket
    counts of each series' sketch keys grouped there (a day of 10M-row traffic is ~110,000 rows
    that never reach Python), hours and minutes by SQL, days summed from hours here."""
    levels = tuple(levels)
    out: list[tuple[Key, list[Any]]] = []
    hours: list[tuple[Key, list[Any]]] = []
    for level in [lv for lv in levels if lv != DAY]:
        cells = _postgres_cells(first, end, level)
        out.extend(cells)
        if level == HOUR:
            hours = cells
    if DAY in levels:
        days: dict[Key, list[Any]] = {}
        for (_, bucket, *rest), values in hours:
            key: Key = (DAY, bucket - bucket % DAY, *rest)  # type: ignore[assignment]
            days[key] = _merge_values(days[key], values) if key in days else list(values)
        out.extend(sorted(days.items()))
    read = sum(values[0] for key, values in out if key[0] == (HOUR if HOUR in levels else levels[0]))
    return out, int(read)


def _merge_values(first: list[Any], second: list[Any]) -> list[Any]:
    merged = [a + b for a, b in zip(first[: len(SUM_COLUMNS)], second[: len(SUM_COLUMNS)], strict=True)]
    for index in range(len(SUM_COLUMNS), len(SUM_COLUMNS) + len(ROLLUP_SERIES)):
        merged.append(sketch.merge_encoded([first[index], second[index]]))
    codes = json.loads(first[-1])
    for code, count in json.loads(second[-1]).items():
        codes[code] = codes.get(code, 0) + count
    merged.append(json.dumps(codes, sort_keys=True))
    return merged


def _postgres_cells(first: int, end: int, level: int) -> list[tuple[Key, list[Any]]]:
    table = RequestMetric._meta.db_table
    cls_sql, cls_params = _class_sql()
    bucket = f"(floor(extract(epoch FROM created_at) / {int(level)}) * {int(level)})::bigint"
    where = "created_at >= to_timestamp(%s) AND created_at < to_timestamp(%s)"
    cell = f"{bucket} AS bucket, backend, model, channel, {cls_sql} AS cls"
    generated = (
        "tokens_out > 0 AND (upstream_generation_ms > 0 OR (upstream_generation_ms IS NULL AND ttft_ms IS NOT NULL))"
    )
    upstream_total = " + ".join(f"coalesce({name}, 0)" for name in ROLLUP_UPSTREAM)
    columns = [
        "count(*)",
        "count(*) FILTER (WHERE status = 'fallback')",
        f"coalesce(sum(tokens_out) FILTER (WHERE {generated}), 0)",
        f"coalesce(sum(coalesce(upstream_generation_ms, total_ms - ttft_ms)) FILTER (WHERE {generated}), 0)",
        f"coalesce(sum(total_ms - ({upstream_total})) FILTER (WHERE upstream_generation_ms IS NOT NULL), 0)",
        "count(upstream_generation_ms)",
        *(
            part
            for name in (*ROLLUP_UPSTREAM, *ROLLUP_SERIES)
            for part in (f"coalesce(sum({name}), 0)", f"count({name})")
        ),
    ]
    cells: dict[Key, list[Any]] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {cell}, {', '.join(columns)} FROM {table} WHERE {where} GROUP BY 1, 2, 3, 4, 5",
            [*cls_params, first, end],
        )
        for row in cursor.fetchall():
            key: Key = (level, int(row[0]), row[1] or "", row[2] or "", row[3], row[4])
            cells[key] = [
                round(v) if name in _INTEGER_SUMS else float(v) for name, v in zip(SUM_COLUMNS, row[5:], strict=True)
            ]
        for name in ROLLUP_SERIES:
            sketch_key = (
                f"CASE WHEN {name} <= 0 THEN NULL ELSE least(greatest(ceil(ln(least(greatest({name}, %s), %s)) "
                f"/ ln(2.0::float8) * %s)::int, %s), %s) END"
            )
            cursor.execute(
                f"SELECT bucket, backend, model, channel, cls, count(*) FILTER (WHERE k IS NULL), "
                f"array_agg(k ORDER BY k) FILTER (WHERE k IS NOT NULL), "
                f"array_agg(n ORDER BY k) FILTER (WHERE k IS NOT NULL) FROM ("
                f"SELECT {cell}, {sketch_key} AS k, count(*) AS n FROM {table} "
                f"WHERE {where} AND {name} IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6) AS keyed GROUP BY 1, 2, 3, 4, 5",
                [
                    *cls_params,
                    sketch.MIN_MS, sketch.MAX_MS, sketch.MULTIPLIER, sketch.KEY_MIN, sketch.KEY_MAX,
                    first, end,
                ],
            )
            hists = {}
            for bucket_start, backend, model, channel, cls, zeros, keys, counts in cursor.fetchall():
                found = dict(zip(keys or [], counts or [], strict=True))
                hists[(level, int(bucket_start), backend or "", model or "", channel, cls)] = sketch.encode(
                    found, int(zeros or 0)
                )
            for key, values in cells.items():
                values.append(hists.get(key, b""))
        cursor.execute(
            f"SELECT {cell}, error_code, count(*) FROM {table} WHERE {where} AND status = 'error' "
            "AND error_code <> '' GROUP BY 1, 2, 3, 4, 5, 6",
            [*cls_params, first, end],
        )
        codes: dict[Key, dict[str, int]] = {}
        for bucket_start, backend, model, channel, cls, code, count in cursor.fetchall():
            key = (level, int(bucket_start), backend or "", model or "", channel, cls)
            codes.setdefault(key, {})[code] = int(count)
    for key, values in cells.items():
        values.append(json.dumps(codes.get(key, {}), sort_keys=True))
    return sorted(cells.items())


def minute_cutoff() -> int:
    """Minute rollups older than this (epoch seconds, a whole hour) are not kept: their windows'
    edges are read to the hour (settings.METRICS_ROLLUP_MINUTE_DAYS)."""
    from django.conf import settings

    moment = math.floor(timezone.now().timestamp()) - settings.METRICS_ROLLUP_MINUTE_DAYS * DAY
    return moment - moment % HOUR


def _floats(values: Iterable[Any]) -> Any:
    return np.array([np.nan if value is None else value for value in values], dtype=float)


def aggregate(rows: list[tuple[Any, ...]], *, levels: Iterable[int] = LEVELS) -> list[tuple[Key, list[Any]]]:
    """The rollup rows (key, VALUE_COLUMNS) of many raw rows at once, with numpy (a rebuild's way;
    the same sums as `contributions`, by columns instead of row by row)."""
    if not rows:
        return []
    columns = list(zip(*rows, strict=True))
    seconds = np.array([math.floor(moment.timestamp()) for moment in columns[0]], dtype=np.int64)
    groups: dict[tuple[str, str, str, str], int] = {}
    group_of = np.array(
        [
            groups.setdefault((b or "", m or "", c, status_class(s, e).value), len(groups))
            for b, m, c, s, e in zip(*columns[1:6], strict=True)
        ],
        dtype=np.int64,
    )
    names = list(groups)
    status = np.array(columns[4], dtype=object)
    codes = np.array(columns[5], dtype=object)
    tokens = _floats(columns[6])
    ttft, total = _floats(columns[7]), _floats(columns[8])
    series = {name: _floats(columns[7 + index]) for index, name in enumerate(ROLLUP_SERIES)}
    upstream = {name: _floats(columns[11 + index]) for index, name in enumerate(ROLLUP_UPSTREAM)}
    generation = upstream["upstream_generation_ms"]
    generated = (np.nan_to_num(tokens) > 0) & (
        (np.nan_to_num(generation) > 0) | (np.isnan(generation) & ~np.isnan(ttft))
    )
    generation_ms = np.where(np.isnan(generation), total - ttft, generation)
    has_generation = ~np.isnan(generation)
    other = total - sum(np.nan_to_num(upstream[name]) for name in ROLLUP_UPSTREAM)
    failed = status == "error"
    keys_of = {name: _sketch_keys(values) for name, values in series.items()}
    out: list[tuple[Key, list[Any]]] = []
    for level in levels:
        buckets = seconds - seconds % level
        cells, inverse = np.unique(buckets * len(names) + group_of, return_inverse=True)
        size = len(cells)

        def total_of(weights: Any, mask: Any = None, inverse: Any = inverse, size: int = size) -> Any:
            weights = np.nan_to_num(weights) if mask is None else np.where(mask, np.nan_to_num(weights), 0.0)
            return np.bincount(inverse, weights=weights, minlength=size)

        sums: dict[str, Any] = {
            "count": np.bincount(inverse, minlength=size),
            "fallbacks": total_of(status == "fallback"),
            "tokens_out_sum": total_of(tokens, generated),
            "generation_ms_sum": total_of(generation_ms, generated),
            "other_ms_sum": total_of(other, has_generation),
            "other_ms_count": total_of(has_generation),
        }
        for name, values in {**upstream, **series}.items():
            known = ~np.isnan(values)
            sums[f"{name}_sum"] = total_of(values, known)
            sums[f"{name}_count"] = total_of(known)
        hists = {name: _encoded_per_cell(inverse, size, *keys_of[name]) for name in ROLLUP_SERIES}
        errors: list[dict[str, int]] = [{} for _ in range(size)]
        for index in np.flatnonzero(failed & (codes != "")):
            cell_codes = errors[inverse[index]]
            cell_codes[codes[index]] = cell_codes.get(codes[index], 0) + 1
        for cell in range(size):
            bucket, group = divmod(int(cells[cell]), len(names))
            row: list[Any] = []
            for name in SUM_COLUMNS:
                number = float(sums[name][cell])
                row.append(round(number) if name in _INTEGER_SUMS else number)
            row.extend(hists[name][cell] for name in ROLLUP_SERIES)
            row.append(json.dumps(errors[cell], sort_keys=True))
            out.append(((level, bucket, *names[group]), row))
    return out


_INTEGER_SUMS = frozenset(
    name for name in SUM_COLUMNS if name.endswith("count") or name in ("fallbacks", "tokens_out_sum")
)


def _sketch_keys(values: Any) -> tuple[Any, Any]:
    """(bucket keys of the positive values, or -1 for none; whether each value is a zero)."""
    known = ~np.isnan(values)
    zero = known & (values <= 0)
    positive = known & (values > 0)
    full = np.full(values.shape, -1 << 40, dtype=np.int64)
    full[positive] = sketch.keys_of(values[positive])
    return full, zero


def _encoded_per_cell(inverse: Any, size: int, keys: Any, zero: Any) -> list[bytes]:
    zeros = np.bincount(inverse, weights=zero, minlength=size).astype(np.int64)
    positive = keys > (-1 << 40)
    cells, cell_keys = inverse[positive], keys[positive]
    order = np.lexsort((cell_keys, cells))
    cells, cell_keys = cells[order], cell_keys[order]
    starts = np.searchsorted(cells, np.arange(size), side="left")
    ends = np.searchsorted(cells, np.arange(size), side="right")
    encoded = []
    for cell in range(size):
        chunk = cell_keys[starts[cell] : ends[cell]]
        if chunk.size == 0:
            encoded.append(sketch.encode({}, int(zeros[cell])))
            continue
        low = int(chunk[0])
        dense = np.bincount(chunk - low).astype("<u4")
        encoded.append(sketch.pack(low, int(zeros[cell]), dense))
    return encoded


# --- reading -----------------------------------------------------------------------------------


def tiles(start: int, end: int, *, largest: int = DAY) -> Iterator[tuple[int, int]]:
    """(level, bucket) of the fewest rollup rows that tile [start, end) (whole minutes), with
    levels up to `largest`: minutes up to the first whole hour, hours up to the first whole
    day, days, then hours and minutes again."""
    moment = start
    while moment < end:
        for level in sorted((lv for lv in LEVELS if lv <= largest), reverse=True):
            if moment % level == 0 and moment + level <= end:
                yield level, moment
                moment += level
                break
        else:  # pragma: no cover - start and end are whole minutes
            raise ValueError("a rollup window starts and ends on whole minutes")


def ranges(tiled: Iterable[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Consecutive tiles of one level as (level, first bucket, end): a few ranges for a query."""
    merged: list[tuple[int, int, int]] = []
    for level, bucket in sorted(tiled):
        if merged and merged[-1][0] == level and merged[-1][2] == bucket:
            merged[-1] = (level, merged[-1][1], bucket + level)
        else:
            merged.append((level, bucket, bucket + level))
    return merged


def series_step(span_s: float, step: int, *, hours_only: bool = False) -> int:
    """The width of a series point read from rollups: `step` (from Window.bucket_seconds), at
    least a minute, and whole hours past 6 hours (or where minute rows are no longer kept) and
    whole days past 8 days, so that a long window reads a few thousand rows at most."""
    floor = MINUTE if span_s <= 6 * 3600 and not hours_only else HOUR if span_s <= 8 * DAY else DAY
    step = max(step, floor)
    return -(-step // floor) * floor


def aligned_window(start: datetime, end: datetime) -> tuple[int, int]:
    """[start, end) widened to whole minutes (to whole hours before minute_cutoff), in epoch seconds."""
    cutoff = minute_cutoff()
    first = bucket_of(start, MINUTE)
    if first < cutoff:
        first = bucket_of(start, HOUR)
    last = -(-math.ceil(end.timestamp()) // MINUTE) * MINUTE
    if last < cutoff:
        last = -(-last // HOUR) * HOUR
    return first, max(last, first + (MINUTE if first >= cutoff else HOUR))
