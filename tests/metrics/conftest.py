"""Fixtures of the metrics tests: rows written straight to the database, staff and keys."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from accounts.api_keys import api_key_create
from metrics.models import RequestMetric


@pytest.fixture
def now() -> datetime:
    # A fixed instant, whole minutes, so window edges are exact in every test.
    return timezone.now().replace(second=0, microsecond=0)


@pytest.fixture
def add_metrics(db) -> Callable[..., list[RequestMetric]]:
    """`add_metrics([{...}, ...])` or `add_metrics(total_ms=..., created_at=...)`: bulk-insert rows."""

    def add(rows: list[dict[str, Any]] | None = None, **one: Any) -> list[RequestMetric]:
        defaults = {"channel": "ws", "backend": "ollama", "model": "phi3:mini", "status": "ok", "total_ms": 100.0}
        items = rows if rows is not None else [one]
        return RequestMetric.objects.bulk_create([RequestMetric(**{**defaults, **row}) for row in items])

    return add


def grant_view_latency(user):
    """Give `user` metrics.view_latency (and drop Django's permission cache)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user.user_permissions.add(Permission.objects.get(content_type__app_label="metrics", codename="view_latency"))
    return get_user_model().objects.get(pk=user.pk)


@pytest.fixture
def staff(make_user):
    """A staff member with metrics.view_latency: the dashboard's, the API's and the admin's reader."""
    return grant_view_latency(make_user("root", is_staff=True))


@pytest.fixture
def bare_staff(make_user):
    """A staff member without metrics.view_latency."""
    return make_user("clerk", is_staff=True)


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def metrics_key(alice) -> str:
    """A metrics-scoped key of a non-staff user."""
    return api_key_create(owner=alice, name="monitoring", scopes="metrics")[1]


@pytest.fixture
def staff_metrics_key(staff) -> str:
    return api_key_create(owner=staff, name="grafana", scopes="metrics")[1]


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)
