"""Writes of the metrics app: retention."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from metrics import rollups
from metrics.models import LatencyRollup, RequestMetric

DEFAULT_PRUNE_BATCH = 10_000


def metrics_prune(
    *,
    older_than: timedelta,
    batch_size: int = DEFAULT_PRUNE_BATCH,
    now: datetime | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> int:
    """Delete the RequestMetric rows created before now - `older_than`, in batches; return how many.

    Each batch is its own short transaction so that the table stays writable and the
    write-ahead log stays small while millions of rows go. The rollups stay: they are all
    that is left of the pruned time, and `metrics_rollup --rebuild` will not start before
    `cutoff` (metrics.rollups.note_pruned).
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    cutoff = (now or timezone.now()) - older_than
    rollups.note_pruned(cutoff)
    LatencyRollup.objects.filter(level=rollups.MINUTE, bucket__lt=rollups.minute_cutoff()).delete()
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(
                RequestMetric.objects.filter(created_at__lt=cutoff).order_by("created_at").values_list("id", flat=True)[
                    :batch_size
                ]
            )
            if not ids:
                return deleted
            count, _ = RequestMetric.objects.filter(id__in=ids).delete()
        deleted += count
        if on_batch is not None:
            on_batch(deleted)
        if len(ids) < batch_size:
            return deleted
