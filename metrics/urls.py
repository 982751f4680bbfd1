"""Page and non-API URLs of the metrics app."""

from django.urls import path

from metrics import views

urlpatterns = [
    path("dashboard/latency/", views.latency_dashboard, name="metrics-dashboard"),
    path("metrics", views.prometheus_metrics, name="metrics-prometheus"),
]
