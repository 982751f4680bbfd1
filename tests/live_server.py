"""A live ASGI server for tests that need real sockets: daphne (HTTP + WebSockets) on the
test database, with the Ollama stand-in; uvicorn too, the faster server README offers.

pytest-django's live_server is WSGI and cannot carry /ws/chat, so the server is a daphne (or
uvicorn) subprocess pointed at the test database. Tests that use it must be
`django_db(transaction=True)`: their rows are committed, so the server sees them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class LiveServer:
    url: str
    log: Path
    process: subprocess.Popen

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url(db: dict) -> str:
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = db.get("HOST") or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{quote(db['NAME'], safe='')}"


@pytest.fixture(scope="session")
def web_ollama():
    """One Ollama stand-in for the session; `ollama_behaviour` resets it for each test."""
    from tests.standins.ollama_server import OllamaStandIn

    server = OllamaStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def ollama_behaviour(web_ollama):
    from tests.standins.ollama_server import OllamaBehaviour

    web_ollama.behaviour = OllamaBehaviour(token_interval_s=0.02)
    return web_ollama.behaviour


SERVER_COMMANDS = {
    "daphne": ["-m", "daphne", "-b", "127.0.0.1", "-p", "{port}", "evaproject.asgi:application"],
    # README's uvicorn command.
    "uvicorn": ["-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--lifespan", "off",
                "--ws", "websockets-sansio", "--ws-per-message-deflate", "false", "evaproject.asgi:application"],
}


def start_daphne(env_overrides: dict[str, str], log: Path) -> LiveServer:
    """daphne serving evaproject.asgi on a free loopback port, on the test database."""
    return start_server("daphne", env_overrides, log)


def start_server(kind: str, env_overrides: dict[str, str], log: Path) -> LiveServer:
    """`kind` (daphne or uvicorn) serving evaproject.asgi on a free loopback port, on the test database."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if "postgresql" not in db["ENGINE"]:
        pytest.fail("live-server tests need the Postgres test database (DATABASE_URL)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.web.live_settings",
        "DATABASE_URL": _database_url(db),
        "DEBUG": "false",
        "SECURE_SSL": "false",
        "SECRET_KEY": settings.SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CSRF_TRUSTED_ORIGINS": url,
        "REDIS_URL": settings.REDIS_URL,
        "CHANNEL_LAYER_PREFIX": settings.CHANNEL_LAYER_PREFIX,
        "OLLAMA_MODEL": "phi3:mini",
        "OLLAMA_WARMUP": "false",
        "LLM_BACKENDS": "ollama",
        "GROQ_API_KEY": "",
        "LLM_FIRST_TOKEN_DEADLINE_S": "5",
        "BREAKER_FAILURE_THRESHOLD": "1000",
        "RATE_LIMIT_PER_USER": "1000/minute",
        "RATE_LIMIT_PER_KEY": "1000/minute",
        "LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
        **env_overrides,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, *(part.format(port=port) for part in SERVER_COMMANDS[kind])],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(url=url, log=log, process=process)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            pytest.fail(f"{kind} exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_process(process)
            pytest.fail(f"{kind} did not answer /health within 60 s:\n{server.log_tail()}")
        time.sleep(0.2)


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@pytest.fixture(scope="session")
def live_asgi(django_db_setup, django_db_blocker, web_ollama, tmp_path_factory) -> LiveServer:
    """daphne on the test database, with the session's in-process Ollama stand-in."""
    server = start_daphne({"OLLAMA_URL": web_ollama.url}, tmp_path_factory.mktemp("live-asgi") / "daphne.log")
    yield server
    stop_process(server.process)


@pytest.fixture(scope="session")
def live_uvicorn(django_db_setup, django_db_blocker, web_ollama, tmp_path_factory) -> LiveServer:
    """uvicorn, as README runs it, on the test database, with the session's Ollama stand-in."""
    log = tmp_path_factory.mktemp("live-uvicorn") / "uvicorn.log"
    server = start_server("uvicorn", {"OLLAMA_URL": web_ollama.url}, log)
    yield server
    stop_process(server.process)
