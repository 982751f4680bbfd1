"""/api/docs renders the schema in Chromium (issue #17: it had shown "Parser error: duplicated
mapping key"): every operation is listed, with no parser error and no script error."""

from __future__ import annotations

import json
import urllib.request

import pytest
from playwright.async_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]


def _operation_count(url: str) -> int:
    with urllib.request.urlopen(f"{url}/api/openapi.json", timeout=10) as response:
        schema = json.load(response)
    methods = {"get", "post", "put", "patch", "delete"}
    return sum(1 for item in schema["paths"].values() for method in item if method in methods)


async def test_the_api_docs_render_every_operation(page, live_asgi):
    from asgiref.sync import sync_to_async

    expected = await sync_to_async(_operation_count)(live_asgi.url)
    await page.goto("/api/docs")
    operations = page.locator(".opblock")
    await expect(operations).to_have_count(expected)
    await expect(page.locator(".errors-wrapper")).to_have_count(0)
    await expect(page.get_by_text("Parser error")).to_have_count(0)

    # The stream and the speech offer their own media types (the response's select) once opened.
    # (Swagger UI names each operation's block after its operationId: the stream, not its resume.)
    stream = page.locator("#operations-chat-chat_api_chat_stream")
    await stream.locator(".opblock-summary").click()
    await expect(stream.locator("option[value='text/event-stream']").first).to_be_attached()
    speech = page.locator(".opblock").filter(has_text="/api/v1/tts")
    await speech.locator(".opblock-summary").click()
    await expect(speech.locator("option[value='audio/wav']").first).to_be_attached()
    assert page.js_errors == []
