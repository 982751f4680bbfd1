"""The chat page: a thin shell whose JavaScript uses the REST API and the /ws/chat socket,
so that the browser and the mobile apps share one contract."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from accounts.views import with_content_security_policy


@with_content_security_policy
@login_required
def chat_page(request: HttpRequest) -> HttpResponse:
    """The chat: conversations on the side, the open one in the middle, streaming over /ws/chat."""
    config = {
        "wsPath": "/ws/chat",
        "maxMessageChars": settings.CHAT_MAX_MESSAGE_CHARS,
        "loginUrl": reverse("login"),
    }
    return render(request, "chat/chat.html", {"chat_config": config})
