"""`manage.py metrics_prune [--older-than 30d]`: delete request metrics past their retention."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.errors import InvalidInput
from metrics.models import RequestMetric
from metrics.services import DEFAULT_PRUNE_BATCH, metrics_prune
from metrics.windows import parse_duration

MAX_PRUNE_BATCH = 1_000_000  # a batch is one transaction and one list of ids in memory


class Command(BaseCommand):
    help = (
        "Delete request metrics older than a duration (default: METRICS_RETENTION_DAYS days), "
        "in batches. Run it daily from cron or a systemd timer."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", help="e.g. 12h, 30d, 90d, 2w (default: METRICS_RETENTION_DAYS days)")
        parser.add_argument("--batch-size", type=int, default=DEFAULT_PRUNE_BATCH, help="rows deleted per transaction")
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        text = options["older_than"] or f"{settings.METRICS_RETENTION_DAYS}d"
        try:
            older_than = parse_duration(text)
        except InvalidInput as exc:
            raise CommandError(exc.message) from None
        if not 0 < options["batch_size"] <= MAX_PRUNE_BATCH:
            raise CommandError(f"--batch-size must be between 1 and {MAX_PRUNE_BATCH}.")
        now = timezone.now()
        cutoff = now - older_than
        if options["dry_run"]:
            count = RequestMetric.objects.filter(created_at__lt=cutoff).count()
            self.stdout.write(f"Would delete {count} request metric(s) created before {cutoff:%Y-%m-%d %H:%M:%S %Z}.")
            return
        progress = (lambda done: self.stdout.write(f"  deleted {done}…")) if options["verbosity"] > 1 else None
        deleted = metrics_prune(
            older_than=older_than, batch_size=options["batch_size"], now=now, on_batch=progress
        )
        self.stdout.write(f"Deleted {deleted} request metric(s) created before {cutoff:%Y-%m-%d %H:%M:%S %Z}.")
