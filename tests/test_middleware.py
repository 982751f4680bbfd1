"""Django's middlewares run their hooks on the event loop under ASGI unless they have something to
save, and still do their job."""

from __future__ import annotations

import threading

import pytest
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware
from django.test import AsyncClient

from evaproject.middleware import (
    _acall_hop_to_save,
    _acall_on_loop,
    io_free_middlewares,
    run_hooks_on_loop,
    save_hopping_middlewares,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_io_free_middlewares_run_on_the_loop_and_the_saving_ones_hop_to_save():
    # applied at start-up; idempotent
    assert set(run_hooks_on_loop()) == set(io_free_middlewares()) | set(save_hopping_middlewares())
    assert XFrameOptionsMiddleware.__acall__ is _acall_on_loop
    assert SessionMiddleware.__acall__ is _acall_hop_to_save
    assert MessageMiddleware.__acall__ is _acall_hop_to_save


def test_with_a_session_engine_of_another_package_session_and_messages_are_not_included(settings):
    settings.SESSION_ENGINE = "somewhere.else.sessions"
    assert save_hopping_middlewares() == {}


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


def spy_on_response_hooks(monkeypatch) -> dict[str, list[threading.Thread]]:
    seen: dict[str, list[threading.Thread]] = {"session": [], "messages": []}
    for name, cls in (("session", SessionMiddleware), ("messages", MessageMiddleware)):
        original = cls.process_response

        def spy(self, request, response, _original=original, _name=name):
            seen[_name].append(threading.current_thread())
            return _original(self, request, response)

        monkeypatch.setattr(cls, "process_response", spy)
    return seen


@pytest.mark.urls("tests.hooks_urls")
async def test_a_request_that_saves_nothing_runs_the_session_and_message_hooks_on_the_loop(monkeypatch):
    seen = spy_on_response_hooks(monkeypatch)
    response = await AsyncClient().get("/nothing")
    assert response.status_code == 200
    assert seen == {"session": [threading.current_thread()], "messages": [threading.current_thread()]}
    assert "sessionid" not in response.cookies


@pytest.mark.urls("tests.hooks_urls")
async def test_a_modified_session_is_saved_from_the_requests_thread_and_read_back(monkeypatch):
    seen = spy_on_response_hooks(monkeypatch)
    client = AsyncClient()
    for _ in range(2):
        assert (await client.get("/remember")).status_code == 200
    assert all(thread is not threading.current_thread() for thread in seen["session"])  # a hop: it saved
    response = await client.get("/recall")
    assert response.json() == {"visits": 2}
    assert seen["session"][-1] is threading.current_thread()  # read only: nothing to save
    assert "Cookie" in response["Vary"]


@pytest.mark.urls("tests.hooks_urls")
async def test_a_message_added_in_one_request_is_stored_and_shown_in_the_next(monkeypatch):
    seen = spy_on_response_hooks(monkeypatch)
    client = AsyncClient()
    assert (await client.get("/tell")).status_code == 200
    assert seen["messages"][-1] is not threading.current_thread()  # stored from the request's thread
    assert (await client.get("/listen")).json() == {"messages": ["hello from the last request"]}
    assert (await client.get("/listen")).json() == {"messages": []}  # shown once
