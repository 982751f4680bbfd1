"""record_metric: queued off the request path, then written in batches (async pool on Postgres, ORM elsewhere)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from metrics.models import RequestMetric
from metrics.recorder import flush_metrics, record_metric

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = dict(
    channel="ws", backend="ollama", model="phi3:mini", status="ok", session_id="s", ttft_ms=12.5, total_ms=80.0,
    tokens_in=7, tokens_out=20, upstream_load_ms=1.2, upstream_prompt_ms=3.4, upstream_generation_ms=56.7,
)


@pytest.mark.parametrize("async_db", [True, False], ids=["async-pool", "orm"])
async def test_queued_metrics_are_written_with_every_field(settings, async_db):
    settings.DATABASE_ASYNC = async_db
    before = timezone.now()
    queued = [record_metric(request_id=f"r{i}", **FIELDS) for i in range(250)]  # more than one batch
    await flush_metrics()
    assert await RequestMetric.objects.acount() == 250
    row = await RequestMetric.objects.aget(request_id="r7")
    for name, expected in FIELDS.items():
        assert getattr(row, name) == expected, name
    assert (row.user_id, row.api_key_id, row.time_to_first_audio_ms, row.error_code) == (None, None, None, "")
    assert row.created_at == queued[7].created_at and row.created_at >= before
