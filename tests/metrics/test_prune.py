"""`manage.py metrics_prune`: retention by age, in batches, with the setting as default."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from metrics.models import RequestMetric
from metrics.services import metrics_prune

pytestmark = pytest.mark.django_db


def ages(add_metrics, *days: float) -> None:
    now = timezone.now()
    add_metrics([{"created_at": now - timedelta(days=d), "total_ms": float(d)} for d in days])


def remaining_ages() -> list[float]:
    return sorted(RequestMetric.objects.values_list("total_ms", flat=True))


def test_it_deletes_rows_older_than_the_given_age_and_keeps_the_rest(add_metrics):
    ages(add_metrics, 1, 29, 31, 45, 100)
    out = StringIO()
    call_command("metrics_prune", "--older-than", "30d", stdout=out)
    assert remaining_ages() == [1.0, 29.0]
    assert "Deleted 3 request metric(s)" in out.getvalue()


def test_hours_work_too(add_metrics):
    ages(add_metrics, 0.25, 0.75)  # 6 h and 18 h old
    call_command("metrics_prune", "--older-than", "12h", stdout=StringIO())
    assert remaining_ages() == [0.25]


def test_without_older_than_it_uses_the_retention_setting(add_metrics, settings):
    settings.METRICS_RETENTION_DAYS = 7
    ages(add_metrics, 6, 8)
    call_command("metrics_prune", stdout=StringIO())
    assert remaining_ages() == [6.0]


def test_it_deletes_in_batches_until_nothing_is_left(add_metrics):
    ages(add_metrics, *range(40, 50), 1)
    batches: list[int] = []
    deleted = metrics_prune(older_than=timedelta(days=30), batch_size=3, on_batch=batches.append)
    assert deleted == 10
    assert batches == [3, 6, 9, 10]
    assert remaining_ages() == [1.0]


def test_a_dry_run_counts_and_deletes_nothing(add_metrics):
    ages(add_metrics, 40, 1)
    out = StringIO()
    call_command("metrics_prune", "--older-than", "30d", "--dry-run", stdout=out)
    assert "Would delete 1" in out.getvalue()
    assert remaining_ages() == [1.0, 40.0]


@pytest.mark.parametrize("text", ["30", "thirty days", "0d", "-1d"])
def test_it_refuses_a_bad_age(text):
    with pytest.raises(CommandError):
        call_command("metrics_prune", "--older-than", text, stdout=StringIO())
