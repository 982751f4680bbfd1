"""CSV export of the raw RequestMetric rows of a window, streamed a chunk at a time."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Q

from metrics.report import MetricFilters
from metrics.selectors import metrics_in

CSV_COLUMNS = (
    "id",
    "created_at",
    "request_id",
    "user_id",
    "api_key_id",
    "session_id",
    "channel",
    "backend",
    "model",
    "status",
    "error_code",
    "ttft_ms",
    "total_ms",
    "time_to_first_audio_ms",
    "speech_total_ms",
    "tokens_in",
    "tokens_out",
    "upstream_queue_ms",
    "upstream_load_ms",
    "upstream_prompt_ms",
    "upstream_generation_ms",
)
FETCH_ROWS = 2000
FLUSH_BYTES = 64 * 1024
# Text a spreadsheet would run as a formula; session ids and the like come from clients.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _fetch(page: Any) -> list[tuple[Any, ...]]:
    return list(page)


async def metrics_csv_chunks(filters: MetricFilters) -> AsyncIterator[str]:
    """The header, then every row of the window oldest first, in chunks of about 64 KB.

    Rows are read a page at a time, each page starting after the last (created_at, id)
    seen: no server-side cursor stays open between chunks, and memory stays flat.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    ordered = metrics_in(filters).order_by("created_at", "id").values_list(*CSV_COLUMNS)
    page = ordered
    while True:
        rows = await sync_to_async(_fetch)(page[:FETCH_ROWS])
        for row in rows:
            writer.writerow([_cell(value) for value in row])
            if buffer.tell() >= FLUSH_BYTES:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        if len(rows) < FETCH_ROWS:
            break
        last_id, last_created_at = rows[-1][0], rows[-1][1]
        page = ordered.filter(Q(created_at__gt=last_created_at) | Q(created_at=last_created_at, id__gt=last_id))
    yield buffer.getvalue()
