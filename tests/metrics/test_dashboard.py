"""The staff latency dashboard: who may see it, what it shows, how it is reached from the admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse

from tests.metrics.generated import generated_rows

pytestmark = pytest.mark.django_db
URL = "/dashboard/latency/"


def test_anonymous_visitors_are_sent_to_the_admin_login():
    response = Client().get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert "next=/dashboard/latency/" in response["Location"]


def test_users_who_are_not_staff_are_sent_to_the_admin_login(alice):
    client = Client()
    client.force_login(alice)
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_see_the_dashboard_even_with_no_data(staff_client):
    response = staff_client.get(URL)
    assert response.status_code == 200
    body = response.content.decode()
    assert "No requests in this window" in body
    assert "No errors in this window" in body
    assert response["Cache-Control"].startswith("max-age=0")


def test_the_page_shows_the_same_numbers_as_the_report(staff_client, add_metrics, now):
    add_metrics(generated_rows(count=400, start=now - timedelta(hours=2), span=timedelta(hours=2), seed=3))
    response = staff_client.get(URL, {"window": "24h"})
    assert response.status_code == 200
    report = response.context["report"]
    assert report.overall.count == 400
    body = response.content.decode()
    from metrics.charts import format_ms

    assert format_ms(report.overall.latency["total_ms"].p95) in body
    assert "ollama · phi3:mini · ws" in body
    assert body.count("<polyline") >= 3  # a line for each of P50, P95, P99
    assert "Where the time went" in body and "model load" in body


def test_the_charts_need_nothing_from_outside_the_site(staff_client, add_metrics, now):
    add_metrics(created_at=now - timedelta(minutes=5), ttft_ms=300.0, total_ms=900.0)
    body = staff_client.get(URL).content.decode()
    import re

    assert "<svg" in body
    assert not re.search(r'(src|href)="(https?:)?//', body)  # no CDN, no external host
    assert all(src.startswith("/static/") for src in re.findall(r'<script[^>]* src="([^"]+)"', body))


def test_filters_narrow_the_table(staff_client, add_metrics, now):
    add_metrics(created_at=now - timedelta(minutes=5), backend="ollama", model="phi3:mini")
    add_metrics(created_at=now - timedelta(minutes=5), backend="groq", model="llama-3.1-8b-instant", channel="rest")
    response = staff_client.get(URL, {"window": "1h", "backend": "groq", "channel": "rest"})
    groups = response.context["report"].groups
    assert [group.key["backend"] for group in groups] == ["groq"]
    # The menus still offer every backend seen in the window.
    assert response.context["choices"]["backend"] == ["groq", "ollama"]


def test_a_custom_window_and_another_grouping(staff_client, add_metrics, alice, now):
    add_metrics(created_at=now - timedelta(hours=30), user=alice)
    start = (now - timedelta(hours=31)).strftime("%Y-%m-%dT%H:%M")
    end = (now - timedelta(hours=29)).strftime("%Y-%m-%dT%H:%M")
    response = staff_client.get(URL, {"window": "custom", "start": start, "end": end, "group_by": "user"})
    assert response.status_code == 200
    assert [group.label for group in response.context["report"].groups] == ["alice"]


def test_a_bad_window_shows_an_error_and_the_default_window(staff_client):
    response = staff_client.get(URL, {"window": "custom", "start": "2026-01-02T00:00", "end": "2026-01-01T00:00"})
    assert response.status_code == 200
    assert "start must be before its end" in response.content.decode()
    assert response.context["filters"].window.name == "24h"


def test_the_admin_index_links_to_the_dashboard(staff_client):
    body = staff_client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:metrics_latencydashboard_changelist") in body
    response = staff_client.get(reverse("admin:metrics_latencydashboard_changelist"))
    assert response.status_code == 302 and response["Location"] == URL


def test_the_request_metric_list_links_to_the_dashboard(staff, add_metrics, now):
    staff.is_superuser = True
    staff.save()
    client = Client()
    client.force_login(staff)
    add_metrics(created_at=now)
    body = client.get(reverse("admin:metrics_requestmetric_changelist")).content.decode()
    assert f'href="{URL}"' in body
