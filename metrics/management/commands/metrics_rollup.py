"""`manage.py metrics_rollup --rebuild [--since 2026-11-01 | --since 7d]`: recompute rollups from raw rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.errors import InvalidInput
from metrics import rollups
from metrics.windows import parse_duration


class Command(BaseCommand):
    help = (
        "Recompute the latency rollups (per minute, hour and day) from the raw request metrics, a day at a "
        "time. Days whose raw rows metrics_prune deleted keep the rollups they have."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rebuild", action="store_true", help="delete and recompute the rollups of each day")
        parser.add_argument(
            "--since", help="a date or time (2026-11-01, 2026-11-01T12:00Z) or a duration back from now (7d, 12h)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["rebuild"]:
            raise CommandError("Nothing to do: pass --rebuild (with --since to limit it).")
        since = _since(options["since"]) if options["since"] else None
        start = rollups.rebuild_start(since)
        if start is None:
            self.stdout.write("No raw request metrics: nothing to rebuild.")
            return
        if since is not None and start > since:
            self.stdout.write(f"Starting at {start:%Y-%m-%d} (whole days whose raw rows are all there).")

        def progress(day: datetime, count: int) -> None:
            if options["verbosity"] > 1:
                self.stdout.write(f"  {day:%Y-%m-%d}: {count} request(s)")

        read = rollups.rebuild(since=since, on_day=progress)
        self.stdout.write(f"Rebuilt the rollups from {start:%Y-%m-%d} from {read} request metric(s).")


def _since(text: str) -> datetime:
    try:
        return timezone.now() - parse_duration(text)
    except InvalidInput:
        pass
    try:
        moment = parse_datetime(text) or (parse_datetime(f"{text}T00:00:00") if len(text) == 10 else None)
    except ValueError:
        moment = None
    if moment is None:
        raise CommandError(f"--since takes a date, a date and time, or a duration such as 7d; got {text!r}.")
    return timezone.make_aware(moment, timezone.get_current_timezone()) if timezone.is_naive(moment) else moment
