"""No secret in any answer, error frame or log line: URL credentials and secret settings are redacted."""

from __future__ import annotations

import logging
import socket
import uuid

import pytest
from django.test import AsyncClient

from accounts.errors import EvaError
from accounts.redaction import REDACTED, RedactingFormatter, redact, redact_data, redact_url
from tests.chat.wsclient import ws_with_key

DB_PW, REDIS_PW, OLLAMA_PW, GROQ_PW = "S3cretDbPw", "S3cretRedisPw", "OllamaPw-9f2", "GroqPw-77c1"
GROQ_KEY = "gsk_live_Secret0123456789"
SECRETS = (DB_PW, REDIS_PW, OLLAMA_PW, GROQ_PW, GROQ_KEY)


@pytest.fixture
def closed_port():
    """A loopback port that refuses connections: bound (so nobody else takes it), never listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def credentials_everywhere(settings, closed_port):
    """Every URL setting carries a password, and points at nothing that answers."""
    from accounts.ratelimit import reset_rate_limits
    from chat.llm.fallback import reset_default_provider

    settings.DATABASE_URL = f"postgres://eva:{DB_PW}@db.internal:5432/eva"
    settings.REDIS_URL = f"redis://:{REDIS_PW}@127.0.0.1:{closed_port}/7"
    settings.OLLAMA_URL = f"http://svc:{OLLAMA_PW}@127.0.0.1:{closed_port}"
    settings.GROQ_BASE_URL = f"http://groq:{GROQ_PW}@127.0.0.1:{closed_port}"
    settings.GROQ_API_KEY = GROQ_KEY
    settings.GROQ_MAX_RETRIES = 0
    settings.CHANNEL_LAYER_PREFIX = f"redact-{uuid.uuid4().hex[:8]}"
    reset_rate_limits()
    reset_default_provider()
    yield settings
    reset_rate_limits()
    reset_default_provider()


@pytest.fixture
def eva_logs(caplog):
    """Every record of EVA's loggers, and WARNING and above of all others (what a server prints).

    Third-party DEBUG lines (the groq SDK prints request URLs) stay off as in production; if
    someone turns them on, the log formatter redacts them (test_every_log_line_...)."""
    for name in ("accounts", "chat", "voice", "metrics", "evaproject"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_redact_strips_userinfo_from_every_url_in_a_text():
    text = "at redis://:pw1@h:6399/7 and http://u:pw2@host/x, postgres://eva:pw3@db/eva; unix://:pw4@/run/r.sock"
    assert redact(text) == "at redis://h:6399/7 and http://host/x, postgres://db/eva; unix:///run/r.sock"
    assert redact_url("http://svc:OllamaPw@svc.local:11434") == "http://svc.local:11434"
    assert redact_url("https://token@api.example.com/v1") == "https://api.example.com/v1"
    assert redact_url("http://127.0.0.1:11434") == "http://127.0.0.1:11434"


def test_redact_masks_secret_query_values():
    assert redact("GET https://h/x?token=abc123&page=2") == f"GET https://h/x?token={REDACTED}&page=2"
    assert redact("rediss://h/0?password=hunter22") == f"rediss://h/0?password={REDACTED}"


def test_redact_removes_secret_settings_values_anywhere(settings):
    settings.GROQ_API_KEY = GROQ_KEY
    settings.REDIS_URL = "redis://:p%40ss-Word@127.0.0.1:6379/0"
    settings.READY_TOKEN = "ready-token-123"
    text = f"bad key {GROQ_KEY}; auth failed for p@ss-Word and p%40ss-Word; token ready-token-123"
    assert redact(text) == f"bad key {REDACTED}; auth failed for {REDACTED} and {REDACTED}; token {REDACTED}"
    assert settings.SECRET_KEY not in redact(f"key={settings.SECRET_KEY}")


def test_short_secrets_do_not_blank_ordinary_words(settings):
    settings.PROMETHEUS_TOKEN = "pw"
    assert redact("the pwd of the pw") == "the pwd of the pw"


def test_redact_data_walks_json():
    data = {"a": ["redis://:x1y2@h/0", {"b": "http://u:v@h"}], "n": 3, "ok": True}
    assert redact_data(data) == {"a": ["redis://h/0", {"b": "http://h"}], "n": 3, "ok": True}


def test_eva_errors_never_carry_a_secret(credentials_everywhere):
    error = EvaError(f"cannot reach {credentials_everywhere.REDIS_URL} with key {GROQ_KEY}")
    assert_no_secret(error.message, str(error))


def test_every_log_line_goes_through_redaction(settings, credentials_everywhere):
    assert settings.LOGGING["formatters"]["plain"]["class"] == "accounts.redaction.RedactingFormatter"
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise ConnectionError(f"Error connecting to {settings.DATABASE_URL}")
    except ConnectionError:
        import sys

        record = logging.LogRecord(
            "chat", logging.ERROR, __file__, 1, "down: %s %s", (settings.OLLAMA_URL, GROQ_KEY), sys.exc_info()
        )
    line = formatter.format(record)
    assert "down: http://127.0.0.1:" in line and "ConnectionError: Error connecting to postgres://db.internal" in line
    assert_no_secret(line)


@pytest.mark.django_db(transaction=True)
async def test_rest_rate_limit_503_names_redis_without_its_password(credentials_everywhere, user_key, eva_logs):
    _, key = await user_key()
    response = await AsyncClient().post(
        "/api/v1/chat", {"message": "hi"}, content_type="application/json", headers={"X-API-Key": key}
    )
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "rate_limit_unavailable"
    assert "redis://127.0.0.1:" in body["message"]
    assert_no_secret(response.content.decode(), eva_logs.text)


@pytest.mark.django_db(transaction=True)
async def test_ws_error_frame_when_redis_is_down_has_no_password(credentials_everywhere, user_key, eva_logs):
    _, key = await user_key()
    ws = ws_with_key(key)
    connected, _ = await ws.connect()
    assert connected
    await ws.send_json_to({"type": "message", "content": "hi"})
    frame = await ws.receive_json_from(timeout=10)
    await ws.disconnect()
    # Whichever Redis-backed check answers first (the rate limit, or the open sockets' registry).
    assert frame["type"] == "error" and frame["code"] in {"rate_limit_unavailable", "socket_registry_unavailable"}
    assert "Redis" in frame["message"]
    assert_no_secret(str(frame), eva_logs.text)


@pytest.mark.django_db(transaction=True)
async def test_no_backend_answer_and_logs_carry_no_llm_credentials(credentials_everywhere, user_key, eva_logs):
    credentials_everywhere.REDIS_URL = ""  # rate limits in memory: this test is about the LLM backends
    _, key = await user_key()
    response = await AsyncClient().post(
        "/api/v1/chat", {"message": "hi"}, content_type="application/json", headers={"X-API-Key": key}
    )
    assert response.status_code == 503 and response.json()["code"] == "no_backend"
    assert "connection refused" in response.json()["message"]
    assert_no_secret(response.content.decode(), eva_logs.text)


async def test_ollama_warmup_log_carries_no_credentials(credentials_everywhere, eva_logs):
    from chat.llm.ollama import ollama_warmup

    assert await ollama_warmup() is False
    assert "Ollama warm-up: http://127.0.0.1:" in eva_logs.text
    assert_no_secret(eva_logs.text)


@pytest.mark.django_db(transaction=True)
async def test_ready_details_carry_no_credentials(credentials_everywhere, monkeypatch, eva_logs):
    from evaproject import health

    async def failing_database() -> dict:
        # What a driver's error can look like: the connection string, password and all.
        raise ConnectionError(f"could not connect to {credentials_everywhere.DATABASE_URL} ({DB_PW})")

    async def no_tts() -> dict:
        return {"ok": False, "error": "not checked in this test"}

    monkeypatch.setitem(health.READY_CHECKS, "database", failing_database)
    monkeypatch.setitem(health.READY_CHECKS, "tts", no_tts)  # a worker ping would wait out its timeout
    credentials_everywhere.READY_TOKEN = "ready-token-for-tests"
    health.forget_readiness()
    anonymous = await AsyncClient().get("/ready")
    detailed = await AsyncClient().get("/ready", headers={"Authorization": "Bearer ready-token-for-tests"})
    assert anonymous.status_code == detailed.status_code == 503
    assert set(anonymous.json()) == {"status", "parts"}
    checks = detailed.json()["checks"]
    assert "postgres://db.internal:5432/eva" in checks["database"]["error"]
    assert checks["llm"]["ollama"]["url"] == f"http://127.0.0.1:{credentials_everywhere.OLLAMA_URL.rsplit(':', 1)[1]}"
    assert_no_secret(anonymous.content.decode(), detailed.content.decode(), eva_logs.text)
