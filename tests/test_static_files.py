"""Static files through WhiteNoise's middleware."""

from __future__ import annotations

import pytest
from django.test import AsyncClient


@pytest.fixture
def static_from_sources(settings):
    settings.WHITENOISE_USE_FINDERS = True
    settings.WHITENOISE_AUTOREFRESH = True


async def test_a_static_file_is_served(static_from_sources):
    response = await AsyncClient().get("/static/eva-icon.svg")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("image/svg")
    body = b"".join(response.streaming_content)
    assert body.lstrip().startswith(b"<svg")


async def test_a_missing_static_file_falls_through_to_a_404(static_from_sources):
    response = await AsyncClient().get("/static/no-such-file.css")
    assert response.status_code == 404

