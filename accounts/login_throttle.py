"""Login throttling with django-axes: per username and per client address, on every login page.

Axes counts the failed logins of /login/ and /admin/login/ (both call `authenticate` with the
request) in the cache, Redis when REDIS_URL is set, so that every process shares the counts.
After LOGIN_FAILURE_LIMIT failures for one username, or from one address, logins are refused
for LOGIN_COOLOFF_MINUTES with the page `registration/lockout.html` (429), even with the right
password. The settings live in evaproject/settings.py ("login throttling").
"""

from __future__ import annotations

import math
from typing import Any

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.views import CONTENT_SECURITY_POLICY

LOCKOUT_TEMPLATE = "registration/lockout.html"


class LoginThrottleBackend(AxesStandaloneBackend):  # type: ignore[misc]  # axes ships no type hints
    """Refuses a locked-out login before ModelBackend checks the password; logs no one in.

    A call without a request (a management command, the test client's `login()`) has no
    client to count: it is left to the next backend instead of failing as axes' own does.
    """

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> None:
        if request is None:
            return None
        super().authenticate(request, username=username, password=password, **kwargs)
        return None


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """The page a locked-out login gets (AXES_LOCKOUT_CALLABLE): what happened and how long to wait."""
    minutes = max(1, math.ceil(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    response = render(request, LOCKOUT_TEMPLATE, {"cooloff_minutes": minutes}, status=429)
    response["Retry-After"] = str(minutes * 60)
    response["Cache-Control"] = "no-store"
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response
