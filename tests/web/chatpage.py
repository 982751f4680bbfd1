"""Steps on the chat page that several browser tests share."""

from __future__ import annotations

from playwright.async_api import Page, expect

# Records every distinct text of the newest reply as the page renders it.
RECORD_REPLY_TEXT = """() => {
  window.__replyTexts = [];
  const list = document.getElementById("message-list");
  new MutationObserver(() => {
    const bodies = list.querySelectorAll(".message-assistant .message-body");
    const text = bodies.length ? bodies[bodies.length - 1].textContent : "";
    if (window.__replyTexts[window.__replyTexts.length - 1] !== text) window.__replyTexts.push(text);
  }).observe(list, { subtree: true, childList: true, characterData: true });
}"""


def word_tokens(text: str) -> list[str]:
    """`text` as a model streams it: word by word, each after the first with its leading space."""
    words = text.split(" ")
    return [words[0]] + [" " + word for word in words[1:]]


async def open_chat(page: Page, path: str = "/") -> None:
    """Load the chat page and wait until its socket is open and the conversation is shown."""
    await page.goto(path)
    await expect(page.locator("#chat-layout")).to_have_attribute("data-ready", "true")
    await expect(page.locator("#connection-status")).to_have_attribute("data-state", "open")


async def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message to EVA")
    await box.fill(text)
    await box.press("Enter")


def last_reply(page: Page):
    return page.locator(".message-assistant").last


async def send_and_wait(page: Page, text: str) -> None:
    count = await page.locator(".message-assistant").count()
    await send(page, text)
    reply = page.locator(".message-assistant").nth(count)
    await expect(reply).to_have_attribute("data-status", "complete")
