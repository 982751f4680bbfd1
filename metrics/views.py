"""Pages of the metrics app: the staff latency dashboard and the Prometheus scrape endpoint."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from accounts.errors import InvalidInput
from metrics import charts
from metrics.forms import METRIC_CHOICES, METRIC_LABELS, LatencyFilterForm
from metrics.models import VIEW_LATENCY, Channel
from metrics.prometheus import CONTENT_TYPE, bearer_token_matches, render_prometheus
from metrics.selectors import (
    filter_choices,
    latency_report,
    metric_filters,
    parse_group_by,
)

EXPORT_PARAMS = ("window", "start", "end", "backend", "model", "channel", "user", "key", "group_by", "source")


@never_cache
@staff_member_required
@require_GET
def latency_dashboard(request: HttpRequest) -> HttpResponse:
    """P50/P95/P99, volume, errors and where the time went, for the filtered window."""
    if not request.user.has_perm(VIEW_LATENCY):  # staff alone is not enough (the admin agrees)
        raise PermissionDenied("The latency dashboard needs the metrics.view_latency permission.")
    form = LatencyFilterForm(request.GET)
    form.is_valid()  # invalid fields fall back to their defaults; the form shows the errors
    data: dict[str, Any] = form.cleaned_data
    try:
        filters = metric_filters(
            window=data.get("window"),
            start=data.get("start"),
            end=data.get("end"),
            backend=data.get("backend") or "",
            model=data.get("model") or "",
            channel=data.get("channel") or "",
            user_id=data.get("user"),
            api_key_id=data.get("key"),
        )
    except InvalidInput as exc:
        form.add_error(None, exc.message)
        filters = metric_filters(window="24h")
    group_by = parse_group_by(data.get("group_by"))
    metric = data.get("metric") or "total_ms"
    try:
        report = latency_report(filters, group_by=group_by, fields=(metric,), source=data.get("source") or "auto")
    except InvalidInput as exc:
        form.add_error(None, exc.message)
        report = latency_report(filters, group_by=group_by, fields=(metric,))
    overall_metric = report.overall.latency[metric]
    query = {name: _query_value(data.get(name)) for name in EXPORT_PARAMS}
    query = {name: value for name, value in query.items() if value}
    context = {
        "title": "Latency dashboard",
        "form": form,
        "filters": filters,
        "report": report,
        "metric": metric,
        "metric_label": METRIC_LABELS[metric],
        "metric_links": [
            (name, label, urlencode({**query, "metric": name})) for name, label in METRIC_CHOICES
        ],
        "choices": {**filter_choices(filters.window, source=report.source), "channel": Channel.values},
        "percentile_chart": charts.percentile_chart(report.series, metric=metric),
        "volume_chart": charts.volume_chart(report.series),
        "histogram_chart": charts.histogram_chart(
            report.histograms[metric],
            percentiles={"p50": overall_metric.p50, "p95": overall_metric.p95, "p99": overall_metric.p99},
        ),
        "percentile_styles": charts.PERCENTILE_STYLES,
        "bucket_label": charts.bucket_label(report.bucket_seconds),
        "split": charts.upstream_split(report.groups),
        "split_parts": charts.UPSTREAM_PARTS,
        "show_audio": report.overall.latency["time_to_first_audio_ms"].count > 0,
        "show_speech": report.overall.latency["speech_total_ms"].count > 0,
        "export_query": urlencode(query),
        "comparison": charts.comparison(report.overall, report.previous),
        "user_links": _user_links(report.recent_errors),
    }
    return render(request, "metrics/latency_dashboard.html", context)


def _user_links(rows: list[dict[str, Any]]) -> dict[int, str]:
    """The admin page of each user in the error list, by user id."""
    ids = {row["user_id"] for row in rows if row.get("user_id") is not None}
    user_model = get_user_model()
    opts = user_model._meta
    return {pk: reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk]) for pk in ids}


def _query_value(value: Any) -> str:
    if value is None:
        return ""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


@never_cache
@require_GET
def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text format; needs `Authorization: Bearer <PROMETHEUS_TOKEN>`."""
    token = settings.PROMETHEUS_TOKEN
    if not token:
        return HttpResponseNotFound(
            "The Prometheus export is disabled: set PROMETHEUS_TOKEN to enable it.\n", content_type="text/plain"
        )
    if not bearer_token_matches(authorization=request.headers.get("Authorization", ""), expected=token):
        response = HttpResponse(
            "Send the PROMETHEUS_TOKEN as Authorization: Bearer <token>.\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="eva-metrics"'
        return response
    body = render_prometheus(multiprocess_dir=settings.PROMETHEUS_MULTIPROC_DIR)
    return HttpResponse(body, content_type=CONTENT_TYPE)
