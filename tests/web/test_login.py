"""Logging in and out through the pages, as a person does."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.web.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]


async def test_logging_in_opens_the_chat_and_logging_out_closes_it(page, make_user, live_asgi):
    from asgiref.sync import sync_to_async

    await sync_to_async(make_user)("alice", password=PASSWORD)
    await page.goto("/")
    await expect(page).to_have_url(f"{live_asgi.url}/login/?next=/")
    await expect(page.get_by_label("Username")).to_be_focused()
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill("wrong password")
    await page.get_by_label("Password").press("Enter")
    await expect(page.get_by_role("alert")).to_contain_text("Please enter a correct username and password")

    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(f"{live_asgi.url}/")
    await expect(page.locator("#connection-status")).to_have_attribute("data-state", "open")

    await page.get_by_role("button", name="Log out").click()
    # Logging out also ends the page's socket (4401, logged_out), whose handler may send the page
    # to the login page first, with ?next=: either way it lands there.
    await expect(page).to_have_url(re.compile(rf"{re.escape(live_asgi.url)}/login/(\?next=%2F)?$"))
    await page.goto("/keys/")
    await expect(page).to_have_url(f"{live_asgi.url}/login/?next=/keys/")
