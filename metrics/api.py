"""REST endpoints of the metrics app (mounted under /api/v1/): the dashboard's numbers as JSON, and CSV.

Auth: an API key with the `metrics` scope, or a browser session of a user with the
metrics.view_latency permission. A holder of that permission (or their key) sees every
request; a key of any other user sees only that user's own requests.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Query, Router

from accounts.auth import Principal, auth_for, request_principal
from accounts.error_schemas import AUTH_ERRORS, error_responses
from accounts.errors import NotFound
from accounts.models import Scope
from metrics.export import metrics_csv_chunks
from metrics.models import VIEW_LATENCY
from metrics.report import LatencyReport, MetricFilters
from metrics.schemas import LatencyQuery, LatencyReportOut
from metrics.selectors import latency_report, metric_filters, parse_group_by

router = Router(tags=["metrics"])
# A non-staff key asking for another user's requests is 404; a parameter out of bounds, 422.
METRICS_ERRORS = error_responses(*AUTH_ERRORS, 404, 422)


def _filters_for(principal: Principal, params: LatencyQuery) -> MetricFilters:
    user_id = params.user
    if not principal.user.has_perm(VIEW_LATENCY):
        if user_id is not None and user_id != principal.user_id:
            raise NotFound("No such user.")
        user_id = principal.user_id
    return metric_filters(
        window=params.window,
        start=params.start,
        end=params.end,
        backend=params.backend,
        model=params.model,
        channel=params.channel,
        user_id=user_id,
        api_key_id=params.key,
    )


def report_as_json(report: LatencyReport) -> dict[str, Any]:
    """The report in the API's shape (see LatencyReportOut)."""
    filters = report.filters
    return {
        "window": {"name": filters.window.name, "start": filters.window.start, "end": filters.window.end},
        "filters": {
            "backend": filters.backend,
            "model": filters.model,
            "channel": filters.channel,
            "user": filters.user_id,
            "key": filters.api_key_id,
        },
        "group_by": list(report.group_by),
        "overall": asdict(report.overall),
        "groups": [asdict(group) for group in report.groups],
        "series": {"bucket_seconds": report.bucket_seconds, "points": [asdict(point) for point in report.series]},
        "histograms": {name: [asdict(item) for item in bins] for name, bins in report.histograms.items()},
        "errors": {"by_code": report.error_codes, "recent": report.recent_errors},
        "source": {"name": report.source, "start": report.source_start, "end": report.source_end},
        "previous": asdict(report.previous) if report.previous is not None else None,
    }


@router.get(
    "/metrics/latency",
    auth=auth_for(Scope.METRICS),
    response={200: LatencyReportOut, **METRICS_ERRORS},
    summary="Latency percentiles, counts, error rates, time series and histograms for a window",
)
def latency(request: HttpRequest, params: Query[LatencyQuery]) -> dict[str, Any]:
    filters = _filters_for(request_principal(request), params)
    report = latency_report(filters, group_by=parse_group_by(params.group_by), source=params.source)
    return report_as_json(report)


@router.get(
    "/metrics/export.csv",
    auth=auth_for(Scope.METRICS),
    summary="The raw request metrics of a window as CSV, oldest first",
    response={200: None, **METRICS_ERRORS},
    openapi_extra={"responses": {200: {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}}}},
)
async def export_csv(request: HttpRequest, params: Query[LatencyQuery]) -> StreamingHttpResponse:
    # has_perm reads the database: in a thread, as every ORM call from this async view.
    filters = await sync_to_async(_filters_for)(request_principal(request), params)
    window = filters.window
    response = StreamingHttpResponse(metrics_csv_chunks(filters), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="eva-metrics-{window.start:%Y%m%dT%H%M%S}-{window.end:%Y%m%dT%H%M%S}.csv"'
    )
    return response
