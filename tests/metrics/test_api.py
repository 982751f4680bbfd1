"""GET /api/v1/metrics/latency and /api/v1/metrics/export.csv: access, shape, same numbers as the page."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.test import AsyncClient, Client

from accounts.api_keys import api_key_create
from metrics.selectors import latency_report, metric_filters
from tests.metrics.conftest import grant_view_latency
from tests.metrics.generated import generated_rows

# Transactional: a request's API-key authentication returns its pooled connection at once
# (accounts.auth), which a test wrapped in one transaction would not survive.
pytestmark = pytest.mark.django_db(transaction=True)
LATENCY = "/api/v1/metrics/latency"
CSV = "/api/v1/metrics/export.csv"


def test_anonymous_callers_get_401():
    response = Client().get(LATENCY)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_a_key_without_the_metrics_scope_gets_403(alice):
    _, key = api_key_create(owner=alice, name="chat only", scopes="chat,tts")
    response = Client().get(LATENCY, HTTP_X_API_KEY=key)
    assert response.status_code == 403
    assert response.json()["code"] == "missing_scope"


def test_a_browser_session_that_is_not_staff_gets_403(alice):
    client = Client()
    client.force_login(alice)
    response = client.get(LATENCY)
    assert response.status_code == 403


def test_a_staff_session_reads_the_report(staff_client):
    response = staff_client.get(LATENCY)
    assert response.status_code == 200
    assert response.json()["window"]["name"] == "24h"


@pytest.mark.parametrize("header", ["HTTP_X_API_KEY", "HTTP_AUTHORIZATION"])
def test_a_staff_key_with_the_metrics_scope_reads_every_users_requests(
    header, staff_metrics_key, add_metrics, alice, bob, now
):
    add_metrics(created_at=now - timedelta(minutes=3), user=alice)
    add_metrics(created_at=now - timedelta(minutes=3), user=bob)
    value = staff_metrics_key if header == "HTTP_X_API_KEY" else f"Bearer {staff_metrics_key}"
    response = Client().get(LATENCY, {"window": "1h"}, **{header: value})
    assert response.status_code == 200
    assert response.json()["overall"]["count"] == 2


def test_a_non_staff_key_sees_only_its_owners_requests(metrics_key, add_metrics, alice, bob, now):
    add_metrics(created_at=now - timedelta(minutes=3), user=alice, total_ms=100.0)
    add_metrics(created_at=now - timedelta(minutes=3), user=bob, total_ms=900.0)
    body = Client().get(LATENCY, {"window": "1h"}, HTTP_X_API_KEY=metrics_key).json()
    assert body["overall"]["count"] == 1
    assert body["overall"]["latency"]["total_ms"]["p99"] == 100.0
    assert body["filters"]["user"] == alice.pk


def test_a_non_staff_key_asking_for_another_user_gets_404(metrics_key, bob):
    response = Client().get(LATENCY, {"user": bob.pk}, HTTP_X_API_KEY=metrics_key)
    assert response.status_code == 404


def test_the_json_holds_the_same_numbers_as_the_report(staff_metrics_key, add_metrics, now):
    add_metrics(generated_rows(count=300, start=now - timedelta(hours=1), span=timedelta(hours=1), seed=9))
    start, end = now - timedelta(hours=2), now
    params = {"start": start.isoformat(), "end": end.isoformat(), "group_by": "backend"}
    body = Client().get(LATENCY, params, HTTP_X_API_KEY=staff_metrics_key).json()
    report = latency_report(metric_filters(start=start, end=end), group_by=("backend",))
    assert body["window"]["name"] == "custom"
    assert body["group_by"] == ["backend"]
    assert body["overall"]["latency"]["ttft_ms"]["p95"] == pytest.approx(report.overall.latency["ttft_ms"].p95)
    counts = {g["key"]["backend"]: g["count"] for g in body["groups"]}
    assert counts == {g.key["backend"]: g.count for g in report.groups}
    assert body["series"]["bucket_seconds"] == report.bucket_seconds
    assert [p["count"] for p in body["series"]["points"]] == [p.count for p in report.series]
    assert set(body["histograms"]) == {"ttft_ms", "total_ms", "time_to_first_audio_ms", "speech_total_ms"}
    assert body["source"]["name"] == report.source == "raw"
    assert body["previous"]["count"] == report.previous.count
    assert sum(b["count"] for b in body["histograms"]["total_ms"]) == 300
    assert set(body["overall"]["upstream"]) == {
        "upstream_queue_ms", "upstream_load_ms", "upstream_prompt_ms", "upstream_generation_ms"
    }


def test_an_empty_window_is_valid_json_with_nulls(staff_metrics_key):
    body = Client().get(LATENCY, {"window": "15m"}, HTTP_X_API_KEY=staff_metrics_key).json()
    assert body["overall"]["count"] == 0
    assert body["overall"]["latency"]["total_ms"] == {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None}
    assert body["groups"] == [] and body["errors"] == {"by_code": [], "recent": []}


@pytest.mark.parametrize(
    "params",
    [
        {"window": "forever"},
        {"channel": "fax"},
        {"group_by": "colour"},
        {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
    ],
)
def test_bad_parameters_get_422_with_a_code(staff_metrics_key, params):
    response = Client().get(LATENCY, params, HTTP_X_API_KEY=staff_metrics_key)
    assert response.status_code == 422
    assert response.json()["code"].startswith("invalid_")


async def _csv(client: AsyncClient, params: dict, key: str | None = None) -> tuple[int, list[list[str]], dict]:
    response = await client.get(CSV, params, headers={"X-API-Key": key} if key else {})
    if response.status_code != 200:
        return response.status_code, [], dict(response.items())
    text = b"".join([chunk async for chunk in response.streaming_content]).decode()
    return response.status_code, list(csv.reader(io.StringIO(text))), dict(response.items())


async def test_the_csv_holds_the_raw_rows_of_the_window_oldest_first(make_user, now):
    from asgiref.sync import sync_to_async

    from metrics.models import RequestMetric

    staff = await sync_to_async(lambda: grant_view_latency(make_user("root", is_staff=True)))()
    _, key = await sync_to_async(api_key_create)(owner=staff, name="export", scopes="metrics")
    rows = [
        RequestMetric(created_at=now - timedelta(minutes=m), channel="ws", backend="ollama", model="phi3:mini",
                      status="ok", total_ms=float(m), ttft_ms=None, session_id="=HYPERLINK(1)")
        for m in (5, 3, 90)
    ]
    await RequestMetric.objects.abulk_create(rows)
    status, table, headers = await _csv(AsyncClient(), {"window": "1h"}, key=key)
    assert status == 200
    assert headers["Content-Type"].startswith("text/csv")
    assert "attachment" in headers["Content-Disposition"]
    header, *data = table
    assert header[:3] == ["id", "created_at", "request_id"]
    assert [row[header.index("total_ms")] for row in data] == ["5.0", "3.0"]
    assert data[0][header.index("ttft_ms")] == ""
    assert data[0][header.index("session_id")] == "'=HYPERLINK(1)"  # not run as a formula by a spreadsheet


async def test_the_csv_needs_the_metrics_scope(make_user):
    from asgiref.sync import sync_to_async

    alice = await sync_to_async(make_user)("alice")
    _, chat_key = await sync_to_async(api_key_create)(owner=alice, name="chat", scopes="chat")
    assert (await _csv(AsyncClient(), {}))[0] == 401
    assert (await _csv(AsyncClient(), {}, key=chat_key))[0] == 403


async def test_an_empty_window_exports_only_the_header(make_user):
    from asgiref.sync import sync_to_async

    staff = await sync_to_async(lambda: grant_view_latency(make_user("root", is_staff=True)))()
    _, key = await sync_to_async(api_key_create)(owner=staff, name="export", scopes="metrics")
    status, table, _ = await _csv(AsyncClient(), {"window": "15m"}, key=key)
    assert status == 200 and len(table) == 1


async def test_the_csv_pages_through_rows_sharing_a_timestamp_without_losing_any(make_user, now, monkeypatch):
    from asgiref.sync import sync_to_async

    from metrics import export
    from metrics.models import RequestMetric

    monkeypatch.setattr(export, "FETCH_ROWS", 2)
    staff = await sync_to_async(lambda: grant_view_latency(make_user("root", is_staff=True)))()
    _, key = await sync_to_async(api_key_create)(owner=staff, name="export", scopes="metrics")
    same = now - timedelta(minutes=10)
    await RequestMetric.objects.abulk_create(
        [RequestMetric(created_at=same, channel="ws", status="ok", total_ms=float(n)) for n in range(5)]
        + [RequestMetric(created_at=same + timedelta(seconds=1), channel="ws", status="ok", total_ms=5.0)]
    )
    _, table, _ = await _csv(AsyncClient(), {"window": "1h"}, key=key)
    header, *data = table
    assert [row[header.index("total_ms")] for row in data] == ["0.0", "1.0", "2.0", "3.0", "4.0", "5.0"]


# --- #18: one permission, metrics.view_latency, for the dashboard, JSON, CSV and admin ------------


def test_staff_without_the_permission_see_only_their_own_rows_everywhere(bare_staff, add_metrics, alice, now):
    add_metrics([{"created_at": now - timedelta(minutes=5), "user": alice}, {"created_at": now - timedelta(minutes=5)}])
    client = Client()
    client.force_login(bare_staff)
    assert client.get("/dashboard/latency/").status_code == 403
    assert client.get(LATENCY).status_code == 403  # a session needs the permission
    assert client.get("/admin/metrics/requestmetric/").status_code == 403
    _, key = api_key_create(owner=bare_staff, name="mine", scopes="metrics")
    assert Client().get(LATENCY, HTTP_X_API_KEY=key).json()["overall"]["count"] == 0  # their own rows: none


def test_the_permission_opens_the_dashboard_json_csv_and_admin(staff, add_metrics, alice, now):
    add_metrics([{"created_at": now - timedelta(minutes=5), "user": alice}, {"created_at": now - timedelta(minutes=5)}])
    client = Client()
    client.force_login(staff)
    assert client.get("/dashboard/latency/").status_code == 200
    assert client.get(LATENCY).json()["overall"]["count"] == 2
    assert client.get("/admin/metrics/requestmetric/").status_code == 200
    _, key = api_key_create(owner=staff, name="grafana", scopes="metrics")
    assert Client().get(LATENCY, HTTP_X_API_KEY=key).json()["overall"]["count"] == 2
    # The CSV with this key: every user's rows (test_the_csv_holds_the_raw_rows_of_the_window_oldest_first).
