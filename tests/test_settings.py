"""Settings are validated at start-up: a bad value stops Django with the variable's name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def start_django(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY"}}
    base.update(DJANGO_SETTINGS_MODULE="evaproject.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT, env=base, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "maybe"),
        ("OLLAMA_URL", "localhost:11434"),
        ("LLM_NUM_PREDICT", "many"),
        ("LLM_TEMPERATURE", "7"),
        ("CHAT_MAX_MESSAGE_CHARS", "0"),
        ("REDIS_URL", "localhost:6379"),
        ("DATABASE_URL", "nosuchdb://x"),
        ("LLM_BACKENDS", "ollama,openai"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(name, value):
    result = start_django(**{"DEBUG": "true", name: value})
    assert result.returncode != 0
    assert name in result.stderr


def test_secret_key_is_required_when_debug_is_off():
    result = start_django(DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_embedded_defaults_are_sqlite_and_the_in_memory_layer():
    result = subprocess.run(
        [sys.executable, "-c", (
            "import django; django.setup(); from django.conf import settings as s; "
            "print(s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND'])"
        )],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
             "DEBUG": "true", "DJANGO_SETTINGS_MODULE": "evaproject.settings"},
    )
    assert result.stdout.split() == ["django.db.backends.sqlite3", "channels.layers.InMemoryChannelLayer"]


def test_production_settings_pass_the_deploy_check():
    env = {k: v for k, v in os.environ.items()}
    env.update(
        DEBUG="false", SECURE_SSL="true", SECRET_KEY="x" * 20 + "a-long-production-secret-1234567890-abcdefghij",
        ALLOWED_HOSTS="eva.example.com", DJANGO_SETTINGS_MODULE="evaproject.settings",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr + result.stdout
