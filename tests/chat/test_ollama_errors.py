"""Ollama that cannot be reached: the message says why, names the URL, and never its credentials."""

from __future__ import annotations

import base64
import logging
import socket

import pytest
from django.test import AsyncClient

from chat.llm.base import BackendUnavailable
from chat.llm.ollama import OllamaBackend, ollama_readiness, start_warmup_in_background
from tests.standins.ollama_server import OllamaStandIn

SECRET = "s3cret-Pa55"


@pytest.fixture
def closed_port():
    """A loopback port that refuses connections: bound (so nobody else takes it), never listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


async def first_failure(backend: OllamaBackend) -> BackendUnavailable:
    with pytest.raises(BackendUnavailable) as failure:
        async for _ in backend.stream([{"role": "user", "content": "hi"}]):
            pass
    return failure.value


async def test_a_refused_connection_is_reported_as_refused_with_the_url(settings, closed_port):
    settings.OLLAMA_URL = f"http://127.0.0.1:{closed_port}"
    error = await first_failure(OllamaBackend())
    assert "connection refused" in error.message
    assert f"http://127.0.0.1:{closed_port}" in error.message and "ollama serve" in error.message
    assert "Timeout" not in error.message  # httpx-aiohttp's name for it, which misled users


async def test_credentials_in_the_url_stay_out_of_messages_readiness_and_logs(settings, closed_port, caplog):
    settings.OLLAMA_URL = f"http://eva:{SECRET}@127.0.0.1:{closed_port}"
    settings.OLLAMA_WARMUP = True
    caplog.set_level(logging.DEBUG)
    error = await first_failure(OllamaBackend())
    assert "connection refused" in error.message and f"http://127.0.0.1:{closed_port}" in error.message
    ready = await ollama_readiness()
    assert ready["ok"] is False and "connection refused" in ready["error"]
    assert ready["url"] == f"http://127.0.0.1:{closed_port}"
    warmup = start_warmup_in_background()
    assert warmup is not None
    warmup.join(10)
    assert not warmup.is_alive() and "connection refused" in caplog.text
    for text in (error.message, str(ready), caplog.text):
        assert SECRET not in text and "eva:" not in text


async def test_an_ollama_url_that_does_not_parse_is_a_clear_error(settings):
    settings.OLLAMA_URL = "http://127.0.0.1:notaport"
    error = await first_failure(OllamaBackend())
    assert "OLLAMA_URL is not a valid URL" in error.message
    ready = await ollama_readiness()
    assert ready["ok"] is False and "OLLAMA_URL is not a valid URL" in ready["error"]


@pytest.mark.django_db(transaction=True)
async def test_the_no_backend_answer_says_refused_without_credentials(settings, closed_port, user_key):
    settings.OLLAMA_URL = f"http://eva:{SECRET}@127.0.0.1:{closed_port}"
    settings.GROQ_API_KEY = ""
    _, key = await user_key()
    response = await AsyncClient().post(
        "/api/v1/chat", {"message": "hi"}, content_type="application/json", headers={"X-API-Key": key}
    )
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "no_backend" and "connection refused" in body["message"]
    assert SECRET not in response.content.decode() and "eva:" not in response.content.decode()


class AuthRecordingOllama(OllamaStandIn):
    """The stand-in, also keeping each request's Authorization header."""

    def __init__(self) -> None:
        super().__init__()
        self.authorizations: list[str | None] = []

    async def route(self, method, path, headers, raw, reader, writer):
        self.authorizations.append(headers.get("authorization"))
        return await super().route(method, path, headers, raw, reader, writer)


async def test_credentials_in_the_url_are_sent_as_basic_auth(settings):
    server = AuthRecordingOllama().start()
    try:
        settings.OLLAMA_URL = server.url.replace("http://", f"http://eva:{SECRET}@")
        settings.OLLAMA_MODEL = "phi3:mini"
        chunks = [chunk async for chunk in OllamaBackend().stream([{"role": "user", "content": "hi"}])]
        assert "".join(getattr(chunk, "text", "") for chunk in chunks) == "Echo: hi"
        assert (await ollama_readiness())["ok"] is True
    finally:
        server.stop()
    expected = "Basic " + base64.b64encode(f"eva:{SECRET}".encode()).decode()
    assert server.authorizations == [expected, expected]
