"""Login throttling (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for one username, or
from one address, /login/ and /admin/login/ refuse even the right password, with a clear page."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
PAGES = ["/login/", "/admin/login/"]


@pytest.fixture
def fresh():
    """Usernames and client addresses of this test alone (the counts live in Redis, across runs),
    and their counts reset afterwards through axes' public API."""
    from axes.utils import reset

    token = uuid.uuid4()
    used_names: list[str] = []
    used_ips: list[str] = []

    def name(base: str) -> str:
        used_names.append(f"{base}-{token.hex[:8]}")
        return used_names[-1]

    def ip(index: int | str) -> str:
        """10.x.y.index, x and y this test's own; or the address given (reset afterwards all the same)."""
        used_ips.append(index if isinstance(index, str) else f"10.{token.bytes[0]}.{token.bytes[1]}.{index}")
        return used_ips[-1]

    yield name, ip
    for each in used_names:
        reset(username=each)
    for each in used_ips:
        reset(ip=each)


def log_in(page: str, username: str, password: str, *, ip: str):
    return Client(REMOTE_ADDR=ip).post(page, {"username": username, "password": password})


def logged_in(response) -> bool:
    return response.status_code == 302 and django_settings.SESSION_COOKIE_NAME in response.cookies


def assert_locked_out(response) -> None:
    assert response.status_code == 429
    html = response.content.decode()
    assert "Too many failed logins" in html and "Try again in 15 minutes" in html
    assert "Traceback" not in html and "AxesBackendPermissionDenied" not in html
    assert django_settings.SESSION_COOKIE_NAME not in response.cookies


@pytest.mark.parametrize("page", PAGES)
def test_five_wrong_passwords_lock_the_username_out_even_with_the_right_one(page, make_user, fresh):
    name, ip = fresh
    victim = make_user(name("victim"), password=PASSWORD, is_staff=True)
    for _ in range(4):
        response = log_in(page, victim.username, "wrong password", ip=ip(1))
        assert response.status_code == 200 and "correct username and password" in response.content.decode()
    assert_locked_out(log_in(page, victim.username, "wrong password", ip=ip(1)))  # the fifth
    assert_locked_out(log_in(page, victim.username, PASSWORD, ip=ip(1)))
    assert_locked_out(log_in(page, victim.username, PASSWORD, ip=ip(2)))  # per username: from anywhere

    other = make_user(name("other"), password=PASSWORD, is_staff=True)
    assert logged_in(log_in(page, other.username, PASSWORD, ip=ip(3)))


@pytest.mark.parametrize("page", PAGES)
def test_five_wrong_passwords_from_one_address_lock_that_address_out(page, make_user, fresh):
    name, ip = fresh
    for attempt in range(5):  # five usernames, one address: a password-spraying client
        log_in(page, name(f"guess{attempt}"), "wrong password", ip=ip(1))
    user = make_user(name("alice"), password=PASSWORD, is_staff=True)
    assert_locked_out(log_in(page, user.username, PASSWORD, ip=ip(1)))
    assert logged_in(log_in(page, user.username, PASSWORD, ip=ip(2)))


def test_one_page_counts_for_the_other(make_user, fresh):
    name, ip = fresh
    victim = make_user(name("victim"), password=PASSWORD, is_staff=True)
    for _ in range(5):
        log_in("/login/", victim.username, "wrong password", ip=ip(1))
    assert_locked_out(log_in("/admin/login/", victim.username, PASSWORD, ip=ip(2)))


def test_a_successful_login_clears_earlier_failures(make_user, fresh):
    name, ip = fresh
    user = make_user(name("alice"), password=PASSWORD)
    for _ in range(4):
        log_in("/login/", user.username, "wrong password", ip=ip(1))
    assert logged_in(log_in("/login/", user.username, PASSWORD, ip=ip(1)))
    for _ in range(4):
        log_in("/login/", user.username, "wrong password", ip=ip(1))
    assert logged_in(log_in("/login/", user.username, PASSWORD, ip=ip(1)))


def test_the_limit_follows_the_setting(settings, make_user, fresh):
    settings.AXES_FAILURE_LIMIT = 2
    name, ip = fresh
    user = make_user(name("alice"), password=PASSWORD)
    assert log_in("/login/", user.username, "wrong password", ip=ip(1)).status_code == 200
    assert_locked_out(log_in("/login/", user.username, "wrong password", ip=ip(1)))


def test_api_keys_and_the_test_clients_login_are_not_throttled(make_user, fresh):
    from accounts.api_keys import api_key_authenticate, api_key_create

    name, _ = fresh
    user = make_user(name("alice"), password=PASSWORD)
    assert Client().login(username=user.username, password=PASSWORD)  # no request: nothing to count
    _, plaintext = api_key_create(owner=user, name="k", scopes="chat")
    assert api_key_authenticate(raw_key=plaintext, scope="chat").owner == user


def test_the_counts_live_in_the_shared_cache():
    assert django_settings.AXES_HANDLER == "axes.handlers.cache.AxesCacheHandler"
    assert django_settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert django_settings.AXES_LOCKOUT_PARAMETERS == ["username", "ip_address"]


def test_limit_and_cool_off_come_from_the_environment():
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "LOGIN_FAILURE_LIMIT": "3", "LOGIN_COOLOFF_MINUTES": "2"}
    env["DJANGO_SETTINGS_MODULE"] = "evaproject.settings"
    code = "from django.conf import settings as s; print(s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME.total_seconds())"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["3", "120.0"]


@pytest.mark.django_db(transaction=True)
async def test_the_lockout_page_is_served_over_asgi_too(make_user, fresh):
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    name, fresh_ip = fresh
    user = await sync_to_async(make_user)(name("alice"), password=PASSWORD)
    client = AsyncClient()  # its requests come from 127.0.0.1, whose count `fresh` resets
    fresh_ip("127.0.0.1")
    for _ in range(5):
        await client.post("/login/", {"username": user.username, "password": "wrong password"})
    response = await client.post("/login/", {"username": user.username, "password": PASSWORD})
    assert_locked_out(response)
    assert response["Content-Security-Policy"].startswith("default-src 'self'")
