"""Django's I/O-free middlewares run their hooks on the event loop under ASGI, and still do their job."""

from __future__ import annotations

import threading

import pytest
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware
from django.test import AsyncClient

from evaproject.middleware import _acall_on_loop, io_free_middlewares, run_hooks_on_loop

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_io_free_middlewares_have_the_on_loop_path_and_the_session_one_keeps_djangos():
    assert set(run_hooks_on_loop()) == set(io_free_middlewares())  # applied at start-up; idempotent
    assert XFrameOptionsMiddleware.__acall__ is _acall_on_loop
    assert SessionMiddleware.__acall__ is not _acall_on_loop  # its response may save the session


def test_with_the_csrf_secret_in_the_session_csrf_keeps_djangos_path(settings):
    settings.CSRF_USE_SESSIONS = True
    assert CsrfViewMiddleware not in io_free_middlewares()


async def test_under_asgi_the_hooks_run_on_the_loops_thread_and_set_their_headers(monkeypatch):
    threads = []
    for cls, hook in ((SecurityMiddleware, "process_request"), (XFrameOptionsMiddleware, "process_response")):
        original = getattr(cls, hook)

        def spy(self, *args, _original=original):
            threads.append(threading.current_thread())
            return _original(self, *args)

        monkeypatch.setattr(cls, hook, spy)
    response = await AsyncClient().get("/login/")
    assert response.status_code == 200
    assert threads == [threading.current_thread()] * 2  # this test's loop thread: no hop to another
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


async def test_under_asgi_csrf_still_refuses_a_form_post_without_its_token():
    client = AsyncClient(enforce_csrf_checks=True)
    response = await client.post("/login/", {"username": "a", "password": "b"})
    assert response.status_code == 403
