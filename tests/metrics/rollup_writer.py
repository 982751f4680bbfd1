"""Run as a program: record `count` generated request metrics through the recorder and flush them.

The rollup test starts it, holds it mid-batch (Postgres advisory lock) and kills it.
Usage: python -m tests.metrics.rollup_writer <count> <end-iso>
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta


async def write(count: int, end: datetime) -> None:
    from metrics.recorder import flush_metrics, record_metric
    from tests.metrics.generated import generated_rows

    for row in generated_rows(count=count, start=end - timedelta(hours=2), span=timedelta(hours=2), seed=31):
        record_metric(**row)
    await flush_metrics()


def main(argv: list[str]) -> None:
    import django

    django.setup()
    asyncio.run(write(int(argv[0]), datetime.fromisoformat(argv[1])))


if __name__ == "__main__":
    main(sys.argv[1:])
