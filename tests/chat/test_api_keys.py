"""The API key lifecycle, through the service, the REST API and the management command."""

from __future__ import annotations

import hmac
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from accounts import api_keys
from accounts.api_keys import api_key_authenticate, api_key_create, api_key_revoke
from accounts.errors import AuthenticationFailed, NotFound, PermissionDenied
from accounts.models import ApiKey

pytestmark = pytest.mark.django_db


def test_created_key_authenticates_and_stores_only_a_hash(alice):
    key, plaintext = api_key_create(owner=alice, name="phone", scopes="chat,tts")
    assert plaintext.startswith(f"eva_{key.prefix}_")
    secret = plaintext.split("_", 2)[2]
    stored = ApiKey.objects.get(pk=key.pk)
    assert secret not in stored.hashed_secret and secret not in str(stored.__dict__)
    assert api_key_authenticate(raw_key=plaintext, scope="chat").pk == key.pk
    assert stored.scopes == ["chat", "tts"]


def test_it_rejects_a_tampered_secret(alice):
    _, plaintext = api_key_create(owner=alice, name="phone", scopes="chat")
    tampered = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    with pytest.raises(AuthenticationFailed) as err:
        api_key_authenticate(raw_key=tampered)
    assert err.value.code == "invalid_api_key"


def test_it_rejects_an_unknown_prefix(alice):
    _, plaintext = api_key_create(owner=alice, name="phone", scopes="chat")
    _, _, secret = plaintext.split("_", 2)
    with pytest.raises(AuthenticationFailed) as err:
        api_key_authenticate(raw_key=f"eva_000000000000_{secret}")
    assert err.value.code == "invalid_api_key"


@pytest.mark.parametrize("raw", ["", "garbage", "eva__x", "eva_abc_", "xyz_abc_def", "eva_a_b_c"])
def test_it_rejects_malformed_keys(raw):
    with pytest.raises(AuthenticationFailed):
        api_key_authenticate(raw_key=raw)


def test_it_rejects_an_expired_key(alice):
    key, plaintext = api_key_create(
        owner=alice, name="phone", scopes="chat", expires_at=timezone.now() + timedelta(hours=1)
    )
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(AuthenticationFailed) as err:
        api_key_authenticate(raw_key=plaintext)
    assert err.value.code == "expired_api_key"


def test_it_rejects_a_revoked_key(alice):
    key, plaintext = api_key_create(owner=alice, name="phone", scopes="chat")
    api_key_revoke(owner=alice, key_id=key.pk)
    with pytest.raises(AuthenticationFailed) as err:
        api_key_authenticate(raw_key=plaintext)
    assert err.value.code == "revoked_api_key"


def test_it_refuses_a_key_without_the_scope(alice):
    _, plaintext = api_key_create(owner=alice, name="phone", scopes="chat")
    with pytest.raises(PermissionDenied) as err:
        api_key_authenticate(raw_key=plaintext, scope="metrics")
    assert err.value.code == "missing_scope"


def test_nobody_revokes_someone_elses_key(alice, bob):
    key, _ = api_key_create(owner=alice, name="phone", scopes="chat")
    with pytest.raises(NotFound):
        api_key_revoke(owner=bob, key_id=key.pk)
    assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_secrets_are_compared_in_constant_time(alice, monkeypatch):
    _, plaintext = api_key_create(owner=alice, name="phone", scopes="chat")
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api_keys.hmac, "compare_digest", spy)
    api_key_authenticate(raw_key=plaintext)
    with pytest.raises(AuthenticationFailed):
        api_key_authenticate(raw_key=f"eva_ffffffffffff_{plaintext.split('_', 2)[2]}")
    # Known and unknown prefixes both go through the constant-time comparison.
    assert len(calls) == 2


def test_last_used_is_written_at_most_once_per_window(alice, django_assert_num_queries):
    key, plaintext = api_key_create(owner=alice, name="phone", scopes="chat")
    api_key_authenticate(raw_key=plaintext)
    first = ApiKey.objects.get(pk=key.pk).last_used_at
    assert first is not None
    with django_assert_num_queries(1):  # the lookup only, no UPDATE
        api_key_authenticate(raw_key=plaintext)
    assert ApiKey.objects.get(pk=key.pk).last_used_at == first


def test_management_command_creates_lists_and_revokes(alice):
    out, err = StringIO(), StringIO()
    call_command(
        "apikey", "create", "--user", "alice", "--name", "phone", "--scopes", "chat,tts", stdout=out, stderr=err
    )
    plaintext = out.getvalue().strip()
    assert api_key_authenticate(raw_key=plaintext, scope="tts").owner == alice
    listing = StringIO()
    call_command("apikey", "list", "--user", "alice", stdout=listing)
    assert "phone" in listing.getvalue() and plaintext.split("_", 2)[2] not in listing.getvalue()
    key = ApiKey.objects.get(owner=alice)
    call_command("apikey", "revoke", "--user", "alice", str(key.pk), stdout=StringIO())
    with pytest.raises(AuthenticationFailed):
        api_key_authenticate(raw_key=plaintext)


@pytest.mark.parametrize("days", ["0", "-3", "99999999"])
def test_management_command_refuses_an_expiry_out_of_bounds(alice, days):
    with pytest.raises(CommandError, match="between 1 and"):
        call_command("apikey", "create", "--user", "alice", "--name", "x", "--scopes", "chat",
                     "--expires-in-days", days, stdout=StringIO())
    assert not ApiKey.objects.filter(owner=alice).exists()


def test_rest_keys_endpoint_shows_the_secret_once(alice):
    client = Client()
    client.force_login(alice)
    created = client.post("/api/v1/keys", {"name": "phone", "scopes": ["chat"]}, content_type="application/json")
    assert created.status_code == 201
    plaintext = created.json()["key"]
    listed = client.get("/api/v1/keys").json()
    assert [k["name"] for k in listed] == ["phone"]
    assert "key" not in listed[0] and plaintext not in str(listed)
    revoked = client.post(f"/api/v1/keys/{created.json()['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]


def test_rest_keys_endpoint_rejects_bad_scopes_with_a_code(alice):
    client = Client()
    client.force_login(alice)
    response = client.post("/api/v1/keys", {"name": "x", "scopes": ["root"]}, content_type="application/json")
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_scope"


def test_rest_keys_endpoint_needs_a_browser_session(alice):
    _, plaintext = api_key_create(owner=alice, name="phone", scopes="chat")
    response = Client().get("/api/v1/keys", HTTP_X_API_KEY=plaintext)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_users_cannot_see_each_others_keys(alice, bob):
    api_key_create(owner=alice, name="alice-phone", scopes="chat")
    client = Client()
    client.force_login(bob)
    assert client.get("/api/v1/keys").json() == []
    alice_key = ApiKey.objects.get(owner=alice)
    assert client.post(f"/api/v1/keys/{alice_key.pk}/revoke").status_code == 404
