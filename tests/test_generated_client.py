"""A Python client generated from /api/openapi.json works (issue #17): openapi-python-client
generates it from what a live daphne serves, with no warning, and every operation is called
through it, with a success and with an error, each parsed into the declared model.

The generator runs from a virtual environment of its own (tests/openapi-client-requirements.txt,
pinned): it needs another typer than the project's venv has. It is made once, under
$EVA_TOOLS_DIR (default ~/.cache/eva-tests), from PyPI. The generated package needs only httpx
and attrs, which the project's venv has, so it is imported here.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import subprocess
import sys
import urllib.request
import venv
import wave
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from accounts.api_keys import ALL_SCOPES, api_key_create
from accounts.models import Scope
from tests.live_server import ROOT, LiveServer, start_daphne, stop_process

# The first speech loads torch and the voice in the server's worker: minutes on a loaded 2-vCPU box.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

REQUIREMENTS = ROOT / "tests" / "openapi-client-requirements.txt"
# audio/wav is a binary body: the generator's documented override maps it to its bytes type.
GENERATOR_CONFIG = "content_type_overrides:\n  audio/wav: application/octet-stream\n"


def _tools_dir() -> Path:
    default = Path.home() / ".cache" / "eva-tests"
    return Path(os.environ.get("EVA_TOOLS_DIR") or default)


@pytest.fixture(scope="session")
def generator() -> Path:
    """The openapi-python-client executable, in its own pinned venv (made on first use)."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    home = _tools_dir() / f"openapi-python-client-{digest}"
    executable = home / "bin" / "openapi-python-client"
    if not executable.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(home)
        subprocess.run(
            [str(home / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
            check=True,
            timeout=600,
        )
    return executable


@pytest.fixture(scope="module")
def tts_server(django_db_setup, django_db_blocker, web_ollama, tmp_path_factory) -> Iterator[LiveServer]:
    """daphne with the Ollama stand-in and a tiny MMS voice synthesised in the server's own worker."""
    from voice.engine import build_tiny_voice

    voice = build_tiny_voice(tmp_path_factory.mktemp("voices") / "tiny-mms")
    env = {
        "OLLAMA_URL": web_ollama.url,
        "TTS_TRANSPORT": "local",
        "MMS_TTS_MODEL": str(voice),
        "TTS_DEFAULT_VOICE": "fra",
        "TTS_VOICES": f"eng={voice}",
        "TTS_CPU_THREADS": "1",
        "TTS_WARMUP": "false",
    }
    server = start_daphne(env, tmp_path_factory.mktemp("generated-client") / "daphne.log")
    yield server
    stop_process(server.process)


def generate(generator: Path, server: LiveServer, out: Path) -> tuple[ModuleType, str]:
    """Generate the client from the served schema into `out`; the package and the generator's output."""
    schema = out / "openapi.json"
    with urllib.request.urlopen(f"{server.url}/api/openapi.json", timeout=10) as response:
        schema.write_bytes(response.read())
    config = out / "config.yml"
    config.write_text(GENERATOR_CONFIG)
    # The generator's post hooks run ruff (pinned in tests/requirements.txt): from this venv.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(
        [str(generator), "generate", "--path", str(schema), "--config", str(config), "--meta", "none",
         "--output-path", str(out / "eva_client")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("eva_client"), output
    finally:
        sys.path.remove(str(out))


@pytest.fixture
def callers(transactional_db) -> dict[str, Any]:
    """An API key with every scope (staff owner), a key with chat only, a browser session with CSRF."""
    staff = get_user_model().objects.create_user("client-staff", is_staff=True)
    _, key = api_key_create(owner=staff, name="generated client", scopes=ALL_SCOPES)
    _, chat_only = api_key_create(owner=staff, name="chat only", scopes=[Scope.CHAT])
    browser = get_user_model().objects.create_user("client-browser")
    django_client = Client()
    django_client.force_login(browser)
    csrf = "a" * 32
    return {"key": key, "chat_only": chat_only, "session": django_client.cookies["sessionid"].value, "csrf": csrf}


def test_a_generated_client_calls_every_operation(generator, tts_server, callers, tmp_path, ollama_behaviour):
    eva, output = generate(generator, tts_server, tmp_path)
    assert "warning" not in output.lower() and "error" not in output.lower(), output

    def module(name: str) -> Any:
        return importlib.import_module(f"eva_client.{name}")

    models = module("models")
    authenticated = eva.AuthenticatedClient
    # Undeclared statuses raise: every answer below must be one the schema declares.
    options = {"base_url": tts_server.url, "raise_on_unexpected_status": True, "timeout": 30.0}
    client = authenticated(token=callers["key"], **options)
    chat_only = authenticated(token=callers["chat_only"], **options)
    nobody = authenticated(token="eva_not-a-key", **options)
    # The keys API takes a browser session only: its CSRF token stands where the generator puts a token.
    browser = authenticated(
        token=callers["csrf"], prefix="", auth_header_name="X-CSRFToken",
        cookies={"sessionid": callers["session"], "csrftoken": callers["csrf"]}, **options,
    )
    called: set[str] = set()

    def call(operation: str, caller: Any, *args: Any, status: int, parsed: Any, **kwargs: Any) -> Any:
        group, name = operation.split(".")
        response = module(f"api.{group}.{name}").sync_detailed(*args, client=caller, **kwargs)
        assert response.status_code == status, (operation, response.content[:300], tts_server.log_tail(20))
        assert isinstance(response.parsed, parsed), (operation, type(response.parsed))
        called.add(operation)
        return response.parsed

    error = models.ErrorOut

    # chat
    reply = call("chat.chat_api_chat", client, status=200, parsed=models.ChatOut,
                 body=models.ChatIn(message="Hello", session_id="generated"))
    assert reply.response and reply.session_id == "generated" and reply.tokens > 0
    refused = call("chat.chat_api_chat", client, status=422, parsed=error, body=models.ChatIn(message=" "))
    assert refused.code == "empty_message"
    assert call("chat.chat_api_chat", nobody, status=401, parsed=error, body=models.ChatIn(message="Hi")).code
    stream = call("chat.chat_api_chat_stream", client, status=200, parsed=str,
                  body=models.ChatIn(message="Hello again", session_id="generated"))
    assert stream.startswith("id: 1\nevent: start\n") and "event: end\n" in stream
    # A reply's frames are kept for a resume (#17): the whole reply again, then after its start alone.
    start = json.loads(stream.split("event: start\ndata: ", 1)[1].split("\n", 1)[0])
    again = call("chat.chat_api_chat_stream_resume", client, start["request_id"], status=200, parsed=str)
    assert again == stream
    rest = call("chat.chat_api_chat_stream_resume", client, start["request_id"], status=200, parsed=str,
                last_event_id="1")
    assert rest == stream.split("\n\n", 1)[1]
    assert call("chat.chat_api_chat_stream_resume", client, "00000000-0000-4000-8000-000000000000", status=404,
                parsed=error).code == "not_found"
    call("chat.chat_api_chat_stream_resume", nobody, start["request_id"], status=401, parsed=error)
    assert call("chat.chat_api_chat_stream", nobody, status=401, parsed=error,
                body=models.ChatIn(message="Hi")).code == "invalid_api_key"

    # conversations
    sessions = call("chat.chat_api_list_sessions", client, status=200, parsed=list)
    assert [s.session_id for s in sessions] == ["generated"]
    call("chat.chat_api_list_sessions", nobody, status=401, parsed=error)
    created = call("chat.chat_api_create_session", client, status=201, parsed=models.SessionOut,
                   body=models.SessionIn(session_id="second", title="Second"))
    assert created.title == "Second"
    assert call("chat.chat_api_create_session", client, status=409, parsed=error,
                body=models.SessionIn(session_id="second")).code
    one = call("chat.chat_api_get_session", client, "generated", status=200, parsed=models.SessionOut)
    assert one.message_count == 4
    assert call("chat.chat_api_get_session", client, "nobody-has-it", status=404, parsed=error).code == "not_found"
    page = call("chat.chat_api_list_messages", client, "generated", status=200, parsed=models.MessagesPage, limit=2)
    assert page.count == 4 and len(page.items) == 2
    call("chat.chat_api_list_messages", client, "generated", status=422, parsed=error, limit=0)
    # search, export and rewind (#19)
    found = call("chat.chat_api_search_sessions", client, status=200, parsed=models.SessionSearchPage, q="hello")
    assert [s.session_id for s in found.items] == ["generated"] and found.count == 1
    call("chat.chat_api_search_sessions", client, status=422, parsed=error, q="")
    as_json = models.ChatApiExportSessionFormat.JSON
    exported = call("chat.chat_api_export_session", client, "generated", status=200, parsed=models.ExportOut,
                    format_=as_json)
    assert [m.role for m in exported.messages] == ["user", "assistant", "user", "assistant"]
    call("chat.chat_api_export_session", client, "nobody-has-it", status=404, parsed=error, format_=as_json)
    taken = call("chat.chat_api_rewind_session", client, "generated", status=200, parsed=models.RewindOut,
                 body=models.RewindIn())
    assert taken.content == "Hello again"
    call("chat.chat_api_rewind_session", client, "nobody-has-it", status=404, parsed=error, body=models.RewindIn())
    renamed = call("chat.chat_api_rename_session", client, "second", status=200, parsed=models.SessionOut,
                   body=models.SessionPatch(title="Renamed"))
    assert renamed.title == "Renamed"
    call("chat.chat_api_rename_session", client, "nobody-has-it", status=404, parsed=error,
         body=models.SessionPatch(title="x"))
    call("chat.chat_api_clear_session", client, "generated", status=204, parsed=type(None))
    call("chat.chat_api_clear_session", client, "not an id!", status=422, parsed=error)
    call("chat.chat_api_delete_session", client, "second", status=204, parsed=type(None))
    call("chat.chat_api_delete_session", client, "second", status=404, parsed=error)

    # voice
    voices = call("voice.voice_api_list_voices", client, status=200, parsed=list)
    assert {v.name for v in voices} == {"fra", "eng"}
    call("voice.voice_api_list_voices", nobody, status=401, parsed=error)
    # The first speech loads torch and the voice in the server's worker: on a busy box, a while.
    patient = client.with_timeout(httpx.Timeout(300.0))
    speech = call("voice.voice_api_speak", patient, status=200, parsed=eva.types.File,
                  body=models.SpeechIn(text="Bonjour", voice="fra"))
    with wave.open(io.BytesIO(speech.payload.read())) as wav:
        assert wav.getnframes() > 0 and wav.getsampwidth() == 2
    assert call("voice.voice_api_speak", client, status=422, parsed=error,
                body=models.SpeechIn(text="Bonjour", voice="klingon")).code == "unknown_voice"

    # metrics (staff key: every scope)
    report = call("metrics.metrics_api_latency", client, status=200, parsed=models.LatencyReportOut)
    assert report.window is not None
    assert call("metrics.metrics_api_latency", chat_only, status=403, parsed=error).code
    csv = call("metrics.metrics_api_export_csv", client, status=200, parsed=str)
    assert "request_id" in csv.splitlines()[0].split(",")
    call("metrics.metrics_api_export_csv", client, status=422, parsed=error, window="forever")

    # API keys (browser session + CSRF)
    new = call("api_keys.accounts_keys_api_create_key", browser, status=201, parsed=models.KeyCreatedOut,
               body=models.KeyIn(name="from the client", scopes=["chat"]))
    assert new.key.startswith("eva_") or new.key
    listed = call("api_keys.accounts_keys_api_list_keys", browser, status=200, parsed=list)
    assert [k.id for k in listed] == [new.id]
    call("api_keys.accounts_keys_api_list_keys", nobody, status=401, parsed=error)
    call("api_keys.accounts_keys_api_create_key", browser, status=422, parsed=error,
         body=models.KeyIn(name="", scopes=["chat"]))
    call("api_keys.accounts_keys_api_revoke_key", browser, new.id, status=200, parsed=models.KeyOut)
    call("api_keys.accounts_keys_api_revoke_key", browser, 10**9, status=404, parsed=error)
    call("api_keys.accounts_keys_api_delete_key", browser, new.id, status=200, parsed=models.KeyOut)
    call("api_keys.accounts_keys_api_delete_key", browser, 10**9, status=404, parsed=error)

    generated = {
        f"{path.parent.name}.{path.stem}"
        for path in (tmp_path / "eva_client" / "api").glob("*/*.py")
        if path.stem != "__init__"
    }
    assert generated and called == generated, generated - called
