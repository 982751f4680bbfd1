"""Fixtures for voice tests: a tiny MMS-style voice on disk, and real TTS worker processes.

Real weights cannot be downloaded here, so `tiny_voice` saves a random-weight VitsModel and
a character-vocabulary VitsTokenizer with save_pretrained; the engine loads it through the
same from_pretrained path as facebook/mms-tts-*. Workers are real `manage.py runworker
voice-tts` processes on the real Redis channel layer (CHANNEL_LAYER_PREFIX keeps parallel runs apart).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from metrics.models import RequestMetric
from metrics.recorder import add_metric_observer, flush_metrics, remove_metric_observer
from tests.workers import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
async def _fresh_channel_layer():
    """Each test gets its own channel layer object: pytest-asyncio gives each test a new event
    loop, and channels_redis keeps receive locks and cleanup tasks bound to the loop that
    created them (one loop per process in production, so only tests need this)."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    for layer in list(channel_layers.backends.values()):
        close = getattr(layer, "close_pools", None)
        if close is not None:
            await close()
    channel_layers.backends.clear()


@pytest.fixture(scope="session")
def tiny_voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from voice.engine import build_tiny_voice

    return build_tiny_voice(tmp_path_factory.mktemp("voices") / "tiny-mms")


@pytest.fixture
def voice_settings(settings, tiny_voice):
    """Django settings pointing both voices at the tiny model, as a worker started by `start_worker` has them."""
    settings.MMS_TTS_MODEL = str(tiny_voice)
    settings.TTS_DEFAULT_VOICE = "fra"
    settings.TTS_VOICES = {"fra": str(tiny_voice), "eng": str(tiny_voice)}
    settings.TTS_CPU_THREADS = 1
    settings.TTS_TIMEOUT_S = 30.0
    settings.TTS_PICKUP_TIMEOUT_S = 3.0
    settings.TTS_MAX_CHARS = 1000
    settings.TTS_SPEAKING_RATE = 1.0
    settings.TTS_TRANSPORT = "auto"
    return settings


@pytest.fixture
def start_worker(tiny_voice) -> Iterator:
    """`start_worker(**env)` starts a worker and waits until its model is loaded; all are stopped after the test."""
    started: list[WorkerProcess] = []

    def start(*, wait: bool = True, **env: str) -> WorkerProcess:
        worker = WorkerProcess(model=tiny_voice, **env)
        started.append(worker)
        return worker.wait_ready() if wait else worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def module_worker(tiny_voice) -> Iterator[WorkerProcess]:
    """One worker shared by a module's tests that do not harm it."""
    worker = WorkerProcess(model=tiny_voice).wait_ready()
    yield worker
    worker.stop()


@pytest.fixture
def tts_key(user_key):
    """`await tts_key("alice", scopes="tts")` → (user, plaintext API key); tts scope by default."""
    return lambda username="alice", scopes="tts": user_key(username, scopes)


@pytest.fixture
def local_transport(voice_settings):
    """Synthesis through the web process's own child process (no channel layer)."""
    from voice.client import stop_local_worker

    voice_settings.TTS_TRANSPORT = "local"
    voice_settings.TTS_START_TIMEOUT_S = 60.0
    yield voice_settings
    stop_local_worker()


class RecordedMetrics:
    """Metric rows as they are recorded (a metrics.recorder observer, called as a row is queued):
    a test awaits its request's recording, then writes it with flush_metrics()."""

    def __init__(self) -> None:
        self.recorded: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def __call__(self, metric: RequestMetric) -> None:
        self.recorded[metric.request_id].set()

    async def row(self, request_id: str) -> RequestMetric:
        """The request's metric row, recorded when its speech ended (just after its last frame went out)."""
        await asyncio.wait_for(self.recorded[request_id].wait(), 30)  # a bound, not an ordering
        await flush_metrics()
        return await RequestMetric.objects.aget(request_id=request_id)


@pytest.fixture
def recorded_metrics():
    observer = RecordedMetrics()
    add_metric_observer(observer)
    yield observer
    remove_metric_observer(observer)
