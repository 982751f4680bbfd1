"""Every database operation written twice (plain SQL on Postgres, the ORM elsewhere) gives the same
rows, results and errors on every backend.

One scenario per operation — the chat store's history read, turn begin and turn finish, the API
key check with its `last_used_at` write, the metric insert — runs three ways:

- postgres-async: Postgres with DATABASE_ASYNC on, the plain statements of accounts.asyncdb;
- postgres-orm: the same Postgres with DATABASE_ASYNC off, the ORM in executor threads;
- sqlite-orm: a real SQLite database, in a process whose settings have no Postgres: this file run
  as a program with DATABASE_URL=sqlite:///... (`python -m tests.test_db_parity`).

A scenario returns what it saw (returned values, errors, the rows it left) as JSON values, with
primary keys and timestamps replaced by labels, and the three records must be equal.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)  # a turn's given time: must come back exactly


class Seen:
    """What a scenario saw, in terms that do not depend on the backend: primary keys become
    `kind#n` in order of appearance, the scenario's own times their names, times taken while it
    ran "now"."""

    def __init__(self) -> None:
        from django.utils import timezone

        self.started = timezone.now()
        self.times: dict[datetime, str] = {AT: "AT"}
        self.labels: dict[tuple[str, Any], str] = {}
        self.log: dict[str, Any] = {}

    def time(self, name: str, value: datetime) -> datetime:
        self.times[value] = name
        return value

    def pk(self, kind: str, value: Any) -> str | None:
        if value is None:
            return None
        if (kind, value) not in self.labels:
            self.labels[(kind, value)] = f"{kind}#{sum(known == kind for known, _ in self.labels) + 1}"
        return self.labels[(kind, value)]

    def value(self, value: Any) -> Any:
        from django.utils import timezone

        if isinstance(value, datetime):
            if value in self.times:
                return self.times[value]
            return "now" if self.started <= value <= timezone.now() else value.isoformat()
        if isinstance(value, list | tuple):
            return [self.value(each) for each in value]
        if isinstance(value, dict):
            return {key: self.value(each) for key, each in value.items()}
        return value

    def note(self, name: str, value: Any) -> None:
        assert name not in self.log, name
        self.log[name] = self.value(value)

    async def call(self, name: str, call: Awaitable[Any], shown: Callable[[Any], Any] = lambda result: result) -> Any:
        """Await `call`; note its result (as `shown` gives it) or its error."""
        from accounts.errors import EvaError

        try:
            result = await call
        except EvaError as exc:
            self.note(
                name, {"error": type(exc).__name__, "code": exc.code, "status": exc.status, "message": exc.message}
            )
            return None
        except Exception as exc:  # an error of one backend only shows as a difference
            self.note(name, {"error": f"{type(exc).__module__}.{type(exc).__name__}", "message": str(exc)})
            return None
        self.note(name, shown(result))
        return result


async def orm(function: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    from asgiref.sync import sync_to_async

    return await sync_to_async(function, thread_sensitive=False)(*args, **kwargs)


def _new_user(username: str, **fields: Any) -> int:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username, **fields).pk


def _rows(model: Any, order: list[str]) -> list[dict[str, Any]]:
    """Every column of every row of `model`'s table."""
    return list(model.objects.order_by(*order).values(*(f.attname for f in model._meta.concrete_fields)))


async def sessions(seen: Seen) -> list[dict[str, Any]]:
    from chat.models import ChatSession

    rows = await orm(_rows, ChatSession, ["id"])
    return [{**row, "id": seen.pk("session", row["id"]), "owner_id": seen.pk("user", row["owner_id"])} for row in rows]


async def messages(seen: Seen) -> list[dict[str, Any]]:
    from chat.models import ChatMessage

    rows = await orm(_rows, ChatMessage, ["session_id", "created_at", "content", "request_id"])
    return [
        {**row, "id": seen.pk("message", row["id"]), "session_id": seen.pk("session", row["session_id"])}
        for row in rows
    ]


# --- the scenarios -----------------------------------------------------------------------


async def turn_begin(seen: Seen) -> None:
    """The user's message: the conversation made on first use, named after it; the title rule."""
    from chat.models import ChatSession
    from chat.store import chat_store

    store = chat_store()
    alice, bob = seen.pk("user", await orm(_new_user, "alice")), seen.pk("user", await orm(_new_user, "bob"))
    owners = {label: pk for (kind, pk), label in seen.labels.items() if kind == "user"}
    made = await orm(
        ChatSession.objects.create,
        owner_id=owners[alice],
        session_id="api-made",
        title="",
        created_at=AT,
        updated_at=AT,
    )
    seen.pk("session", made.pk)
    long = "Bonjour,   quel temps fait-il\tà Paris\naujourd'hui ? " * 3
    cases = [
        ("first message", alice, "s1", long, AT),
        ("second message", alice, "s1", "et demain ?", seen.time("AT + 1 s", AT + timedelta(seconds=1))),
        ("same name, other owner", bob, "s1", "  short title  ", AT),
        ("60 characters", alice, "s60", "x" * 60, AT),
        ("61 characters", alice, "s61", "y" * 61, AT),
        ("untitled conversation", alice, "api-made", "no title from me", AT),
        ("NUL byte", alice, "s-nul", "a\x00b", AT),
    ]
    for number, (name, owner, session_id, content, at) in enumerate(cases):
        await seen.call(
            name,
            store.turn_begin(
                owner_id=owners[owner], session_id=session_id, content=content, request_id=f"r{number}", at=at
            ),
            lambda pk: seen.pk("session", pk),
        )
    racing = await asyncio.gather(
        *(
            store.turn_begin(
                owner_id=owners[bob], session_id="race", content="all at once", request_id=f"race{i}", at=AT
            )
            for i in range(4)
        )
    )
    seen.note("racing first messages", sorted({seen.pk("session", pk) for pk in racing}))
    seen.note("sessions", await sessions(seen))
    seen.note("messages", await messages(seen))


async def turn_finish(seen: Seen) -> None:
    """The reply: stored with its timings, the conversation's updated_at moved, an untitled one named."""
    from chat.models import ChatSession
    from chat.store import chat_store

    store = chat_store()
    owner = await orm(_new_user, "alice")
    seen.pk("user", owner)
    titled = await store.turn_begin(
        owner_id=owner, session_id="titled", content="Où partir en mai ?", request_id="q", at=AT
    )
    untitled = (
        await orm(ChatSession.objects.create, owner_id=owner, session_id="api", title="", created_at=AT, updated_at=AT)
    ).pk
    doomed = (
        await orm(ChatSession.objects.create, owner_id=owner, session_id="doomed", created_at=AT, updated_at=AT)
    ).pk
    for pk in (titled, untitled, doomed):
        seen.pk("session", pk)
    await orm(ChatSession.objects.filter(pk=doomed).delete)  # deleted while its reply streamed
    reply = {"backend": "ollama", "model": "phi3:mini", "request_id": "q", "title": "Named by the reply"}
    cases = [
        ("complete", titled, {"content": "À Lisbonne.", "status": "complete", "ttft_ms": 12.5, "total_ms": 80.25}),
        ("partial", titled, {"content": "À Lis", "status": "partial", "ttft_ms": 3.0, "total_ms": None}),
        ("error, nothing said", titled, {"content": "", "status": "error", "ttft_ms": None, "total_ms": 1.5}),
        (
            "names an untitled conversation",
            untitled,
            {"content": "ok", "status": "complete", "ttft_ms": None, "total_ms": None},
        ),
        (
            "NUL byte",
            untitled,
            {"content": "a\x00b", "status": "complete", "ttft_ms": 0.1, "total_ms": 0.2, "title": "t\x00"},
        ),
        (
            "conversation deleted meanwhile",
            doomed,
            {"content": "lost", "status": "complete", "ttft_ms": 1.0, "total_ms": 2.0},
        ),
    ]
    for name, session_pk, fields in cases:
        await seen.call(name, store.turn_finish(session_pk=session_pk, **{**reply, **fields}))
    seen.note("sessions", await sessions(seen))
    seen.note("messages", await messages(seen))


async def history(seen: Seen) -> None:
    """The last turns of the owner's conversation, oldest first, without empty or failed replies."""
    from chat.models import ChatMessage, ChatSession
    from chat.store import chat_store

    store = chat_store()
    alice, bob = await orm(_new_user, "alice"), await orm(_new_user, "bob")
    mine = await orm(ChatSession.objects.create, owner_id=alice, session_id="s", title="t")
    theirs = await orm(ChatSession.objects.create, owner_id=bob, session_id="s", title="t")
    rows = [(mine, "user", f"q{i}", "complete", AT + timedelta(seconds=2 * i)) for i in range(5)]
    rows += [(mine, "assistant", f"a{i}", "complete", AT + timedelta(seconds=2 * i + 1)) for i in (0, 3, 4)]
    rows += [
        (mine, "assistant", "failed", "error", AT + timedelta(seconds=3)),
        (mine, "assistant", "", "complete", AT + timedelta(seconds=5)),  # nothing said
        (mine, "assistant", "a4, same time", "partial", AT + timedelta(seconds=9)),  # a tie: the later id is newer
        (theirs, "user", "bob's secret", "complete", AT),
    ]
    await orm(
        ChatMessage.objects.bulk_create,
        [
            ChatMessage(session=s, role=role, content=text, status=status, created_at=at)
            for s, role, text, status, at in rows
        ],
    )
    for turns in (-1, 0, 1, 2, 10):
        await seen.call(f"{turns} turns", store.history(owner_id=alice, session_id="s", turns=turns))
    await seen.call("unknown conversation", store.history(owner_id=alice, session_id="nope", turns=5))
    await seen.call("another owner's", store.history(owner_id=bob, session_id="s", turns=5))


def _key(raw: str, **changes: Any) -> tuple[int, str]:
    from django.contrib.auth import get_user_model

    from accounts.api_keys import api_key_create
    from accounts.models import ApiKey

    active = changes.pop("active", True)
    user = get_user_model().objects.create_user(f"owner-of-{raw}", email=f"{raw}@example.com", is_active=active)
    scopes = changes.pop("scopes", "chat,tts")
    key, plaintext = api_key_create(owner=user, name=raw, scopes=scopes, expires_at=changes.pop("expires_at", None))
    if changes:
        ApiKey.objects.filter(pk=key.pk).update(**changes)
    return key.pk, plaintext


async def api_key_authenticate(seen: Seen) -> None:
    """The key check: the key and its owner, each refusal's error, last_used_at once per window."""
    from django.test import override_settings
    from django.utils import timezone

    from accounts.api_keys import api_key_authenticate_async
    from accounts.models import ApiKey

    now = timezone.now()
    recent, old = (
        seen.time("10 s ago", now - timedelta(seconds=10)),
        seen.time("120 s ago", now - timedelta(seconds=120)),
    )
    keys: dict[str, str] = {}
    for name, changes in {
        "fresh": {},
        "used 10 s ago": {"last_used_at": recent},
        "used 120 s ago": {"last_used_at": old},
        "revoked": {"revoked_at": old},
        "expired": {"expires_at": seen.time("in an hour", now + timedelta(hours=1)), "last_used_at": None},
        "inactive owner": {"active": False},
        "tts only": {"scopes": "tts"},
    }.items():
        pk, keys[name] = await orm(_key, name.replace(" ", "-"), **changes)
        seen.pk("key", pk)
    await orm(ApiKey.objects.filter(name="expired").update, expires_at=seen.time("1 s ago", now - timedelta(seconds=1)))

    def shown(key: ApiKey) -> dict[str, Any]:
        fields = ("name", "scopes", "expires_at", "last_used_at", "revoked_at", "created_at")
        owner = key.owner
        return {
            "key": seen.pk("key", key.pk),
            **{field: getattr(key, field) for field in fields},
            "owner": [owner.username, owner.email, owner.is_active, owner.is_staff],
        }

    secret = keys["fresh"].split("_", 2)[2]
    calls: list[tuple[str, Any, str | None]] = [
        ("valid", keys["fresh"], "chat"),
        ("valid again, within the window", keys["fresh"], "tts"),
        ("used 10 s ago", keys["used 10 s ago"], None),
        ("used 120 s ago", keys["used 120 s ago"], "chat"),
        ("wrong secret", keys["fresh"][:-2] + ("AA" if not keys["fresh"].endswith("AA") else "BB"), "chat"),
        ("unknown prefix", f"eva_ffffffffffff_{secret}", "chat"),
        ("missing", None, "chat"),
        ("empty", "", "chat"),
        ("two parts", "eva_onlytwo", "chat"),
        ("NUL in the prefix", f"eva_ab\x00cd_{secret}", "chat"),
        ("NUL in the secret", f"{keys['fresh']}\x00", "chat"),
        ("not a string", 12345, "chat"),
        ("revoked", keys["revoked"], "chat"),
        ("expired", keys["expired"], "chat"),
        ("inactive owner", keys["inactive owner"], "chat"),
        ("missing scope", keys["tts only"], "chat"),
        ("no scope asked", keys["tts only"], None),
    ]
    for name, raw, scope in calls:
        await seen.call(name, api_key_authenticate_async(raw_key=raw, scope=scope), shown)
        if name == "valid":  # the next use, within the window, must leave this time as it is
            seen.time("first use", await orm(lambda: ApiKey.objects.get(name="fresh").last_used_at))
    with override_settings(API_KEY_LAST_USED_RESOLUTION_S=0):
        await seen.call("resolution 0", api_key_authenticate_async(raw_key=keys["used 10 s ago"]), shown)
    rows = await orm(_rows, ApiKey, ["id"])
    seen.note(
        "keys",
        [
            {**row, "id": seen.pk("key", row["id"]), "owner_id": seen.pk("user", row["owner_id"])}
            | {"prefix": len(row["prefix"]), "hashed_secret": len(row["hashed_secret"])}  # random: their lengths
            for row in rows
        ],
    )


async def metric_insert(seen: Seen) -> None:
    """Queued request metrics, written with every column."""
    from accounts.models import ApiKey
    from metrics.models import RequestMetric
    from metrics.recorder import flush_metrics, record_metric

    key_pk, _ = await orm(_key, "metrics")
    key = await ApiKey.objects.aget(pk=key_pk)
    seen.pk("user", key.owner_id)
    seen.pk("key", key_pk)
    every_field = dict(
        created_at=AT,
        request_id="f" * 36,
        user_id=key.owner_id,
        api_key_id=key_pk,
        session_id="s" * 100,
        channel="sse",
        backend="groq",
        model="m" * 100,
        status="error",
        error_code="e" * 48,
        ttft_ms=12.5,
        total_ms=80.125,
        time_to_first_audio_ms=99.75,
        speech_total_ms=150.5,
        tokens_in=7,
        tokens_out=2_000_000_000,
        upstream_load_ms=1.25,
        upstream_prompt_ms=0.0,
        upstream_generation_ms=56.7,
        upstream_queue_ms=1e-3,
    )
    fields = {f.name for f in RequestMetric._meta.concrete_fields if not f.primary_key}
    assert {name.removesuffix("_id") if name in ("user_id", "api_key_id") else name for name in every_field} == fields
    record_metric(**every_field)
    record_metric(request_id="defaults", channel="ws", status="ok", total_ms=5.0)  # created_at: now
    record_metric(
        request_id="tts",
        channel="tts",
        status="cancelled",
        total_ms=0.5,
        time_to_first_audio_ms=0.25,
        user_id=key.owner_id,
    )
    await flush_metrics()
    rows = await orm(_rows, RequestMetric, ["request_id"])
    seen.note(
        "rows",
        [
            {**row, "id": seen.pk("metric", row["id"])}
            | {"user_id": seen.pk("user", row["user_id"]), "api_key_id": seen.pk("key", row["api_key_id"])}
            for row in rows
        ],
    )


SCENARIOS: dict[str, Callable[[Seen], Awaitable[None]]] = {
    scenario.__name__: scenario for scenario in (history, turn_begin, turn_finish, api_key_authenticate, metric_insert)
}


async def run(scenario: Callable[[Seen], Awaitable[None]]) -> dict[str, Any]:
    """The scenario's record, as JSON gives it back (lists, not tuples)."""
    seen = Seen()
    await scenario(seen)
    return json.loads(json.dumps(seen.log))


# --- the tests ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def on_sqlite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every scenario's record on a fresh SQLite database (this file run as a program)."""
    database = tmp_path_factory.mktemp("parity") / "eva.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "DJANGO_SETTINGS_MODULE": "evaproject.settings"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.test_db_parity"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("operation", SCENARIOS)
@pytest.mark.parametrize("path", ["postgres-async", "postgres-orm"])
async def test_every_backend_gives_the_same_rows_results_and_errors(settings, on_sqlite, operation, path):
    from accounts.asyncdb import async_db_enabled
    from chat.store import OrmChatStore, PostgresChatStore, chat_store

    settings.DATABASE_ASYNC = path == "postgres-async"
    assert async_db_enabled() is (path == "postgres-async")
    assert isinstance(chat_store(), PostgresChatStore if path == "postgres-async" else OrmChatStore)
    record = await run(SCENARIOS[operation])
    assert record == on_sqlite[operation]


def test_the_scenarios_see_what_they_should(on_sqlite):
    """The records compared above say what the operations must do (on SQLite, the reference)."""
    began, finished, keys = on_sqlite["turn_begin"], on_sqlite["turn_finish"], on_sqlite["api_key_authenticate"]
    titles = {(row["owner_id"], row["session_id"]): row["title"] for row in began["sessions"]}
    assert titles[("user#1", "s1")] == ("Bonjour, quel temps fait-il à Paris aujourd'hui ? Bonjour, quel"[:59] + "…")
    assert (titles[("user#2", "s1")], titles[("user#1", "s60")], titles[("user#1", "s61")]) == (
        "short title",
        "x" * 60,
        "y" * 59 + "…",
    )
    assert (
        titles[("user#1", "api-made")] == ""
        and began["first message"] == began["second message"] != began["same name, other owner"]
    )
    assert len(began["racing first messages"]) == 1
    assert [row["request_id"] for row in began["messages"] if row["content"] == "all at once"] == [
        f"race{i}" for i in range(4)
    ]
    assert "a\ufffdb" in {row["content"] for row in began["messages"]}
    assert {row["created_at"] for row in began["messages"]} == {"AT", "AT + 1 s"}

    assert finished["conversation deleted meanwhile"]["code"] == "not_found"
    assert [row["title"] for row in finished["sessions"]] == ["Où partir en mai ?", "Named by the reply"]
    assert [row["updated_at"] for row in finished["sessions"]] == ["now", "now"]
    assert ("assistant", "a\ufffdb", 0.1, 0.2) in {
        (r["role"], r["content"], r["ttft_ms"], r["total_ms"]) for r in finished["messages"]
    }

    assert on_sqlite["history"]["2 turns"] == [
        {"role": "assistant", "content": "a3"},
        {"role": "user", "content": "q4"},
        {"role": "assistant", "content": "a4"},
        {"role": "assistant", "content": "a4, same time"},
    ]
    assert on_sqlite["history"]["-1 turns"] == on_sqlite["history"]["unknown conversation"] == []

    codes = {
        name: result.get("code") for name, result in keys.items() if isinstance(result, dict) and "error" in result
    }
    assert codes == {
        "wrong secret": "invalid_api_key",
        "unknown prefix": "invalid_api_key",
        "missing": "missing_api_key",
        "empty": "missing_api_key",
        "two parts": "invalid_api_key",
        "NUL in the prefix": "invalid_api_key",
        "NUL in the secret": "invalid_api_key",
        "not a string": "invalid_api_key",
        "revoked": "revoked_api_key",
        "expired": "expired_api_key",
        "inactive owner": "inactive_user",
        "missing scope": "missing_scope",
    }
    used = {row["name"]: row["last_used_at"] for row in keys["keys"]}
    assert used == {
        "fresh": "first use",
        "used-10-s-ago": "now",
        "used-120-s-ago": "now",
        "revoked": None,
        "expired": None,
        "inactive-owner": None,
        "tts-only": "now",
    }
    assert (keys["valid"]["last_used_at"], keys["valid again, within the window"]["last_used_at"]) == (
        "now",
        "first use",
    )
    # Left alone within the window, then written with a resolution of 0.
    assert keys["used 10 s ago"]["last_used_at"] == "10 s ago" and keys["resolution 0"]["last_used_at"] == "now"

    written = {row["request_id"]: row for row in on_sqlite["metric_insert"]["rows"]}
    assert written["f" * 36]["created_at"] == "AT" and written["defaults"]["created_at"] == "now"
    assert (written["f" * 36]["user_id"], written["f" * 36]["api_key_id"], written["tts"]["api_key_id"]) == (
        "user#1",
        "key#1",
        None,
    )


def main() -> None:
    """Run every scenario on the SQLite database of DATABASE_URL; print the records as JSON."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from accounts.asyncdb import close_async_pool
    from metrics.recorder import stop_metric_writer

    assert connection.vendor == "sqlite", connection.vendor
    call_command("migrate", verbosity=0)
    records = {}
    for name, scenario in SCENARIOS.items():
        call_command("flush", interactive=False, verbosity=0)  # as pytest does between the Postgres runs

        async def one(scenario: Callable[[Seen], Awaitable[None]] = scenario) -> dict[str, Any]:
            try:
                return await run(scenario)
            finally:
                await stop_metric_writer()
                await close_async_pool()

        records[name] = asyncio.run(one())
    print(json.dumps(records))


if __name__ == "__main__":
    main()
