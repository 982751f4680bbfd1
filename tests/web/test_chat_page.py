"""The chat page in a real browser: streaming, stop, conversations, safe rendering."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

RECORD_REPLY_TEXT = """() => {
  window.__replyTexts = [];
  const list = document.getElementById("message-list");
  new MutationObserver(() => {
    const bodies = list.querySelectorAll(".message-assistant .message-body");
    const text = bodies.length ? bodies[bodies.length - 1].textContent : "";
    if (window.__replyTexts[window.__replyTexts.length - 1] !== text) window.__replyTexts.push(text);
  }).observe(list, { subtree: true, childList: true, characterData: true });
}"""


async def open_chat(page):
    await page.goto("/")
    await expect(page.locator("#chat-layout")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#connection-status")).to_have_attribute("data-state", "open")


async def send(page, text: str):
    box = page.get_by_label("Message to EVA")
    await box.fill(text)
    await box.press("Enter")


async def test_tokens_appear_in_order_as_they_stream(page, logged_in, ollama_behaviour):
    ollama_behaviour.reply_tokens = ["One", " two", " three", " four", " five", " six"]
    ollama_behaviour.token_interval_s = 0.2
    await logged_in("alice")
    await open_chat(page)
    await page.evaluate(RECORD_REPLY_TEXT)
    await send(page, "Count to six")
    reply = page.locator(".message-assistant").last
    await expect(reply).to_have_attribute("data-status", "complete")
    final = "One two three four five six"
    await expect(reply.locator(".message-body")).to_have_text(final)
    seen = [text for text in await page.evaluate("window.__replyTexts") if text]
    assert len(seen) >= 4, f"the reply did not stream: {seen}"
    assert all(final.startswith(text) for text in seen), seen
    meta = reply.locator(".message-meta")
    await expect(meta).to_contain_text("ollama · phi3:mini")
    await expect(meta).to_contain_text(re.compile(r"first token \d+ ms"))
    assert page.js_errors == []
