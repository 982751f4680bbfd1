"""API keys in the Django admin: created there, shown once, never again."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.api_keys import api_key_authenticate
from accounts.models import ApiKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_logged_in():
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client = Client()
    client.force_login(admin)
    return client, admin


def test_a_key_created_in_the_admin_is_shown_once_and_works(admin_client_logged_in):
    client, admin = admin_client_logged_in
    response = client.post(
        "/admin/accounts/apikey/add/", {"owner": admin.pk, "name": "ops", "scopes": ["chat", "metrics"]}
    )
    assert response.status_code == 200 and "never again" in response.content.decode()
    plaintext = response.context["plaintext"]  # the page that answers the form shows it (tests/test_admin_new_key.py)
    key = api_key_authenticate(raw_key=plaintext, scope="metrics")
    assert key.name == "ops" and ApiKey.objects.count() == 1
    change_page = client.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    secret = plaintext.split("_", 2)[2]
    assert secret not in change_page and key.hashed_secret not in change_page
    listing = client.get("/admin/accounts/apikey/").content.decode()
    assert secret not in listing and f"eva_{key.prefix}_" in listing


def test_the_admin_revokes_keys_in_bulk(admin_client_logged_in):
    client, admin = admin_client_logged_in
    from accounts.api_keys import api_key_create

    api_key_create(owner=admin, name="old", scopes="chat")
    key = ApiKey.objects.get()
    client.post("/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.revoked_at is not None
