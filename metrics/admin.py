"""Admin for request metrics (read-only) and the way in to the latency dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from metrics.models import VIEW_LATENCY, LatencyDashboard, RequestMetric

# Django's admin classes are generic only in django-stubs: subscripted for the type checker
# alone, since subscripting them at run time needs django_stubs_ext to patch them.
if TYPE_CHECKING:
    _MetricModelAdmin = admin.ModelAdmin[RequestMetric]
    _DashboardModelAdmin = admin.ModelAdmin[LatencyDashboard]
else:
    _MetricModelAdmin = admin.ModelAdmin
    _DashboardModelAdmin = admin.ModelAdmin


@admin.register(RequestMetric)
class RequestMetricAdmin(_MetricModelAdmin):
    list_display = ["created_at", "channel", "backend", "model", "status", "error_code", "ttft_ms", "total_ms", "user"]
    # Only fields with fixed choices: a filter on backend would scan the whole table for its values.
    list_filter = ["channel", "status"]
    search_fields = ["request_id", "session_id", "model", "error_code"]
    list_select_related = ["user"]
    # COUNT(*) over millions of rows on every page load is what makes big changelists slow.
    show_full_result_count = False

    # One permission for every way to read all users' metrics (dashboard, JSON, CSV, here).
    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm(VIEW_LATENCY))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm(VIEW_LATENCY))

    # Metrics are evidence: they are read and pruned, never edited by hand.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(LatencyDashboard)
class LatencyDashboardAdmin(_DashboardModelAdmin):
    """An entry in the admin index whose page is the dashboard (for holders of metrics.view_latency)."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm(VIEW_LATENCY))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm(VIEW_LATENCY))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return HttpResponseRedirect(reverse("metrics-dashboard"))
