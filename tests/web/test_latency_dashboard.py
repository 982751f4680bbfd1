"""#18: the latency dashboard in a real browser: readable unique time labels at every window,
marker labels that never overlap, users by name linking to the admin, the source and the
previous period shown."""

from __future__ import annotations

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone
from playwright.async_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

BOXES_JS = """(selector) => Array.from(document.querySelectorAll(selector)).map((node) => {
    const box = node.getBoundingClientRect();
    return {text: node.textContent.trim(), left: box.left, right: box.right, top: box.top, bottom: box.bottom};
})"""


def overlapping(boxes: list[dict]) -> list[tuple[str, str]]:
    pairs = []
    for index, first in enumerate(boxes):
        for second in boxes[index + 1 :]:
            apart = (
                first["right"] <= second["left"]
                or second["right"] <= first["left"]
                or first["bottom"] <= second["top"]
                or second["bottom"] <= first["top"]
            )
            if not apart:
                pairs.append((first["text"], second["text"]))
    return pairs


@sync_to_async
def seed(now):
    from django.contrib.auth import get_user_model

    from metrics import rollups
    from metrics.models import RequestMetric

    alice = get_user_model().objects.create_user("alice")
    rows = []
    # Every 20 minutes for 100 days, latencies close together (P50 and P95 markers nearly meet).
    for step in range(0, 100 * 72):
        at = now - timedelta(minutes=20 * step + 1)
        rows.append(
            RequestMetric(
                created_at=at, channel="ws", backend="ollama", model="phi3:mini", status="ok",
                ttft_ms=200.0 + step % 7, total_ms=900.0 + step % 11, user=alice if step % 2 else None,
            )
        )
    rows.append(
        RequestMetric(
            created_at=now - timedelta(minutes=3), channel="ws", backend="ollama", model="phi3:mini",
            status="error", error_code="upstream_error", total_ms=50.0, user=alice,
        )
    )
    RequestMetric.objects.bulk_create(rows)
    rollups.rebuild()
    return alice


async def test_time_labels_markers_users_source_and_comparison(page, logged_in):
    await logged_in("root", is_staff=True, is_superuser=True)
    alice = await seed(timezone.now())
    expected_source = {"15m": "raw", "1h": "raw", "24h": "raw", "7d": "rollups", "30d": "rollups", "90d": "rollups"}
    for window, source in expected_source.items():
        await page.goto(f"/dashboard/latency/?window={window}")
        await expect(page.locator("#ld-source")).to_have_attribute("data-source", source)
        labels = await page.evaluate(BOXES_JS, "svg.ld-chart text.ld-axis[text-anchor=middle]")
        texts = [label["text"] for label in labels]
        assert len(texts) >= 3, (window, texts)
        assert len(set(texts)) == len(texts), (window, texts)  # no label twice
        assert overlapping(labels) == [], window
        markers = await page.evaluate(BOXES_JS, "text.ld-marker")
        assert [m["text"].split()[0] for m in markers] == ["P50", "P95", "P99"], window
        assert overlapping(markers) == [], (window, markers)
        chart = (await page.evaluate(BOXES_JS, "svg.ld-chart"))[1]  # the histogram's
        for marker in markers:  # inside the chart, not cut off at its edge
            assert chart["left"] <= marker["left"] and marker["right"] <= chart["right"], (window, marker)
    await expect(page.locator("#ld-compare")).to_contain_text("P95 text total")
    await page.goto("/dashboard/latency/?window=1h")
    link = page.locator("td.ld-user a")
    await expect(link).to_have_text("alice")
    await link.click()
    await page.wait_for_url(f"**/admin/auth/user/{alice.pk}/change/")
    assert page.url.endswith(f"/admin/auth/user/{alice.pk}/change/")
    await expect(page.locator("#id_username")).to_have_value("alice")
    assert page.js_errors == []
