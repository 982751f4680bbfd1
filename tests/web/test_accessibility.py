"""Accessibility of every page (issue #19): no serious or critical axe-core violations on the
login, chat, keys and dashboard pages, in light and dark themes, at phone and desktop widths;
the favicon; the login page's account hint.

axe-core is vendored, pinned (tests/web/vendor/README.md), and injected through Playwright's
evaluate, which the pages' Content-Security-Policy does not apply to.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.web.chatpage import open_chat, send_and_wait

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

AXE = Path(__file__).with_name("vendor") / "axe.min.js"
SERIOUS = ("serious", "critical")


async def axe_violations(page) -> list[dict]:
    """The page's serious and critical violations (rule, impact, the first few offending nodes)."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(await asyncio.to_thread(AXE.read_text))
    results = await page.evaluate(
        "axe.run(document, { resultTypes: ['violations'],"
        " runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] })"
    )
    return [
        {"rule": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"][:5]]}
        for v in results["violations"]
        if v["impact"] in SERIOUS
    ]


# After a change of colour scheme: two frames for the styles to apply, then every transition it
# started (the admin's links fade their colour) finished, so that axe sees the final colours.
SETTLED = """() => new Promise(resolve => requestAnimationFrame(() => requestAnimationFrame(resolve)))
  .then(() => Promise.all(document.getAnimations().map(a => a.finished.catch(() => null))))"""


async def assert_accessible(page, where: str) -> None:
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        await page.evaluate(SETTLED)
        found = await axe_violations(page)
        assert found == [], f"{where} ({scheme}): " + json.dumps(found, indent=1)
    await page.emulate_media(color_scheme="light")


async def test_no_serious_axe_violations_on_login_chat_and_keys(page, logged_in, ollama_behaviour):
    await page.goto("/login/")
    await assert_accessible(page, "login")

    await logged_in("alice")
    ollama_behaviour.reply_tokens = ["Here:\n\n", "```python\n", "print('hi')\n", "```\n", "\nDone."]
    await open_chat(page)
    await assert_accessible(page, "empty chat")
    await send_and_wait(page, "Show me code")
    await assert_accessible(page, "chat with a reply")
    await page.set_viewport_size({"width": 375, "height": 812})
    await page.get_by_role("button", name="Conversations").click()
    await expect(page.locator("#conversations")).to_be_visible()
    await assert_accessible(page, "chat at 375 px, list open")
    await page.set_viewport_size({"width": 1280, "height": 800})

    await page.goto("/keys/")
    await page.get_by_label("Name").fill("Phone")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("#keys-body tr")).to_have_count(1)
    await assert_accessible(page, "keys")
    assert page.js_errors == []


async def test_no_serious_axe_violations_on_the_latency_dashboard(page, logged_in):
    await logged_in("root", is_staff=True, is_superuser=True)  # metrics.view_latency (#18)
    await page.goto("/dashboard/latency/")
    await expect(page.locator("h1")).to_be_visible()
    await assert_accessible(page, "latency dashboard")


async def test_the_favicon_is_served(page, live_asgi):
    response = await page.request.get(f"{live_asgi.url}/favicon.ico")
    assert response.status == 200 and response.url.endswith("/static/favicon.ico")
    body = await response.body()
    assert body[:4] == b"\x00\x00\x01\x00"  # an ICO file


async def test_the_login_page_says_how_to_get_an_account(page):
    await page.goto("/login/")
    hint = page.locator("#account-hint")
    await expect(hint).to_contain_text("Accounts on this EVA are made by its administrator")
    await expect(hint.get_by_role("link")).to_have_count(0)  # sign-up is off on the live server
