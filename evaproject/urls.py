"""URL map: pages, admin, REST API (/api/...), the legacy POST /chat, health probes."""

from django.contrib import admin
from django.urls import include, path

from evaproject import health
from evaproject.api import api, legacy_api, register_routers

register_routers()

urlpatterns = [
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    # The pages first: a NinjaAPI always adds a root view ("api-root") at its own prefix,
    # which for the legacy API at "" would shadow the chat page at "/".
    path("", include("chat.urls")),
    path("", include("accounts.urls")),
    path("", legacy_api.urls),
    path("", include("metrics.urls")),
    path("", include("voice.urls")),
]
