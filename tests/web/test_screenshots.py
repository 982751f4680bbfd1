"""Screenshots of the main pages, at desktop and phone width.

Each run checks that the pages render without a script error; the pictures go to a temporary
folder, or to docs/screenshots/ for the README with `EVA_SCREENSHOTS_DIR=docs/screenshots`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.web.chatpage import open_chat, send_and_wait, word_tokens

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

REPLY = (
    "Here is a quick way to read a file line by line in Python:\n\n"
    "```python\nwith open(\"notes.txt\", encoding=\"utf-8\") as f:\n"
    "    for line in f:\n        print(line.rstrip())\n```\n\n"
    "A few things to know:\n\n"
    "- `with` closes the file for you, even after an error.\n"
    "- Iterating over `f` reads **one line at a time**, so big files are fine.\n"
    "- See the [tutorial](https://docs.python.org/3/tutorial/inputoutput.html) for more."
)


@pytest.fixture
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("EVA_SCREENSHOTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 375, "height": 812}


async def test_screenshots_of_the_main_pages(page, browser_context, logged_in, ollama_behaviour, shots):
    await page.set_viewport_size(DESKTOP)
    await page.goto("/login/")
    await page.get_by_label("Username").fill("alice")
    await page.screenshot(path=shots / "login.png")
    await page.set_viewport_size(PHONE)
    await page.screenshot(path=shots / "login-phone.png")
    await page.set_viewport_size(DESKTOP)

    await logged_in("alice")
    ollama_behaviour.reply_tokens = ["Sure! Ask me anything about Python."]
    await open_chat(page)
    await send_and_wait(page, "Can you help me with Python?")
    await page.get_by_role("button", name="New chat").click()
    ollama_behaviour.reply_tokens = ["Bonjour ! Je vais bien, merci."]
    await send_and_wait(page, "Bonjour, comment ça va ?")
    await page.get_by_role("button", name="New chat").click()
    ollama_behaviour.reply_tokens = word_tokens(REPLY)
    await send_and_wait(page, "How do I read a file line by line in Python?")
    await page.get_by_role("switch", name="Voice").check()
    await page.get_by_label("Message to EVA").focus()
    await page.wait_for_timeout(300)  # the switch's slide
    await page.screenshot(path=shots / "chat.png")

    await page.emulate_media(color_scheme="dark")
    await page.screenshot(path=shots / "chat-dark.png")
    await page.emulate_media(color_scheme="light")

    await page.set_viewport_size(PHONE)
    await page.screenshot(path=shots / "chat-phone.png")
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await page.get_by_role("button", name="Conversations").click()
    await expect(page.locator("#conversations")).to_be_visible()
    await page.screenshot(path=shots / "chat-phone-conversations.png")

    await page.emulate_media(color_scheme="dark")
    await page.get_by_role("button", name="Conversations").click()
    await page.screenshot(path=shots / "chat-phone-dark.png")
    await page.emulate_media(color_scheme="light")

    await page.set_viewport_size(DESKTOP)
    await page.goto("/keys/")
    for name, scope in (("Old laptop", None), ("Backup script", None), ("My phone", "Text-to-speech")):
        if await page.locator("#new-key").is_visible():
            await page.get_by_role("button", name="I have copied it, hide it").click()
        await page.get_by_label("Name").fill(name)
        if scope:
            await page.get_by_role("checkbox", name=scope).check()
        await page.get_by_role("button", name="Create key").click()
        await expect(page.locator("#new-key-value")).to_have_value(re.compile(r"^eva_"))
        await expect(page.locator("#keys-body tr", has_text=name)).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Revoke key “Old laptop”").click()
    await page.get_by_role("button", name="Show revoked and expired keys (1)").click()
    await expect(page.locator("tr", has_text="Old laptop")).to_have_attribute("data-status", "revoked")
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=shots / "keys.png", full_page=True)
    await page.set_viewport_size(PHONE)
    await page.screenshot(path=shots / "keys-phone.png", full_page=True)
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert page.js_errors == []
