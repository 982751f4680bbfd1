"""Browser tests: a live ASGI server (daphne, HTTP + WebSockets) on the test database, the
Ollama stand-in, and headless Debian Chromium driven by Playwright.

pytest-django's live_server is WSGI and cannot carry /ws/chat, so the server is a daphne
subprocess pointed at the test database. Tests that use it must be
`django_db(transaction=True)`: their rows are committed, so the server sees them.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import pytest_asyncio

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("EVA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
PASSWORD = "correct horse battery"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium():
    """Debian's Chromium, headless, through Playwright's async API (its own browsers are not used).

    The async API, because the sync one keeps an event loop running in the test thread, where
    Django then refuses ORM calls (the test's own and pytest-django's flush between tests).
    """
    if not await asyncio.to_thread(os.path.exists, CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (tests/run does it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def browser_context(chromium, live_asgi):
    context = await chromium.new_context(
        base_url=live_asgi.url, viewport={"width": 1280, "height": 800}, locale="en-US"
    )
    context.set_default_timeout(10_000)
    yield context
    await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser_context):
    """A page; `page.js_errors` collects uncaught errors so that a test can assert there were none."""
    page = await browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.js_errors = errors
    yield page


@pytest.fixture
def logged_in(browser_context, live_asgi, make_user):
    """`await logged_in("alice")` → the user, whose session cookie the browser context now holds."""
    from asgiref.sync import sync_to_async
    from django.conf import settings
    from django.test import Client

    @sync_to_async
    def session_for(username: str, extra: dict):
        user = make_user(username, password=PASSWORD, **extra)
        client = Client()
        assert client.login(username=username, password=PASSWORD)
        return user, client.cookies[settings.SESSION_COOKIE_NAME].value

    async def login(username: str = "alice", **extra):
        user, session_key = await session_for(username, extra)
        await browser_context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": session_key, "url": live_asgi.url}]
        )
        return user

    return login
