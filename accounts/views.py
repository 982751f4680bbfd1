"""Pages about the account: the API keys page, log in, log out and sign up.

The keys page is a thin shell: its JavaScript uses /api/v1/keys, as the mobile apps do.
Every page EVA renders sends CONTENT_SECURITY_POLICY (`with_content_security_policy`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_GET, require_http_methods

from accounts.forms import SignupForm
from accounts.models import Scope

# Model output is rendered by our own strict Markdown code, which never builds HTML from
# strings; this policy is the second wall: even an injected <script> or onerror= would not run.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def with_content_security_policy(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Send CONTENT_SECURITY_POLICY with the page (only our own scripts, styles and sockets)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.setdefault("Referrer-Policy", "same-origin")
        return response

    return wrapped


SCOPE_CHOICES = [
    (Scope.CHAT.value, "Chat", "WebSocket and REST chat"),
    (Scope.TTS.value, "Text-to-speech", "/api/v1/tts"),
    (Scope.METRICS.value, "Metrics", "latency statistics (staff)"),
]


@with_content_security_policy
@login_required
def keys_page(request: HttpRequest) -> HttpResponse:
    """Create, list and revoke one's own API keys (through /api/v1/keys)."""
    user: Any = request.user  # logged in (login_required)
    scopes = [
        {"value": scope, "label": label, "help": help_text, "checked": scope == Scope.CHAT}
        for scope, label, help_text in SCOPE_CHOICES
        if scope != Scope.METRICS or user.is_staff
    ]
    return render(request, "accounts/keys.html", {"scopes": scopes})


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "signup_enabled": settings.SIGNUP_ENABLED}

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = super().dispatch(request, *args, **kwargs)
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response


class LogoutView(auth_views.LogoutView):
    """POST only (Django 5): a link or an image cannot log someone out."""


@with_content_security_policy
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    """Create an account and log in; a 404 unless SIGNUP_ENABLED (checked per request)."""
    if not settings.SIGNUP_ENABLED:
        raise Http404("Sign-up is closed.")
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/signup.html", {"form": form})


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico, which browsers and crawlers ask for whatever the page says: the static icon."""
    return redirect(static("favicon.ico"), permanent=True)
