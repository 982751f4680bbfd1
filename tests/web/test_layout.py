"""Phone width and keyboard use of the chat page."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.web.chatpage import open_chat, send_and_wait

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]


async def test_at_phone_width_the_conversation_list_folds_behind_a_button(page, logged_in, ollama_behaviour):
    await page.set_viewport_size({"width": 390, "height": 844})
    await logged_in("alice")
    await open_chat(page)
    await send_and_wait(page, "first chat")
    sidebar = page.locator("#conversations")
    toggle = page.get_by_role("button", name="Conversations")
    await expect(sidebar).to_be_hidden()
    await expect(toggle).to_have_attribute("aria-expanded", "false")

    await toggle.click()
    await expect(sidebar).to_be_visible()
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await page.get_by_role("button", name="New chat").click()
    await expect(sidebar).to_be_hidden()
    await expect(page.get_by_label("Message to EVA")).to_be_focused()
    await send_and_wait(page, "second chat")

    await toggle.click()
    await page.locator(".conversation-open", has_text="first chat").click()
    await expect(sidebar).to_be_hidden()
    await expect(page.locator(".message-user .message-text")).to_have_text(["first chat"])

    await toggle.click()
    await expect(page.locator(".conversation-open", has_text="first chat")).to_be_focused()
    await page.keyboard.press("Tab")
    await page.keyboard.press("Escape")
    await expect(sidebar).to_be_hidden()
    await expect(toggle).to_be_focused()
    # Nothing sticks out sideways on a narrow screen.
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390


async def test_the_keys_page_fits_a_phone_screen(page, logged_in):
    await page.set_viewport_size({"width": 390, "height": 844})
    await logged_in("alice")
    await page.goto("/keys/")
    await page.get_by_label("Name").fill("Phone")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("#keys-body tr")).to_have_count(1)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390


async def test_the_chat_is_usable_from_the_keyboard_alone(page, logged_in, ollama_behaviour):
    await logged_in("alice")
    await open_chat(page)
    await send_and_wait(page, "hello")
    # From the message box, Tab reaches the voice switch, then Send.
    await page.get_by_label("Message to EVA").focus()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("switch", name="Voice")).to_be_focused()
    await page.keyboard.press("Space")
    await expect(page.get_by_role("switch", name="Voice")).to_be_checked()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Send")).to_be_focused()
    # Focus is visible wherever it lands.
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    # The first Tab on a fresh page offers the skip link to the content.
    await page.reload()
    await expect(page.locator("#chat-layout")).to_have_attribute("data-ready", "true")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    # Renaming from the keyboard: Escape gives up and returns focus to the rename button.
    rename = page.get_by_role("button", name="Rename “hello”")
    await rename.focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("New title")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(rename).to_be_focused()
