"""Secrets out of answers, error frames and log lines.

Every text that can carry a URL, a setting or an exception's words (an error's message, a
/ready detail, a log line) goes through `redact` before it leaves the process: the user and
password of any URL in it are dropped, secret query parameters are masked, and the values of
the secret settings (SECRET_SETTINGS, and the passwords inside URL_SETTINGS, the database and
the Redis hosts) are replaced by REDACTED wherever they appear, even outside a URL (a driver
may quote a password on its own). `redact_url` is for a URL shown on purpose.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from django.conf import settings

REDACTED = "***"
SECRET_SETTINGS = ("SECRET_KEY", "API_KEY_HASH_SECRET", "GROQ_API_KEY", "PROMETHEUS_TOKEN", "READY_TOKEN")
URL_SETTINGS = ("DATABASE_URL", "REDIS_URL", "OLLAMA_URL", "GROQ_BASE_URL")
# Shorter values would blank ordinary words out of every message ("pw" in "pwd").
MIN_SECRET_CHARS = 4

# scheme://userinfo@ ; the userinfo runs to the last "@" before the path, as urlsplit reads it.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^\s/?#]*@)")
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&;](?:password|passwd|pwd|pass|token|access_token|api_key|apikey|key|secret|auth|signature)=)"
    r"(?P<value>[^&;#\s\"'<>]+)",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """The URL without user and password and with secret query values masked."""
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed URL (a bad IPv6 host): the text rules still apply
        return redact(url)
    if "@" in parts.netloc:
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return redact(url)


def redact(text: str) -> str:
    """`text` without URL credentials, secret query values or any secret setting's value."""
    if not text:
        return text
    if "://" in text:
        text = _USERINFO.sub(r"\g<scheme>", text)
    if "=" in text:
        text = _SECRET_QUERY.sub(rf"\g<name>{REDACTED}", text)
    for secret in _known_secrets(_secret_sources()):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_data(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings) with `redact` applied to every string in it."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_data(item) for item in value]
    return value


class RedactingFormatter(logging.Formatter):
    """A log formatter whose lines (message and traceback) went through `redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _secret_sources() -> tuple[str, ...]:
    """The raw settings values secrets are derived from (cheap: the derivation is cached)."""
    values = [str(getattr(settings, name, "") or "") for name in (*SECRET_SETTINGS, *URL_SETTINGS)]
    for database in getattr(settings, "DATABASES", {}).values():
        values.append(str(database.get("PASSWORD") or ""))
    values.extend(_layer_and_cache_urls())
    return tuple(values)


def _layer_and_cache_urls() -> Iterator[str]:
    for cache in getattr(settings, "CACHES", {}).values():
        location = cache.get("LOCATION")
        for each in location if isinstance(location, list | tuple) else [location]:
            if isinstance(each, str):
                yield each
    for layer in getattr(settings, "CHANNEL_LAYERS", {}).values():
        for host in (layer.get("CONFIG") or {}).get("hosts") or []:
            address = host.get("address") if isinstance(host, dict) else host
            if isinstance(address, str):
                yield address


@functools.lru_cache(maxsize=16)
def _known_secrets(sources: tuple[str, ...]) -> tuple[str, ...]:
    secrets: set[str] = set()
    for value in sources:
        if "://" in value:
            secrets.update(_url_password(value))
        else:
            secrets.add(value)
    # Longest first, so that a secret containing another is replaced whole.
    return tuple(sorted((s for s in secrets if len(s) >= MIN_SECRET_CHARS), key=len, reverse=True))


def _url_password(url: str) -> set[str]:
    try:
        password = urlsplit(url).password
    except ValueError:
        return set()
    return {password, unquote(password)} if password else set()
