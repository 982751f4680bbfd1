"""The chat page as a person uses it (issue #19): nothing typed is lost, states survive a
reload, message actions, search and export, against the live server and the Ollama stand-in."""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import expect

from tests.web.chatpage import last_reply, open_chat, send, send_and_wait

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

WS_URL = re.compile(r"/ws/chat$")


class HeldSocket:
    """Holds the page's socket in `connecting` until `release()`, then passes it to the server."""

    def __init__(self):
        self.gate = asyncio.Event()
        self.routes = []

    async def handler(self, route):
        self.routes.append(route)
        await self.gate.wait()
        route.connect_to_server()

    def release(self):
        self.gate.set()


async def open_chat_connecting(page):
    await page.goto("/")
    await expect(page.locator("#chat-layout")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#connection-status")).to_have_attribute("data-state", "connecting")


# --- 1. nothing typed is lost ---------------------------------------------------------------
async def test_enter_pressed_before_the_socket_is_open_gets_its_reply(page, logged_in, ollama_behaviour, web_ollama):
    held = HeldSocket()
    await page.route_web_socket(WS_URL, held.handler)
    await logged_in("alice")
    await open_chat_connecting(page)
    await send(page, "Bonjour EVA")
    await send(page, "Et ensuite ?")
    users = page.locator(".message-user")
    await expect(users).to_have_count(2)
    await expect(users.first).to_have_attribute("data-send-state", "sending")
    await expect(users.first.locator(".send-state")).to_have_text("Sending…")
    await expect(page.locator("#page-notice")).to_be_hidden()
    # While the first reply streams, the sidebar already names the conversation by its message.
    await expect(page.locator("#conversation-list .conversation-open")).to_have_text(["Bonjour EVA"])
    held.release()
    replies = page.locator(".message-assistant")
    await expect(replies).to_have_count(2)
    await expect(replies.nth(0).locator(".message-body")).to_have_text("Echo: Bonjour EVA")
    await expect(replies.nth(1)).to_have_attribute("data-status", "complete")
    await expect(replies.nth(1).locator(".message-body")).to_have_text("Echo: Et ensuite ?")
    await expect(users.first).to_have_attribute("data-send-state", "sent")
    # In order, each exactly once.
    asked = [request.body["messages"][-1]["content"] for request in web_ollama.chat_requests()]
    assert asked == ["Bonjour EVA", "Et ensuite ?"]
    assert page.js_errors == []


async def test_a_message_that_cannot_go_in_time_is_kept_as_not_sent_with_a_retry(page, logged_in, ollama_behaviour):
    held = HeldSocket()
    await page.route_web_socket(WS_URL, held.handler)
    await page.clock.install()
    await logged_in("alice")
    await open_chat_connecting(page)
    await send(page, "Are you there?")
    user = page.locator(".message-user").last
    await expect(user).to_have_attribute("data-send-state", "sending")
    await page.clock.fast_forward(25_000)  # past the 20 s bound
    await expect(user).to_have_attribute("data-send-state", "failed")
    await expect(user.get_by_role("alert")).to_contain_text("Not sent")
    await expect(user.locator(".message-text")).to_have_text("Are you there?")  # the text is kept
    assert await page.locator(".message-assistant").count() == 0
    held.release()
    await expect(page.locator("#connection-status")).to_have_attribute("data-state", "open")
    await user.get_by_role("button", name="Retry sending").click()
    await expect(user).to_have_attribute("data-send-state", "sent")
    await expect(last_reply(page).locator(".message-body")).to_have_text("Echo: Are you there?")
