"""The reply's write (chat.store's Postgres turn_finish) with #19's additions against the statement
before them: `done_reason` stored, and `superseded_at` inherited from the user message through a
subquery on (session, request id, newest first).

A scratch database is migrated (the schema of this checkout: both statements run against it,
so the cost of maintaining #19's partial index on user messages is not in the comparison); one
conversation holds M earlier messages, beside --others conversations of 40 messages each. Each
round runs the two statements alternately, S times each, each after storing its user message
(untimed), on one psycopg connection (autocommit; psycopg prepares a statement after its 5th
use), and prints the median time per statement of each, and their ratio, over the rounds. The
session runs with synchronous_commit off: the commit's disk flush, the same for both, is left out.

Run: .venv/bin/python bench/reply_write_19.py [--messages 2000] [--others 500] [--statements 300]
     [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_NAME = "eva_bench_reply19"
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
os.environ.update(
    DJANGO_SETTINGS_MODULE="evaproject.settings",
    DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    SECRET_KEY="bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    DEBUG="false",
    REDIS_URL="",
)

# The statement as it was before #19 (commit 96dc0a1's chat/store.py).
BEFORE = """
WITH reply AS (
    INSERT INTO chat_chatmessage (session_id, role, content, status, backend, model, request_id, ttft_ms,
                                  total_ms, created_at)
    SELECT %(session_pk)s, 'assistant', %(content)s, %(status)s, %(backend)s, %(model)s, %(request_id)s,
           %(ttft_ms)s, %(total_ms)s, %(at)s
    WHERE EXISTS (SELECT 1 FROM chat_chatsession WHERE id = %(session_pk)s)
    RETURNING id
)
UPDATE chat_chatsession SET updated_at = %(at)s, title = CASE WHEN title = '' THEN %(title)s ELSE title END
WHERE id = %(session_pk)s
RETURNING id
"""


USER_MESSAGE = """
INSERT INTO chat_chatmessage (session_id, role, content, status, backend, model, request_id, created_at)
VALUES (%(session_pk)s, 'user', 'a question', 'complete', '', '', %(request_id)s, now())
"""
SUBQUERY = """
SELECT u.superseded_at FROM chat_chatmessage u
WHERE u.session_id = %(session_pk)s AND u.request_id = %(asked)s AND u.role = 'user' AND u.request_id <> ''
ORDER BY u.created_at DESC LIMIT 1
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--others", type=int, default=500)
    parser.add_argument("--statements", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME}")
        admin.execute(f"CREATE DATABASE {DB_NAME}")
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from chat.store import _TURN_FINISH_SQL as AFTER

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    from chat.models import ChatMessage, ChatSession

    user = get_user_model().objects.create_user("bench")
    session = ChatSession.objects.create(owner=user, session_id="bench", title="bench")
    ChatMessage.objects.bulk_create(
        ChatMessage(
            session=session, role="user" if i % 2 == 0 else "assistant", content=f"m{i}", request_id=f"r{i // 2}"
        )
        for i in range(args.messages)
    )
    for other in range(args.others):
        elsewhere = ChatSession.objects.create(owner=user, session_id=f"other{other}", title="o")
        ChatMessage.objects.bulk_create(
            ChatMessage(
                session=elsewhere,
                role="user" if i % 2 == 0 else "assistant",
                content=f"o{i}",
                request_id=f"o{other}-{i // 2}",
            )
            for i in range(40)
        )
    asked = f"r{args.messages // 2 - 1}"  # the newest exchange's user message
    params = {
        "session_pk": session.pk,
        "content": "a reply of a few words",
        "status": "complete",
        "backend": "ollama",
        "model": "phi3:mini",
        "request_id": asked,
        "asked": asked,
        "ttft_ms": 12.5,
        "total_ms": 80.0,
        "at": timezone.now(),
        "title": "t",
        "done_reason": "stop",
    }
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}", autocommit=True) as conn:
        conn.execute("ANALYZE")
        # Each statement commits (autocommit); the WAL flush it waits for is the same for both and
        # dwarfs their difference on this shared disk: this session does not wait for it.
        conn.execute("SET synchronous_commit = off")
        per_statement: dict[str, list[float]] = {"before": [], "after": []}
        for round_no in range(args.rounds):
            order = [("before", BEFORE), ("after", AFTER)]
            if round_no % 2:
                order.reverse()
            for name, sql in order:
                spent = 0.0
                for n in range(10 + args.statements):  # 10 to warm: psycopg prepares after the 5th use
                    # As in a chat turn: the user's message is stored, then its reply (timed).
                    request_id = f"{name}-{round_no}-{n}"
                    conn.execute(USER_MESSAGE, {"session_pk": session.pk, "request_id": request_id})
                    started = time.perf_counter()
                    conn.execute(sql, {**params, "request_id": request_id, "asked": request_id})
                    if n >= 10:
                        spent += time.perf_counter() - started
                per_statement[name].append(spent / args.statements * 1000)
            conn.execute("DELETE FROM chat_chatmessage WHERE content IN ('a question', 'a reply of a few words')")
        # The whole turn's writes (user message + reply, the new statement) with and without the
        # partial index the new statement looks through: what maintaining it costs an insert.
        turn: dict[str, list[float]] = {"with index": [], "without index": []}
        index_sql = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'chat_message_asked_19'"
        ).fetchone()[0]
        for round_no in range(args.rounds):
            variants = ["with index", "without index"] if round_no % 2 == 0 else ["without index", "with index"]
            for variant in variants:
                if variant == "without index":
                    conn.execute("DROP INDEX chat_message_asked_19")
                spent = 0.0
                for n in range(10 + args.statements):
                    request_id = f"turn-{round_no}-{variant[:4]}-{n}"
                    started = time.perf_counter()
                    conn.execute(USER_MESSAGE, {"session_pk": session.pk, "request_id": request_id})
                    conn.execute(AFTER, {**params, "request_id": request_id, "asked": request_id})
                    if n >= 10:
                        spent += time.perf_counter() - started
                turn[variant].append(spent / args.statements * 1000)
                if variant == "without index":
                    conn.execute(index_sql)
            conn.execute("DELETE FROM chat_chatmessage WHERE content IN ('a question', 'a reply of a few words')")
        plan = conn.execute("EXPLAIN " + SUBQUERY, {"session_pk": session.pk, "asked": asked}).fetchall()
    before, after = (statistics.median(per_statement[k]) for k in ("before", "after"))
    print(
        f"messages in the conversation: {args.messages}, statements per round: {args.statements}, rounds: {args.rounds}"
    )
    for name, median in (("before #19", before), ("after #19", after)):
        rounds = ", ".join(f"{v:.3f}" for v in per_statement[name.split()[0]])
        print(f"{name}: median {median:.3f} ms per statement  ({rounds})")
    print(f"ratio after/before: {after / before:.3f}")
    with_index, without = (statistics.median(turn[k]) for k in ("with index", "without index"))
    print(
        f"a turn's two writes (new statement): with the index {with_index:.3f} ms, without {without:.3f} ms,"
        f" ratio {with_index / without:.3f}"
    )
    print("the subquery's plan:\n  " + "\n  ".join(row[0] for row in plan))
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


if __name__ == "__main__":
    main()
