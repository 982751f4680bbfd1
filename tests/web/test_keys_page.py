"""The API keys page in a real browser: create (shown once, copyable), list, revoke."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest
from asgiref.sync import sync_to_async
from playwright.async_api import expect

from accounts.models import ApiKey

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]


def call_with_key(base_url: str, key: str) -> int:
    request = urllib.request.Request(f"{base_url}/api/v1/sessions", headers={"X-API-Key": key})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            json.load(response)
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


async def test_a_new_key_is_shown_once_can_be_copied_used_and_revoked(page, browser_context, logged_in, live_asgi):
    await browser_context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_asgi.url)
    alice = await logged_in("alice")
    await page.goto("/keys/")
    await expect(page.get_by_text("You have no API keys yet.")).to_be_visible()

    await page.get_by_label("Name").fill("My phone")
    await page.get_by_role("checkbox", name="Text-to-speech").check()
    await page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("New API key")
    await expect(secret).to_have_value(re.compile(r"^eva_[0-9a-f]{12}_\S{20,}$"))
    key = await secret.input_value()
    await expect(page.locator("#new-key")).to_be_focused()

    await page.get_by_role("button", name="Copy").click()
    await expect(page.get_by_text("Copied to the clipboard.")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == key

    row = page.locator("#keys-body tr", has_text="My phone")
    await expect(row).to_have_attribute("data-status", "active")
    await expect(row).to_contain_text(key[: len("eva_") + 12])
    await expect(row.locator(".chip")).to_have_text(["chat", "tts"])
    await expect(row.locator("td").nth(3)).to_have_text("never")  # last used
    assert key not in await row.inner_text()  # the list never shows the secret

    # Shown once: after a reload only the prefix remains.
    await page.reload()
    await expect(page.locator("#new-key")).to_be_hidden()
    assert key not in await page.content()

    assert await sync_to_async(call_with_key)(live_asgi.url, key) == 200
    await page.reload()
    await expect(row.locator("td").nth(3)).not_to_have_text("never")

    page.once("dialog", lambda dialog: dialog.accept())
    await row.get_by_role("button", name="Revoke key “My phone”").click()
    await expect(row).to_have_count(0)  # revoked and expired keys are hidden until asked for
    await page.get_by_role("button", name="Show revoked and expired keys (1)").click()
    await expect(row).to_have_attribute("data-status", "revoked")
    await expect(row.get_by_role("button", name=re.compile("Revoke"))).to_have_count(0)
    assert await sync_to_async(call_with_key)(live_asgi.url, key) == 401
    revoked = await sync_to_async(lambda: ApiKey.objects.get(owner=alice, name="My phone").revoked_at)()
    assert revoked is not None
    assert page.js_errors == []


async def test_declining_the_confirmation_keeps_the_key(page, logged_in):
    await logged_in("alice")
    await page.goto("/keys/")
    await page.get_by_label("Name").fill("Script")
    await page.get_by_role("button", name="Create key").click()
    row = page.locator("#keys-body tr", has_text="Script")
    await expect(row).to_have_attribute("data-status", "active")
    page.once("dialog", lambda dialog: dialog.dismiss())
    await row.get_by_role("button", name="Revoke key “Script”").click()
    await page.wait_for_timeout(200)
    await expect(row).to_have_attribute("data-status", "active")


async def test_a_key_needs_a_name_and_a_scope(page, logged_in):
    await logged_in("alice")
    await page.goto("/keys/")
    await page.get_by_role("checkbox", name="Chat").uncheck()
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("#create-error")).to_have_text("Give the key a name. Choose at least one scope.")
    await expect(page.get_by_label("Name")).to_be_focused()
    await expect(page.locator("#keys-body tr")).to_have_count(0)


async def test_a_key_can_expire_at_the_end_of_a_chosen_day(page, logged_in):
    alice = await logged_in("alice")
    await page.goto("/keys/")
    await page.get_by_label("Name").fill("Trial")
    await page.get_by_label("Expires").fill("2031-01-31")
    await page.get_by_role("button", name="Create key").click()
    row = page.locator("#keys-body tr", has_text="Trial")
    await expect(row.locator("td").nth(4)).to_contain_text("Jan 31, 2031")
    expires = await sync_to_async(lambda: ApiKey.objects.get(owner=alice, name="Trial").expires_at)()
    assert (expires.year, expires.month) == (2031, 1) and expires.day in (31, 1)  # the page's own time zone


async def test_the_secret_panel_goes_when_its_key_is_revoked_and_old_keys_can_be_hidden(page, logged_in):
    from datetime import timedelta

    from django.utils import timezone

    alice = await logged_in("alice")
    from accounts.api_keys import api_key_create

    def expired_key():
        key, _ = api_key_create(owner=alice, name="Old trial", scopes="chat")
        ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(days=1))

    await sync_to_async(expired_key)()
    await page.goto("/keys/")
    await expect(page.locator("#keys-body tr")).to_have_count(0)
    await expect(page.get_by_text("You have no active API keys.")).to_be_visible()
    await page.get_by_label("Name").fill("Laptop")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.get_by_label("New API key")).to_have_value(re.compile(r"^eva_"))
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Revoke key “Laptop”").click()
    await expect(page.locator("#new-key")).to_be_hidden()
    assert await page.get_by_label("New API key").input_value() == ""
    toggle = page.get_by_role("button", name="Show revoked and expired keys (2)")
    await toggle.click()
    await expect(page.locator("#keys-body tr")).to_have_count(2)
    await expect(page.locator("#keys-body tr", has_text="Old trial")).to_have_attribute("data-status", "expired")
    # The choice is kept in this browser.
    await page.reload()
    await expect(page.locator("#keys-body tr")).to_have_count(2)
    await page.get_by_role("button", name="Hide revoked and expired keys (2)").click()
    await expect(page.locator("#keys-body tr")).to_have_count(0)
    assert page.js_errors == []
