"""The chat page resumes a reply whose socket dropped mid-reply (static/chat/resume.js,
chat/replay.py): the reply goes on in place, each word once, and is stored complete.

The session's live server stops a reply at once when its client drops (REPLAY_GRACE_S=0, the
tests' default); this module runs its own daphne with a grace, and a browser context on it.
With the session's server (no grace), a reply stopped as its client dropped is shown cut off,
with Retry; one the server no longer has, in test_chat_socket.py."""

from __future__ import annotations

import json
import re

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from playwright.async_api import expect

from chat.models import ChatMessage
from tests.live_server import start_daphne, stop_process
from tests.polling import awritten
from tests.web.chatpage import last_reply, open_chat, send

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

WS_URL = re.compile(r"/ws/chat$")
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def graceful_asgi(django_db_setup, django_db_blocker, web_ollama, tmp_path_factory):
    server = start_daphne(
        {"OLLAMA_URL": web_ollama.url, "REPLAY_GRACE_S": "60"}, tmp_path_factory.mktemp("resume-page") / "daphne.log"
    )
    yield server
    stop_process(server.process)


@pytest_asyncio.fixture(loop_scope="session")
async def resume_page(chromium, graceful_asgi, make_user):
    from django.conf import settings
    from django.test import Client

    @sync_to_async
    def session_key() -> str:
        make_user("alice", password=PASSWORD)
        client = Client()
        assert client.login(username="alice", password=PASSWORD)
        return client.cookies[settings.SESSION_COOKIE_NAME].value

    context = await chromium.new_context(base_url=graceful_asgi.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    cookie = {"name": settings.SESSION_COOKIE_NAME, "value": await session_key(), "url": graceful_asgi.url}
    await context.add_cookies([cookie])
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.js_errors = errors
    yield page
    await context.close()


def newest_reply() -> tuple[str, str] | None:
    return ChatMessage.objects.filter(role="assistant").order_by("-created_at").values_list("content", "status").first()


async def wait_stored() -> tuple[str, str]:
    """The newest stored reply, once the server has written it (it writes a stopped one in the background)."""
    return await awritten(newest_reply, "a reply stored")


async def test_the_page_resumes_a_reply_cut_by_a_dropped_connection(resume_page, ollama_behaviour):
    page = resume_page
    tokens = ["w0"] + [f" w{i}" for i in range(1, 40)]
    ollama_behaviour.reply_tokens = tokens
    ollama_behaviour.token_interval_s = 0.05
    routes, servers = [], []
    sent: list[dict] = []

    async def pass_through(route):
        routes.append(route)
        server = route.connect_to_server()
        servers.append(server)

        def forward(message):
            sent.append(json.loads(message))
            server.send(message)

        route.on_message(forward)

    await page.route_web_socket(WS_URL, pass_through)
    await open_chat(page)
    await send(page, "Long one please")
    reply = last_reply(page)
    await expect(reply.locator(".message-body")).to_contain_text("w3")
    # The server sees its client go (code 1000: Playwright did not pass 1012 on to the server).
    await servers[0].close(code=1000, reason="network lost")
    await routes[0].close(code=1006, reason="network lost")
    await expect(reply).to_have_attribute("data-status", "complete", timeout=20_000)
    await expect(reply.locator(".message-body")).to_have_text("".join(tokens))  # each word once, none missing
    assert len(routes) == 2
    resumes = [frame for frame in sent if frame["type"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["after"] >= 4
    assert resumes[0]["request_id"] == await reply.get_attribute("data-request-id")
    assert await wait_stored() == ("".join(tokens), "complete")
    assert page.js_errors == []


async def test_a_reply_the_server_stopped_when_its_client_dropped_is_shown_cut_off_with_a_retry(
    page, logged_in, ollama_behaviour, web_ollama
):
    ollama_behaviour.reply_tokens = [f" t{i}" for i in range(100)]
    ollama_behaviour.token_interval_s = 0.1
    routes, servers = [], []

    async def pass_through(route):
        routes.append(route)
        servers.append(route.connect_to_server())

    await page.route_web_socket(WS_URL, pass_through)
    await logged_in("alice")
    await open_chat(page)
    await send(page, "Long one please")
    reply = last_reply(page)
    await expect(reply.locator(".message-body")).to_contain_text("t2")
    await servers[0].close(code=1000, reason="network lost")
    await routes[0].close(code=1006, reason="network lost")
    assert await web_ollama.last_chat_hung_up(within_s=10)  # REPLAY_GRACE_S=0: stopped at once
    # The page resumes it, gets the rest of what was written and its end ("cancelled"): cut off.
    await expect(reply).to_have_attribute("data-error-code", "connection_lost")
    await expect(reply.get_by_role("button", name="Retry")).to_be_visible()
    kept, status = await wait_stored()
    assert status == "partial"
    await expect(reply.locator(".message-body")).to_have_text(kept.strip())  # all that was kept, once
    assert page.js_errors == []
