"""The chat page in a real browser against the live server and the Ollama stand-in."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.web.chatpage import RECORD_REPLY_TEXT, last_reply, open_chat, send, send_and_wait

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]


async def test_tokens_appear_in_order_as_they_stream(page, logged_in, ollama_behaviour):
    ollama_behaviour.reply_tokens = ["One", " two", " three", " four", " five", " six"]
    ollama_behaviour.token_interval_s = 0.2
    await logged_in("alice")
    await open_chat(page)
    await page.evaluate(RECORD_REPLY_TEXT)
    await send(page, "Count to six")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-status", "complete")
    final = "One two three four five six"
    await expect(reply.locator(".message-body")).to_have_text(final)
    seen = [text for text in await page.evaluate("window.__replyTexts") if text]
    assert len(seen) >= 4, f"the reply did not stream: {seen}"
    assert all(final.startswith(text) for text in seen), seen
    meta = reply.locator(".message-meta")
    await expect(meta).to_contain_text("ollama · phi3:mini")
    await expect(meta).to_contain_text(re.compile(r"first token \d+ ms"))
    # The timing is stored with the reply: it is still shown after a reload.
    await open_chat(page, page.url)
    reloaded = last_reply(page).locator(".message-meta")
    await expect(reloaded).to_contain_text("ollama · phi3:mini")
    await expect(reloaded).to_contain_text(re.compile(r"first token \d+ ms"))
    assert page.js_errors == []


async def test_stop_ends_the_reply_midway_and_keeps_what_came(page, logged_in, ollama_behaviour, web_ollama):
    words = [f" word{i}" for i in range(40)]
    ollama_behaviour.reply_tokens = words
    ollama_behaviour.token_interval_s = 0.15
    await logged_in("alice")
    await open_chat(page)
    await send(page, "Talk for a while")
    reply = last_reply(page)
    await expect(reply.locator(".message-body")).to_contain_text("word3")
    await page.get_by_role("button", name="Stop").click()
    await expect(reply).to_have_attribute("data-status", "cancelled")
    await expect(reply.locator(".badge")).to_have_text("Stopped")
    shown = (await reply.locator(".message-body").inner_text()).strip()
    assert "".join(words).strip().startswith(shown) and len(shown) < len("".join(words).strip())
    assert web_ollama.chat_requests()[-1].client_disconnected  # the server stopped the upstream stream too
    await expect(page.get_by_role("button", name="Send")).to_be_visible()
    await expect(page.get_by_label("Message to EVA")).to_be_focused()
    # The next message streams normally after a stop.
    ollama_behaviour.reply_tokens = ["Back", " again"]
    ollama_behaviour.token_interval_s = 0.0
    await send_and_wait(page, "Still there?")
    await expect(last_reply(page).locator(".message-body")).to_have_text("Back again")


async def test_escape_in_the_message_box_stops_the_reply(page, logged_in, ollama_behaviour):
    ollama_behaviour.reply_tokens = [f" w{i}" for i in range(40)]
    ollama_behaviour.token_interval_s = 0.15
    await logged_in("alice")
    await open_chat(page)
    await send(page, "Go on")
    await expect(last_reply(page).locator(".message-body")).to_contain_text("w2")
    await page.get_by_label("Message to EVA").press("Escape")
    await expect(last_reply(page)).to_have_attribute("data-status", "cancelled")


async def test_switching_conversations_shows_each_ones_history(page, logged_in, ollama_behaviour):
    await logged_in("alice")
    await open_chat(page)
    await send_and_wait(page, "apples")
    await page.get_by_role("button", name="New chat").click()
    await expect(page.locator(".message")).to_have_count(0)
    await send_and_wait(page, "bananas")
    conversations = page.locator("#conversation-list .conversation-open")
    await expect(conversations).to_have_count(2)
    await expect(conversations.first).to_contain_text("bananas")  # newest first, titled by its first message
    await expect(page.locator("#conversation-title")).to_have_text("bananas")

    await page.locator(".conversation-open", has_text="apples").click()
    await expect(page.locator("#conversation-title")).to_have_text("apples")
    thread = page.locator("#message-list")
    await expect(thread.locator(".message-user .message-text")).to_have_text(["apples"])
    await expect(thread.locator(".message-assistant .message-body")).to_have_text(["Echo: apples"])
    await expect(page.locator(".conversation-open[aria-current=true]")).to_contain_text("apples")
    assert "c=" in page.url

    # A reload comes back to the same conversation.
    await open_chat(page, page.url)
    await expect(page.locator("#message-list .message-user .message-text")).to_have_text(["apples"])

    await page.locator(".conversation-open", has_text="bananas").click()
    await expect(thread.locator(".message-user .message-text")).to_have_text(["bananas"])
    await expect(thread.locator(".message-assistant .message-body")).to_have_text(["Echo: bananas"])


async def test_a_conversation_can_be_renamed_and_deleted(page, logged_in, ollama_behaviour):
    await logged_in("alice")
    await open_chat(page)
    await send_and_wait(page, "first topic")
    await page.get_by_role("button", name="New chat").click()
    await send_and_wait(page, "second topic")

    await page.get_by_role("button", name="Rename “first topic”").click()
    title = page.get_by_label("New title")
    await expect(title).to_be_focused()
    await title.fill("Renamed topic")
    await title.press("Enter")
    await expect(page.locator(".conversation-open", has_text="Renamed topic")).to_be_visible()

    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete “second topic”").click()
    await expect(page.locator("#conversation-list .conversation")).to_have_count(1)
    await expect(page.locator("#conversation-title")).to_have_text("New conversation")  # it was the open one
    await page.reload()
    await expect(page.locator("#conversation-list .conversation-open")).to_have_text([re.compile("Renamed topic")])


async def test_a_reply_containing_a_script_tag_shows_as_text_and_does_not_run(page, logged_in, ollama_behaviour):
    ollama_behaviour.reply_tokens = [
        "Here: <script>window.__pwned = 1</script>",
        ' and <img src=x onerror="window.__pwned = 2">',
        " and [link](javascript:window.__pwned=3)",
    ]
    await logged_in("alice")
    await open_chat(page)
    await send_and_wait(page, "Say something nasty")
    body = last_reply(page).locator(".message-body")
    await expect(body).to_contain_text("<script>window.__pwned = 1</script>")
    await expect(body).to_contain_text('<img src=x onerror="window.__pwned = 2">')
    assert await page.locator("#message-list script, #message-list img, #message-list a").count() == 0
    assert await page.evaluate("window.__pwned") is None
    # Reloaded from the stored history, it is still only text.
    await page.reload()
    await expect(last_reply(page).locator(".message-body")).to_contain_text("<script>window.__pwned = 1</script>")
    assert await page.evaluate("window.__pwned") is None
    assert page.js_errors == []


async def test_a_backend_failure_shows_in_place_and_retry_sends_again(page, logged_in, ollama_behaviour):
    ollama_behaviour.mode = "busy"
    await logged_in("alice")
    await open_chat(page)
    await send(page, "Are you there?")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-status", "error")
    await expect(reply).to_have_attribute("data-error-code", "no_backend")
    await expect(reply.get_by_role("alert")).to_contain_text("No model is reachable right now.")
    ollama_behaviour.mode = "ok"
    await reply.get_by_role("button", name="Retry").click()
    await expect(page.locator(".message-assistant")).to_have_count(1)  # the failed reply made way
    await expect(last_reply(page)).to_have_attribute("data-status", "complete")
    await expect(last_reply(page).locator(".message-body")).to_have_text("Echo: Are you there?")


async def test_shift_enter_makes_a_new_line_and_enter_sends(page, logged_in, ollama_behaviour):
    await logged_in("alice")
    await open_chat(page)
    box = page.get_by_label("Message to EVA")
    await box.type("line one")
    await box.press("Shift+Enter")
    await box.type("line two")
    await expect(box).to_have_value("line one\nline two")
    await box.press("Enter")
    await expect(page.locator(".message-user .message-text")).to_have_text("line one\nline two")
    await expect(box).to_have_value("")
    await expect(last_reply(page)).to_have_attribute("data-status", "complete")


async def test_a_long_conversation_opens_at_its_end_and_loads_earlier_messages_on_request(page, logged_in):
    from datetime import timedelta

    from asgiref.sync import sync_to_async
    from django.utils import timezone

    from chat.models import ChatMessage, ChatSession

    alice = await logged_in("alice")

    @sync_to_async
    def long_conversation():
        session = ChatSession.objects.create(owner=alice, session_id="long", title="Long one")
        start = timezone.now() - timedelta(hours=1)
        ChatMessage.objects.bulk_create(
            ChatMessage(session=session, role="user" if n % 2 == 0 else "assistant", content=f"message {n}",
                        created_at=start + timedelta(seconds=n))
            for n in range(60)
        )

    await long_conversation()
    await open_chat(page)
    messages = page.locator("#message-list .message")
    await expect(messages).to_have_count(50)
    await expect(messages.first).to_contain_text("message 10")
    await expect(messages.last).to_contain_text("message 59")
    await page.get_by_role("button", name="Load earlier messages").click()
    await expect(messages).to_have_count(60)
    await expect(messages.first).to_contain_text("message 0")
    await expect(page.get_by_role("button", name="Load earlier messages")).to_be_hidden()
