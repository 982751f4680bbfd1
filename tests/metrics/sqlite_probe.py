"""Run as a program: load generated rows into a fresh SQLite database and print the report as JSON.

The percentile test starts it with DATABASE_URL=sqlite:///... so that EVA's own settings,
migrations and selectors run on SQLite exactly as on a machine without Postgres.
Usage: python -m tests.metrics.sqlite_probe <seed> <count> <start-iso> <span-seconds>
       <window-start-iso> <window-end-iso> [raw|rollups]
With `rollups`, half the rows are written through the recorder (which keeps the rollups) and
half in bulk followed by `rollups.rebuild`, and the report is read from the rollups.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta


def main(argv: list[str]) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from metrics.api import report_as_json
    from metrics.models import RequestMetric
    from metrics.selectors import latency_report, metric_filters
    from tests.metrics.generated import generated_rows

    assert connection.vendor == "sqlite", connection.vendor
    seed, count, start, span, window_start, window_end, *rest = argv
    source = rest[0] if rest else "raw"
    call_command("migrate", verbosity=0)
    rows = generated_rows(
        count=int(count), start=datetime.fromisoformat(start), span=timedelta(seconds=float(span)), seed=int(seed)
    )
    if source == "rollups":
        from metrics.recorder import record_metric_sync
        from metrics.rollups import rebuild

        half = len(rows) // 2
        RequestMetric.objects.bulk_create([RequestMetric(**row) for row in rows[:half]], batch_size=500)
        rebuild()  # the first half's days; the recorder adds the second half's rows to them
        for row in rows[half:]:
            record_metric_sync(**row)
    else:
        RequestMetric.objects.bulk_create([RequestMetric(**row) for row in rows], batch_size=500)
    filters = metric_filters(start=datetime.fromisoformat(window_start), end=datetime.fromisoformat(window_end))
    report = report_as_json(latency_report(filters, source=source))
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
