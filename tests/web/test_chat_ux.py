"""The chat page as a person uses it (issue #19): nothing typed is lost, states survive a
reload, message actions, search and export, against the live server and the Ollama stand-in."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.polling import awritten
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
    asked_before = len(web_ollama.chat_requests())
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
    asked = [request.body["messages"][-1]["content"] for request in web_ollama.chat_requests()[asked_before:]]
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


# --- 2. states that survive a reload ----------------------------------------------------------
async def test_a_stopped_reply_still_says_stopped_after_a_reload(page, logged_in, ollama_behaviour):
    from chat.models import ChatMessage

    ollama_behaviour.reply_tokens = [f" word{i}" for i in range(40)]
    ollama_behaviour.token_interval_s = 0.15
    await logged_in("alice")
    await open_chat(page)
    await send(page, "Talk for a while")
    reply = last_reply(page)
    await expect(reply.locator(".message-body")).to_contain_text("word2")
    await page.get_by_role("button", name="Stop").click()
    await expect(reply.locator(".badge")).to_have_text("Stopped")
    shown = (await reply.locator(".message-body").inner_text()).strip()
    # The stopped reply is stored in the background, after its last frame.
    await awritten(
        lambda: ChatMessage.objects.filter(role="assistant", done_reason="cancelled").exists(), "the stop stored"
    )

    await open_chat(page, page.url)
    reloaded = last_reply(page)
    await expect(reloaded).to_have_attribute("data-status", "cancelled")
    await expect(reloaded.locator(".badge")).to_have_text("Stopped")
    await expect(reloaded.locator(".message-meta")).to_contain_text(re.compile(r"first token \d+ ms"))
    await expect(reloaded.locator(".message-meta")).to_contain_text(re.compile(r"total \d"))
    await expect(reloaded.locator(".message-body")).to_have_text(shown)
    assert page.js_errors == []


async def test_failed_and_partial_replies_keep_their_label_after_a_reload(page, logged_in, ollama_behaviour):
    await logged_in("alice")
    await open_chat(page)
    ollama_behaviour.mode = "busy"
    await send(page, "Anyone?")
    await expect(last_reply(page)).to_have_attribute("data-error-code", "no_backend")
    ollama_behaviour.mode = "error_mid_stream"
    ollama_behaviour.reply_tokens = ["Half", " of", " it"]
    await send(page, "Try again")
    await expect(last_reply(page)).to_have_attribute("data-error-code", "upstream_error")

    await open_chat(page, page.url)
    replies = page.locator(".message-assistant")
    await expect(replies).to_have_count(2)
    await expect(replies.nth(0)).to_have_attribute("data-status", "error")
    await expect(replies.nth(0)).to_have_attribute("data-error-code", "no_backend")
    await expect(replies.nth(0).locator(".badge")).to_have_text("Failed")
    await expect(replies.nth(1)).to_have_attribute("data-status", "partial")
    await expect(replies.nth(1).locator(".badge")).to_have_text("Incomplete")
    await expect(replies.nth(1).locator(".message-body")).to_have_text("Half of")
    await expect(replies.nth(1).locator(".message-meta")).to_contain_text(re.compile(r"first token \d+ ms"))


# --- 3. message actions ------------------------------------------------------------------------
async def test_copy_a_message_and_a_code_block_with_a_visible_confirmation(
    page, browser_context, logged_in, ollama_behaviour
):
    await browser_context.grant_permissions(["clipboard-read", "clipboard-write"])
    ollama_behaviour.reply_tokens = ["Run this:\n\n", "```sh\n", "echo hi\n", "```\n"]
    await logged_in("alice")
    await open_chat(page)
    await send_and_wait(page, "How do I greet?")
    reply = last_reply(page)
    copy_code = reply.get_by_role("button", name="Copy code")
    await copy_code.click()
    await expect(copy_code).to_have_attribute("data-copied", "true")
    await expect(copy_code).to_have_attribute("data-shown", "Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == "echo hi"
    copy = reply.get_by_role("button", name="Copy message")
    await copy.click()
    await expect(copy).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == "Run this:\n\n```sh\necho hi\n```\n"
    await page.locator(".message-user").get_by_role("button", name="Copy message").click()
    assert await page.evaluate("navigator.clipboard.readText()") == "How do I greet?"
    # The code block's button adds nothing to the reply's text.
    await expect(reply.locator(".message-body pre code")).to_have_text("echo hi")


async def test_regenerate_replaces_the_last_reply_and_the_server_keeps_the_old_one(
    page, logged_in, ollama_behaviour, web_ollama
):
    from chat.models import ChatMessage

    await logged_in("alice")
    await open_chat(page)
    ollama_behaviour.reply_tokens = ["First", " answer"]
    await send_and_wait(page, "Pick a colour")
    ollama_behaviour.reply_tokens = ["Second", " answer"]
    await last_reply(page).get_by_role("button", name="Regenerate reply").click()
    await expect(page.locator(".message-assistant")).to_have_count(1)
    await expect(last_reply(page).locator(".message-body")).to_have_text("Second answer")
    await expect(last_reply(page)).to_have_attribute("data-status", "complete")
    await expect(page.locator(".message-user .message-text")).to_have_text(["Pick a colour"])
    # The model was asked again without the first answer in its history.
    last_request = web_ollama.chat_requests()[-1].body["messages"]
    assert [m["content"] for m in last_request if m["role"] != "system"] == ["Pick a colour"]
    # After a reload: the new reply only; the old exchange is stored, superseded.
    await open_chat(page, page.url)
    await expect(page.locator(".message-assistant .message-body")).to_have_text(["Second answer"])
    rows = await asyncio.to_thread(
        lambda: list(ChatMessage.objects.order_by("id").values_list("role", "content", "superseded_at"))
    )
    assert [(role, content, at is not None) for role, content, at in rows] == [
        ("user", "Pick a colour", True), ("assistant", "First answer", True),
        ("user", "Pick a colour", False), ("assistant", "Second answer", False),
    ]


async def test_edit_the_last_message_and_resend(page, logged_in, ollama_behaviour, web_ollama):
    await logged_in("alice")
    await open_chat(page)
    await send_and_wait(page, "Capital of Australia?")
    await send_and_wait(page, "Population of Sydnee?")
    await page.locator(".message-user").last.get_by_role("button", name="Edit message").click()
    box = page.get_by_label("Edit your message")
    await expect(box).to_be_focused()
    await expect(box).to_have_value("Population of Sydnee?")
    await box.fill("Population of Sydney?")
    await box.press("Enter")
    await expect(page.locator(".message-user .message-text")).to_have_text(
        ["Capital of Australia?", "Population of Sydney?"]
    )
    await expect(last_reply(page).locator(".message-body")).to_have_text("Echo: Population of Sydney?")
    # The history sent to the model is the edited one.
    sent = [m["content"] for m in web_ollama.chat_requests()[-1].body["messages"] if m["role"] != "system"]
    assert sent == ["Capital of Australia?", "Echo: Capital of Australia?", "Population of Sydney?"]
    await open_chat(page, page.url)
    await expect(page.locator(".message-user .message-text")).to_have_text(
        ["Capital of Australia?", "Population of Sydney?"]
    )
    assert page.js_errors == []


# --- 4. conversations: search, export (rename and delete: test_chat_page.py) -----------------------
async def test_search_finds_conversations_by_title_and_content_and_export_downloads(page, logged_in, ollama_behaviour):
    await logged_in("alice")
    await open_chat(page)
    ollama_behaviour.reply_tokens = ["Lisbon", " in", " May."]
    await send_and_wait(page, "Where to travel?")
    await page.get_by_role("button", name="New chat").click()
    ollama_behaviour.reply_tokens = ["Use", " open()."]
    await send_and_wait(page, "Read a file in Python")
    conversations = page.locator("#conversation-list .conversation-open")
    await expect(conversations).to_have_count(2)

    search = page.get_by_role("searchbox", name="Search conversations")
    await search.fill("lisbon")  # only in a reply's text
    await expect(conversations).to_have_count(1)
    await expect(conversations.first.locator(".conversation-title")).to_have_text("Where to travel?")
    await expect(conversations.first.locator(".conversation-excerpt")).to_contain_text("Lisbon in May.")
    await expect(page.locator("#search-status")).to_have_text("1 conversation matches.")
    await search.fill("PYTHON")  # in a title, any case
    await expect(conversations.locator(".conversation-title")).to_have_text(["Read a file in Python"])
    await search.fill("nowhere")
    await expect(conversations).to_have_count(0)
    await expect(page.locator("#search-status")).to_have_text("No conversation matches.")
    await search.press("Escape")
    await expect(conversations).to_have_count(2)

    await conversations.filter(has_text="Where to travel?").click()
    await expect(page.locator("#conversation-title")).to_have_text("Where to travel?")
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Export this conversation as Markdown").click()
    download = await download_info.value
    assert download.suggested_filename == "Where-to-travel.md"
    text = await asyncio.to_thread(Path(await download.path()).read_text)
    assert text.startswith("# Where to travel?") and "Lisbon in May." in text and "Read a file" not in text
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Export this conversation as JSON").click()
    download = await download_info.value
    exported = json.loads(await asyncio.to_thread(Path(await download.path()).read_text))
    assert [m["content"] for m in exported["messages"]] == ["Where to travel?", "Lisbon in May."]
    assert page.js_errors == []


# --- 6. keyboard alone ----------------------------------------------------------------------------
async def tab_to(page, name: str, limit: int = 40) -> None:
    """Press Tab until the focused element's accessible name is `name` (at most `limit` times)."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        focused = await page.evaluate(
            "document.activeElement.getAttribute('aria-label') || document.activeElement.textContent"
        )
        if focused.strip() == name:
            return
    raise AssertionError(f"Tab never reached {name!r}")


async def test_message_actions_work_from_the_keyboard_alone(page, browser_context, logged_in, ollama_behaviour):
    await browser_context.grant_permissions(["clipboard-read", "clipboard-write"])
    await logged_in("alice")
    await open_chat(page)
    await send_and_wait(page, "Hello there")
    await page.get_by_role("searchbox", name="Search conversations").focus()
    await tab_to(page, "Copy message")
    await page.keyboard.press("Enter")
    assert await page.evaluate("navigator.clipboard.readText()") == "Hello there"
    await tab_to(page, "Edit message")
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("Edit your message")).to_be_focused()
    await page.keyboard.press("Escape")  # gives up: focus back on Edit
    await expect(page.get_by_role("button", name="Edit message")).to_be_focused()
    await tab_to(page, "Regenerate reply")
    ollama_behaviour.reply_tokens = ["Again"]
    await page.keyboard.press("Enter")
    await expect(last_reply(page).locator(".message-body")).to_have_text("Again")
    await expect(page.locator(".message-assistant")).to_have_count(1)


async def test_retry_of_a_failed_reply_leaves_one_exchange_after_a_reload(page, logged_in, ollama_behaviour):
    await logged_in("alice")
    await open_chat(page)
    ollama_behaviour.mode = "busy"
    await send(page, "Are you up?")
    await expect(last_reply(page)).to_have_attribute("data-error-code", "no_backend")
    ollama_behaviour.mode = "ok"
    await last_reply(page).get_by_role("button", name="Retry").click()
    await expect(last_reply(page).locator(".message-body")).to_have_text("Echo: Are you up?")
    await open_chat(page, page.url)
    await expect(page.locator(".message-user .message-text")).to_have_text(["Are you up?"])
    await expect(page.locator(".message-assistant .message-body")).to_have_text(["Echo: Are you up?"])
