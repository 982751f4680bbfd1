"""Prometheus export of request latency: what GET /metrics serves.

Every recorded RequestMetric is observed here (a recorder observer, registered in
`MetricsConfig.ready`) into histograms of time to first token, total latency and time to
first audio, and counters of requests, errors and fallbacks, labelled by backend, model and
channel; and the count of metric rows that could not be written (metrics.recorder), by reason.

Several web processes: with PROMETHEUS_MULTIPROC_DIR set in the environment of every
process, prometheus_client writes each process's values to memory-mapped files in that
directory and a scrape of any one process adds up all of them (multiprocess mode). Without
it the values live in the process that answers the scrape, which is right for one process
only. Counting at record time, rather than querying RequestMetric at scrape time, keeps
counters monotonic when `metrics_prune` deletes old rows and keeps a scrape from scanning
the table.
"""

from __future__ import annotations

import hmac

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

from metrics.models import RequestMetric, Status
from metrics.selectors import HISTOGRAM_EDGES_MS

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
BUCKETS_S = tuple(edge / 1000.0 for edge in HISTOGRAM_EDGES_MS)
LABELS = ("backend", "model", "channel")

# This process's own values. Not the library's global registry, so that nothing else
# registered there (or a second import in tests) changes what /metrics shows.
PROCESS_REGISTRY = CollectorRegistry()

REQUESTS = Counter(
    "eva_requests", "Requests handled, by final status.", (*LABELS, "status"), registry=PROCESS_REGISTRY
)
ERRORS = Counter(
    "eva_request_errors",
    "Requests that ended in an error, by error code.",
    (*LABELS, "code"),
    registry=PROCESS_REGISTRY,
)
FALLBACKS = Counter(
    "eva_request_fallbacks", "Requests answered by a fallback backend.", LABELS, registry=PROCESS_REGISTRY
)
TTFT = Histogram(
    "eva_request_ttft_seconds", "Time to first token.", LABELS, buckets=BUCKETS_S, registry=PROCESS_REGISTRY
)
TOTAL = Histogram(
    "eva_request_duration_seconds", "Total request latency.", LABELS, buckets=BUCKETS_S, registry=PROCESS_REGISTRY
)
FIRST_AUDIO = Histogram(
    "eva_request_first_audio_seconds", "Time to first audio.", LABELS, buckets=BUCKETS_S, registry=PROCESS_REGISTRY
)

METRIC_ROWS_DROPPED = Counter(
    "eva_metric_rows_dropped",
    "Request metric rows lost (logged at ERROR with their content), by reason.",
    ("reason",),
    registry=PROCESS_REGISTRY,
)


def observe_request_metric(metric: RequestMetric) -> None:
    """Count one request into the Prometheus series (called for every recorded metric)."""
    labels = (metric.backend or "none", metric.model or "none", metric.channel or "none")
    REQUESTS.labels(*labels, metric.status).inc()
    if metric.status == Status.ERROR:
        ERRORS.labels(*labels, metric.error_code or "none").inc()
    elif metric.status == Status.FALLBACK:
        FALLBACKS.labels(*labels).inc()
    if metric.ttft_ms is not None:
        TTFT.labels(*labels).observe(metric.ttft_ms / 1000.0)
    if metric.total_ms is not None:
        TOTAL.labels(*labels).observe(metric.total_ms / 1000.0)
    if metric.time_to_first_audio_ms is not None:
        FIRST_AUDIO.labels(*labels).observe(metric.time_to_first_audio_ms / 1000.0)


def render_prometheus(*, multiprocess_dir: str) -> bytes:
    """The text exposition: every process's values when `multiprocess_dir` is set, else this one's."""
    if multiprocess_dir:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=multiprocess_dir)
        return generate_latest(registry)
    return generate_latest(PROCESS_REGISTRY)


def bearer_token_matches(*, authorization: str, expected: str) -> bool:
    """Whether an `Authorization: Bearer <token>` header carries `expected` (constant time)."""
    scheme, _, presented = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not expected:
        return False
    return hmac.compare_digest(presented.strip().encode(), expected.encode())
