from django.apps import AppConfig
from django.db.backends.signals import connection_created


class MetricsConfig(AppConfig):
    name = "metrics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from metrics.prometheus import observe_request_metric
        from metrics.recorder import add_metric_observer
        from metrics.stats import register_sqlite_functions

        connection_created.connect(register_sqlite_functions, dispatch_uid="metrics.sqlite_functions")
        add_metric_observer(observe_request_metric)
