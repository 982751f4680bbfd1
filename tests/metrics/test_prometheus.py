"""GET /metrics: the token, the text format, and the sum over several web processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from metrics.models import RequestMetric
from metrics.prometheus import observe_request_metric
from metrics.recorder import record_metric_sync

REPO = Path(__file__).resolve().parents[2]
TOKEN = "scrape-secret-0123456789"


@pytest.fixture
def token(settings):
    settings.PROMETHEUS_TOKEN = TOKEN
    settings.PROMETHEUS_MULTIPROC_DIR = ""
    return TOKEN


def scrape(token: str = TOKEN) -> dict[str, list]:
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    families = text_string_to_metric_families(response.content.decode())
    return {family.name: family.samples for family in families}


def value(samples: list, name: str, **labels: str) -> float:
    matching = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, (name, labels, matching)
    return matching[0]


def test_it_is_off_with_a_clear_404_when_no_token_is_set(settings):
    settings.PROMETHEUS_TOKEN = ""
    response = Client().get("/metrics")
    assert response.status_code == 404
    assert b"set PROMETHEUS_TOKEN" in response.content


@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"])
def test_it_refuses_a_missing_or_wrong_token(token, header):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = Client().get("/metrics", **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_recorded_requests_show_as_histograms_and_counters(token):
    model = f"model-{uuid.uuid4().hex[:8]}"  # values in this process add up across tests
    base = {"channel": "ws", "backend": "ollama", "model": model}
    record_metric_sync(**base, status="ok", ttft_ms=40.0, total_ms=180.0, tokens_out=12)
    record_metric_sync(**base, status="ok", ttft_ms=400.0, total_ms=2500.0)
    record_metric_sync(**base, status="error", error_code="upstream_timeout", ttft_ms=None, total_ms=20000.0)
    record_metric_sync(**base, status="fallback", ttft_ms=900.0, total_ms=1500.0)
    assert RequestMetric.objects.filter(model=model).count() == 4
    families = scrape()
    labels = {"backend": "ollama", "model": model, "channel": "ws"}
    requests = families["eva_requests"]
    assert value(requests, "eva_requests_total", **labels, status="ok") == 2
    assert value(requests, "eva_requests_total", **labels, status="error") == 1
    assert value(families["eva_request_errors"], "eva_request_errors_total", **labels, code="upstream_timeout") == 1
    assert value(families["eva_request_fallbacks"], "eva_request_fallbacks_total", **labels) == 1
    ttft = families["eva_request_ttft_seconds"]
    assert value(ttft, "eva_request_ttft_seconds_count", **labels) == 3  # the error had no first token
    assert value(ttft, "eva_request_ttft_seconds_bucket", **labels, le="0.05") == 1
    assert value(ttft, "eva_request_ttft_seconds_bucket", **labels, le="0.5") == 2
    assert value(ttft, "eva_request_ttft_seconds_bucket", **labels, le="+Inf") == 3
    assert value(ttft, "eva_request_ttft_seconds_sum", **labels) == pytest.approx(1.34)
    total = families["eva_request_duration_seconds"]
    assert value(total, "eva_request_duration_seconds_bucket", **labels, le="2.0") == 2
    assert value(total, "eva_request_duration_seconds_count", **labels) == 4


def test_time_to_first_audio_has_its_own_histogram(token):
    model = f"tts-{uuid.uuid4().hex[:8]}"
    observe_request_metric(
        RequestMetric(
            channel="tts", backend="mms", model=model, status="ok", total_ms=800.0, time_to_first_audio_ms=350.0
        )
    )
    audio = scrape()["eva_request_first_audio_seconds"]
    labels = {"backend": "mms", "model": model, "channel": "tts"}
    assert value(audio, "eva_request_first_audio_seconds_bucket", **labels, le="0.3") == 0
    assert value(audio, "eva_request_first_audio_seconds_bucket", **labels, le="0.5") == 1


WRITER = """
import sys
import django
django.setup()
from metrics.models import RequestMetric
from metrics.prometheus import observe_request_metric
for _ in range(int(sys.argv[1])):
    observe_request_metric(
        RequestMetric(channel="rest", backend="groq", model="m", status="ok", ttft_ms=120.0, total_ms=700.0)
    )
observe_request_metric(
    RequestMetric(channel="rest", backend="groq", model="m", status="error", error_code="x", total_ms=50.0)
)
"""


def test_several_processes_add_up_in_multiprocess_mode(settings, tmp_path):
    """Two 'web processes' record into PROMETHEUS_MULTIPROC_DIR; one scrape sees both."""
    settings.PROMETHEUS_TOKEN = TOKEN
    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "evaproject.settings"}
    workers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(n)], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
        for n in (3, 5)
    ]
    for worker in workers:
        _, errors = worker.communicate(timeout=60)
        assert worker.returncode == 0, errors[-2000:]
    assert len(list(tmp_path.glob("*.db"))) >= 2  # one file set per process
    families = scrape()
    labels = {"backend": "groq", "model": "m", "channel": "rest"}
    assert value(families["eva_requests"], "eva_requests_total", **labels, status="ok") == 8
    assert value(families["eva_requests"], "eva_requests_total", **labels, status="error") == 2
    assert value(families["eva_request_errors"], "eva_request_errors_total", **labels, code="x") == 2
    ttft = families["eva_request_ttft_seconds"]
    assert value(ttft, "eva_request_ttft_seconds_count", **labels) == 8
    assert value(ttft, "eva_request_ttft_seconds_bucket", **labels, le="0.1") == 0
    assert value(ttft, "eva_request_ttft_seconds_bucket", **labels, le="0.2") == 8
    assert value(families["eva_request_duration_seconds"], "eva_request_duration_seconds_count", **labels) == 10
