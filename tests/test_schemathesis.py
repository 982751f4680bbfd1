"""Schemathesis over the whole REST API as /api/openapi.json describes it, against a live daphne.

Every operation gets generated requests, valid and invalid, with an API key holding every scope
(its owner is staff, for the metrics) and a logged-in browser session with its CSRF token (the
keys API takes nothing else). No answer may be a 5xx, and every answer must be one the schema
declares: its status, content type, headers and body. Chat goes to the Ollama stand-in; TTS has
no worker, so a valid text is a quick 503. The examples are few and derandomized, to stay
well under two minutes and to give CI the same run each time.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.test import Client
from hypothesis import HealthCheck, settings
from ninja.responses import NinjaJSONEncoder
from schemathesis.config import SchemathesisConfig

from accounts.api_keys import ALL_SCOPES, api_key_create
from tests.live_server import LiveServer, start_daphne, stop_process

pytestmark = pytest.mark.django_db(transaction=True)

# 502 (the model failed) and 503 (no model, no TTS worker: the case here) are answers the API
# declares where they occur, which status_code_conformance checks; any other 5xx is a failure.
CONFIG = SchemathesisConfig.from_str(
    """
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "502", "503"]
"""
)

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_server(django_db_setup, django_db_blocker, web_ollama, tmp_path_factory) -> Iterator[LiveServer]:
    """daphne for this module: TTS without a worker gives up at once instead of after 5 s."""
    env = {
        "OLLAMA_URL": web_ollama.url,
        "TTS_TRANSPORT": "channel",
        "TTS_PICKUP_TIMEOUT_S": "0.1",
        "RATE_LIMIT_PER_USER": "100000/minute",
        "RATE_LIMIT_PER_KEY": "100000/minute",
    }
    server = start_daphne(env, tmp_path_factory.mktemp("schemathesis") / "daphne.log")
    yield server
    stop_process(server.process)


@pytest.fixture
def credentials(transactional_db) -> dict[str, dict[str, str]]:
    """An API key with every scope (of a staff user) and a browser session of another user, with CSRF.

    Two owners, so that a generated `DELETE /api/v1/keys/{id}` can never revoke the key in use.
    """
    staff = get_user_model().objects.create_user("schemathesis-staff", is_staff=True)
    _, key = api_key_create(owner=staff, name="schemathesis", scopes=ALL_SCOPES)
    browser = get_user_model().objects.create_user("schemathesis-browser")
    client = Client()
    client.force_login(browser)
    csrf = secrets.token_hex(16)  # a CSRF secret as Django makes them: 32 letters and digits
    return {
        "headers": {"X-API-Key": key, "X-CSRFToken": csrf},
        "cookies": {"sessionid": client.cookies["sessionid"].value, "csrftoken": csrf},
    }


def served_schema() -> dict:
    """What GET /api/openapi.json serves (Ninja's view returns this same call's result)."""
    import evaproject.urls  # noqa: F401  (attaches the routers)
    from evaproject.api import api

    return dict(api.get_openapi_schema())


# Loaded at collection, for one test per operation: schemathesis' lazy loader (from a fixture)
# reads a pytest internal that pytest 9 no longer has.
schema = schemathesis.openapi.from_dict(served_schema(), config=CONFIG)


def test_the_schema_tested_is_the_one_served():
    served = Client().get("/api/openapi.json")
    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(served_schema(), cls=NinjaJSONEncoder))


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_rest_api_answers_as_its_schema_says(case, credentials, api_server):
    try:
        case.call_and_validate(
            base_url=api_server.url,
            headers=credentials["headers"],
            cookies=credentials["cookies"],
            checks=CHECKS,
            timeout=30,
        )
    except BaseException:
        print(api_server.log_tail(40))  # the server's side of a failure: its traceback
        raise
