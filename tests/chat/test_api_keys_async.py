"""api_key_authenticate_async (the chat endpoints' key check): on Postgres through the async pool,
otherwise through the ORM; the same keys pass and the same errors come out as the sync check."""

from __future__ import annotations

import hmac
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.utils import timezone

from accounts import api_keys
from accounts.api_keys import api_key_authenticate_async, api_key_create, api_key_revoke
from accounts.errors import AuthenticationFailed, PermissionDenied
from accounts.models import ApiKey

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=[True, False], ids=["async-pool", "orm"])
def path(request, settings):
    settings.DATABASE_ASYNC = request.param
    return request.param


@sync_to_async
def new_key(scopes="chat", *, active=True, expires_at=None):
    user = get_user_model().objects.create_user(f"u{ApiKey.objects.count()}", email="a@example.com", is_active=active)
    return api_key_create(owner=user, name="phone", scopes=scopes, expires_at=expires_at)


async def test_a_valid_key_comes_back_with_its_owner_as_the_orm_loads_them(path):
    key, plaintext = await new_key("chat,tts")
    found = await api_key_authenticate_async(raw_key=plaintext, scope="chat")
    assert (found.pk, found.prefix, found.scopes, found.name) == (key.pk, key.prefix, ["chat", "tts"], "phone")
    assert found.has_scope("tts") and not found.has_scope("metrics")
    owner = found.owner  # loaded with the key: no query here in async code
    expected = (key.owner.pk, key.owner.username, "a@example.com", True)
    assert (owner.pk, owner.username, owner.email, owner.is_active) == expected
    # A saved instance, as the ORM would load it: refreshing it from the database changes nothing.
    await found.arefresh_from_db()
    assert (found.pk, found.prefix, found.scopes) == (key.pk, key.prefix, ["chat", "tts"])


@pytest.mark.parametrize(
    "raw, code",
    [
        (None, "missing_api_key"),
        ("", "missing_api_key"),
        ("eva_onlytwo", "invalid_api_key"),
        ("xyz_a_b", "invalid_api_key"),
    ],
)
async def test_missing_and_malformed_keys_are_refused(path, raw, code):
    with pytest.raises(AuthenticationFailed) as error:
        await api_key_authenticate_async(raw_key=raw)
    assert error.value.code == code


async def test_a_tampered_secret_and_an_unknown_prefix_are_refused_alike(path, monkeypatch):
    _, plaintext = await new_key()
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(api_keys.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    tampered = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    unknown_prefix = f"eva_ffffffffffff_{plaintext.split('_', 2)[2]}"
    for raw in (tampered, unknown_prefix):
        with pytest.raises(AuthenticationFailed) as error:
            await api_key_authenticate_async(raw_key=raw)
        assert error.value.code == "invalid_api_key"
    assert len(calls) == 2  # the unknown prefix goes through the constant-time comparison too


async def test_revoked_expired_inactive_and_out_of_scope_keys_are_refused(path):
    key, revoked = await new_key()
    await sync_to_async(api_key_revoke)(owner=key.owner, key_id=key.pk)
    expiring, expired = await new_key(expires_at=timezone.now() + timedelta(hours=1))
    await ApiKey.objects.filter(pk=expiring.pk).aupdate(expires_at=timezone.now() - timedelta(seconds=1))
    _, inactive = await new_key(active=False)
    _, tts_only = await new_key("tts")
    for raw, code in ((revoked, "revoked_api_key"), (expired, "expired_api_key"), (inactive, "inactive_user")):
        with pytest.raises(AuthenticationFailed) as error:
            await api_key_authenticate_async(raw_key=raw)
        assert error.value.code == code
    with pytest.raises(PermissionDenied) as error:
        await api_key_authenticate_async(raw_key=tts_only, scope="chat")
    assert error.value.code == "missing_scope"


async def test_last_used_is_written_once_per_window(path, settings):
    key, plaintext = await new_key()
    await api_key_authenticate_async(raw_key=plaintext)
    first = (await ApiKey.objects.aget(pk=key.pk)).last_used_at
    assert first is not None and timezone.now() - first < timedelta(seconds=30)
    await api_key_authenticate_async(raw_key=plaintext)
    assert (await ApiKey.objects.aget(pk=key.pk)).last_used_at == first  # within the window: no write
    settings.API_KEY_LAST_USED_RESOLUTION_S = 0
    await api_key_authenticate_async(raw_key=plaintext)
    assert (await ApiKey.objects.aget(pk=key.pk)).last_used_at > first
