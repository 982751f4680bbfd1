"""Database expressions for latency statistics, the same on Postgres and SQLite.

Percentiles use continuous (linear) interpolation between the two nearest ranks, the
definition of Postgres' `percentile_cont` and of numpy's default `method="linear"`:
with n sorted values and a fraction q, h = q * (n - 1), and the result is
x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)]).

Postgres computes it natively. SQLite has no percentile aggregate, so EVA registers one on
every SQLite connection (`register_sqlite_functions`, connected in `MetricsConfig.ready`):
the same ORM query then runs on both databases, with the same filters and window edges.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Aggregate, Expression, FloatField, Func, IntegerField

SQLITE_PERCENTILE_FUNCTION = "eva_percentile_cont"


def percentile_linear(ordered: Sequence[float], fraction: float) -> float | None:
    """The `fraction` percentile of already sorted values, interpolated as percentile_cont does."""
    count = len(ordered)
    if count == 0:
        return None
    position = fraction * (count - 1)
    lower = math.floor(position)
    upper = min(lower + 1, count - 1)
    return ordered[lower] + (position - lower) * (ordered[upper] - ordered[lower])


class PercentileCont(Aggregate):
    """`percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)`; NULLs are ignored."""

    function = "PERCENTILE_CONT"
    name = "PercentileCont"
    output_field = FloatField()
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, *, fraction: float, **extra: Any) -> None:
        fraction = float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"a percentile fraction lies in [0, 1], got {fraction}")
        # A validated float is inlined: ordered-set aggregates want a constant direct argument.
        super().__init__(expression, fraction=repr(fraction), **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        return super().as_sql(
            compiler,
            connection,
            function=SQLITE_PERCENTILE_FUNCTION,
            template="%(function)s(%(expressions)s, %(fraction)s)",
            **extra_context,
        )


class _SqlitePercentileAggregate:
    """The SQLite side of PercentileCont: collects the group's values, interpolates at the end."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.fraction = 0.5

    def step(self, value: float | None, fraction: float) -> None:
        self.fraction = float(fraction)
        if value is not None:
            self.values.append(float(value))

    def finalize(self) -> float | None:
        self.values.sort()
        return percentile_linear(self.values, self.fraction)


def register_sqlite_functions(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """`connection_created` receiver: teach each new SQLite connection eva_percentile_cont."""
    if connection.vendor == "sqlite":
        connection.connection.create_aggregate(SQLITE_PERCENTILE_FUNCTION, 2, _SqlitePercentileAggregate)


# Sort memory for the report's queries: each percentile sorts its group's values, and a
# 24-hour window at 10 million rows a month holds about 330,000 of them (~15 MB to sort).
ANALYTICS_WORK_MEM = "32MB"


@contextmanager
def analytics_queries() -> Iterator[None]:
    """Run a report's queries in one transaction tuned for large sorts, on Postgres.

    JIT compilation is switched off: these aggregations cross its cost threshold at a few
    hundred thousand rows and then spend more time compiling than they save (bench/RESULTS.md).
    Both settings are SET LOCAL, so they end with the transaction and never leak to pooled
    connections.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('jit', 'off', true), set_config('work_mem', %s, true)", [ANALYTICS_WORK_MEM]
            )
        yield


class EpochBucket(Func):
    """floor(seconds since 1970 / step): which fixed-width time bucket a timestamp falls in.

    Buckets are aligned on the epoch, not on the window's start, so that a 15-minute bucket
    reads 10:15-10:30 whatever moment the page was loaded.
    """

    output_field = IntegerField()

    def __init__(self, expression: Expression | str, *, step_s: int, **extra: Any) -> None:
        step_s = int(step_s)
        if step_s <= 0:
            raise ValueError("a bucket width is a positive number of seconds")
        super().__init__(expression, step=str(step_s), **extra)

    def as_postgresql(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        return super().as_sql(
            compiler,
            connection,
            template="FLOOR(EXTRACT(EPOCH FROM %(expressions)s) / %(step)s)::bigint",
            **extra_context,
        )

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        # Django stores aware datetimes in SQLite as UTC text; whole seconds suffice because
        # bucket edges are whole seconds. The strftime format travels as a parameter since a
        # literal %s in SQL would be read as a placeholder.
        sql, params = super().as_sql(
            compiler,
            connection,
            template="(CAST(strftime(%%s, %(expressions)s) AS INTEGER) / %(step)s)",
            **extra_context,
        )
        return sql, ("%s", *params)
