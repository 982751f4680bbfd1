"""A key created in the Django admin is shown on the page that answers the form, and is in no
cookie (the `messages` cookie is signed, not encrypted), no session and no later page."""

from __future__ import annotations

from http.cookies import SimpleCookie

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.messages.storage.cookie import CookieStorage
from django.contrib.sessions.models import Session
from django.http import HttpRequest
from django.test import Client

from accounts.api_keys import api_key_authenticate

pytestmark = pytest.mark.django_db


def decoded_cookies(cookies: SimpleCookie) -> list[str]:
    """Every cookie value as text, and what Django itself reads from the messages cookie."""
    texts = [morsel.value for morsel in cookies.values()]
    request = HttpRequest()
    request.COOKIES = {name: morsel.value for name, morsel in cookies.items()}
    texts += [str(message) for message in CookieStorage(request)]
    return texts


@pytest.mark.parametrize("button", ["_save", "_addanother", "_continue"])
def test_the_new_key_is_shown_once_and_never_put_in_a_cookie(button):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client = Client()
    client.force_login(admin)
    form = {"owner": admin.pk, "name": "ops", "scopes": ["chat"], button: "1"}
    response = client.post("/admin/accounts/apikey/add/", form)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    plaintext = response.context["plaintext"]
    assert plaintext in response.content.decode()
    secret = plaintext.split("_", 2)[2]
    assert api_key_authenticate(raw_key=plaintext, scope="chat").name == "ops"

    # Every cookie this answer set, and every one the client now holds, decoded as Django reads them.
    for texts in (decoded_cookies(response.cookies), decoded_cookies(client.cookies)):
        assert all(secret not in text for text in texts)
    # Sessions live in the database: the secret is in none of them either.
    assert all(secret not in str(session.get_decoded()) for session in Session.objects.all())
    # And no later page shows it (a message left for the next page would).
    for later in ("/admin/", "/admin/accounts/apikey/"):
        assert secret not in client.get(later).content.decode()
    assert settings.SESSION_ENGINE == "django.contrib.sessions.backends.db"
