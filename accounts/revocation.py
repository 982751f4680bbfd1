"""Open /ws/chat sockets, the credentials they stand on, and what ends them.

A socket authenticates once, at its handshake; it may stay open for hours. When its credential
goes (an API key revoked or deleted, its user deactivated or deleted, its browser session logged
out), `credentials_revoke` ends it within moments with an `error` frame (`revoked_api_key`,
`user_inactive`, `logged_out`) and close code 4401, in whichever web process it is open:

- Each process keeps a registry of its open sockets by credential (`key:<id>`, `user:<id>`,
  `session:<session key>`). A revocation made in this process closes the matching sockets at
  once, from whatever thread it runs in.
- With REDIS_URL, a revocation also leaves a mark per credential in Redis (kept
  REVOCATION_MARK_TTL_S) and a notice in one Redis stream. Each process reads the stream with
  ONE watcher task (a blocking XREAD on one connection), however many sockets it has: chat
  sockets join no channel layer, which would cost a Redis read loop per socket. The watcher
  stops when its process has no socket left and starts again with the next one, reading from
  where that socket's opening left the stream: no notice falls between the two.
- A socket's `message` and `clear` frames look the marks up (one MGET, batched with those of
  the loop's other sockets), so that a socket whose watcher is slow or cut off from Redis is
  refused anyway; other frames consult what this process knows, for free.
- Without Redis, one process serves every socket: the registry alone, and marks in memory for
  the few milliseconds between a handshake's credential check and the socket's registration.

Marks are what a socket could miss; a user re-activated loses hers (`credentials_restore`), so
that her new sockets are not refused. Keys and sessions never come back.

The number of open sockets per key and per user is capped (WS_MAX_SOCKETS_PER_KEY,
WS_MAX_SOCKETS_PER_USER; 0: no cap): over it, `too_many_sockets` and close code 4429. With Redis
the count spans every process: one sorted set per key and per user of socket ids, each scored
with the end of its lease, which the watcher renews while the socket is open; a process that
dies without closing its sockets stops renewing, and its entries stop counting after
SOCKET_LEASE_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import redis
import redis.asyncio
from django.conf import settings
from django.db import transaction
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from accounts.batching import Batcher, settle_each
from accounts.errors import EvaError

logger = logging.getLogger("accounts.revocation")

KEY, USER, SESSION = "key", "user", "session"
# (KEY, "<key prefix>"), (USER, "3"), (SESSION, "<digest of the session key>"). A key goes by
# its prefix, not its id: an id comes back after a database is reset, and a mark left for it
# would refuse the new key.
Credential = tuple[str, str]

REVOKED_API_KEY = "revoked_api_key"
USER_INACTIVE = "user_inactive"
LOGGED_OUT = "logged_out"
MESSAGES = {
    REVOKED_API_KEY: "The API key of this socket has been revoked.",
    USER_INACTIVE: "This account has been deactivated.",
    LOGGED_OUT: "This browser session has logged out.",
}
CLOSE_REVOKED = 4401
CLOSE_TOO_MANY = 4429

# A mark outlives any socket its notice could have missed: daphne ends sockets after 24 h.
REVOCATION_MARK_TTL_S = 86_400
SOCKET_LEASE_S = 60
LEASE_RENEWAL_S = 20
STREAM_MAX_ENTRIES = 10_000
REDIS_TIMEOUT_S = 5.0


class SocketRevoked(EvaError):
    """The socket's credential is gone: an error frame, then close code 4401."""

    status = 401


class TooManySockets(EvaError):
    """The key or the user already holds as many open sockets as allowed."""

    code = "too_many_sockets"
    status = 429


class _RedisUnavailable(Exception):
    """Redis did not answer in REDIS_TIMEOUT_S, or refused the connection."""


def revocation_message(code: str) -> str:
    """What the `error` frame that ends a socket says about `code`."""
    return MESSAGES.get(code, "The credential of this socket is no longer valid.")


def key_credential(key_prefix: str) -> Credential:
    """The credential of an API key, by its prefix (unique, and never given again)."""
    return (KEY, key_prefix)


def user_credential(user_id: int) -> Credential:
    """The credential of a user, which all of her sockets stand on."""
    return (USER, str(int(user_id)))


def session_credential(session_key: str) -> Credential:
    """The credential of one browser session (its cookie sockets), by a digest of its key."""
    # Never the key itself: it would sit in Redis, in its stream and in logs.
    return (SESSION, hashlib.sha256(session_key.encode()).hexdigest()[:32])


def _name(credential: Credential) -> str:
    return f"{credential[0]}:{credential[1]}"


def _parse(name: str) -> Credential | None:
    kind, sep, ident = name.partition(":")
    return (kind, ident) if sep and kind in (KEY, USER, SESSION) and ident else None


def _prefix() -> str:
    return f"{settings.CHANNEL_LAYER_PREFIX}:ws"


def _mark_key(credential: Credential) -> str:
    return f"{_prefix()}:revoked:{_name(credential)}"


def _open_key(credential: Credential) -> str:
    return f"{_prefix()}:open:{_name(credential)}"


def _stream_key() -> str:
    return f"{_prefix()}:revocations"


class OpenSocket:
    """One socket open in this process: its credentials, its event loop, and what ends it."""

    def __init__(
        self,
        *,
        user_id: int,
        api_key_prefix: str | None,
        session_key: str | None,
        on_revoked: Callable[[str], Awaitable[None]],
    ) -> None:
        self.id = uuid.uuid4().hex
        credentials = [user_credential(user_id)]
        if api_key_prefix is not None:
            credentials.append(key_credential(api_key_prefix))
        if session_key:
            credentials.append(session_credential(session_key))
        self.credentials: tuple[Credential, ...] = tuple(credentials)
        self.caps: list[tuple[Credential, int]] = [(user_credential(user_id), settings.WS_MAX_SOCKETS_PER_USER)]
        if api_key_prefix is not None:
            self.caps.append((key_credential(api_key_prefix), settings.WS_MAX_SOCKETS_PER_KEY))
        self.counted: list[str] = []  # the Redis sets this socket holds a place in
        self.loop = asyncio.get_running_loop()
        self.on_revoked = on_revoked
        self.revoked: str | None = None  # the revocation's code, once this process knows it
        self.closed = False


class _Registry:
    """This process's open sockets by credential; thread-safe (revocations come from any thread)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sockets: dict[Credential, set[OpenSocket]] = {}
        # Without Redis only: credential -> (code, monotonic expiry).
        self.marks: dict[Credential, tuple[str, float]] = {}

    def add(self, sock: OpenSocket, *, count_locally: bool) -> None:
        with self.lock:
            if count_locally:
                now = time.monotonic()
                for credential in sock.credentials:
                    mark = self.marks.get(credential)
                    if mark is not None and mark[1] > now:
                        raise SocketRevoked(revocation_message(mark[0]), code=mark[0])
                for credential, cap in sock.caps:
                    if cap and len(self.sockets.get(credential, ())) >= cap:
                        raise _too_many(credential, cap)
            for credential in sock.credentials:
                self.sockets.setdefault(credential, set()).add(sock)

    def remove(self, sock: OpenSocket) -> None:
        with self.lock:
            for credential in sock.credentials:
                held = self.sockets.get(credential)
                if held is not None:
                    held.discard(sock)
                    if not held:
                        del self.sockets[credential]

    def revoke(self, credentials: Iterable[Credential], code: str, *, remember: bool) -> list[OpenSocket]:
        """Flag the sockets that stand on `credentials`; the ones not flagged before."""
        hit: list[OpenSocket] = []
        with self.lock:
            if remember:
                now = time.monotonic()
                for credential, (_, expiry) in list(self.marks.items()):
                    if expiry > now:
                        break  # in insertion order, so the rest expire later
                    del self.marks[credential]
            for credential in credentials:
                if remember:
                    self.marks.pop(credential, None)
                    self.marks[credential] = (code, time.monotonic() + REVOCATION_MARK_TTL_S)
                for sock in self.sockets.get(credential, ()):
                    if sock.revoked is None:
                        sock.revoked = code
                        hit.append(sock)
        return hit

    def forget(self, credentials: Iterable[Credential]) -> None:
        with self.lock:
            for credential in credentials:
                self.marks.pop(credential, None)

    def on_loop(self, loop: asyncio.AbstractEventLoop) -> list[OpenSocket]:
        with self.lock:
            return list({sock for held in self.sockets.values() for sock in held if sock.loop is loop})


_registry = _Registry()
_ending: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps only weak ones)


def _too_many(credential: Credential, cap: int) -> TooManySockets:
    what = "API key" if credential[0] == KEY else "account"
    return TooManySockets(f"This {what} already has {cap} open sockets, the most allowed. Close one first.")


def _end(sock: OpenSocket) -> None:
    """On the socket's loop: run its on_revoked once."""
    if sock.closed or sock.revoked is None:
        return
    task = asyncio.ensure_future(sock.on_revoked(sock.revoked))
    _ending.add(task)
    task.add_done_callback(_ended)


def _ended(task: asyncio.Task[None]) -> None:
    _ending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("ending a revoked socket failed", exc_info=task.exception())


def _end_all(socks: Iterable[OpenSocket]) -> None:
    for sock in socks:
        with contextlib.suppress(RuntimeError):  # its loop has closed: so has the socket
            sock.loop.call_soon_threadsafe(_end, sock)


# --- revoking (sync: services, signals, management commands) ------------------------------
def credentials_revoke(*, credentials: Iterable[Credential], code: str) -> None:
    """End the open sockets standing on `credentials`, in every process, once the transaction commits."""
    revoked = list(credentials)
    if revoked:
        transaction.on_commit(lambda: _publish(revoked, code), robust=True)


def credentials_restore(*, credentials: Iterable[Credential]) -> None:
    """Forget the marks of `credentials` (a user re-activated) so that new sockets may stand on them."""
    restored = list(credentials)
    if restored:
        transaction.on_commit(lambda: _unmark(restored), robust=True)


_PUBLISH = """
for i = 1, #KEYS - 1 do
    redis.call('SET', KEYS[i], ARGV[1], 'EX', ARGV[2])
end
redis.call('XADD', KEYS[#KEYS], 'MAXLEN', '~', ARGV[3], '*', 'code', ARGV[1], 'credentials', ARGV[4])
redis.call('EXPIRE', KEYS[#KEYS], ARGV[2])
"""

_sync_clients: dict[str, redis.Redis] = {}
_sync_lock = threading.Lock()


def _sync_client() -> redis.Redis:
    url = settings.REDIS_URL
    with _sync_lock:
        client = _sync_clients.get(url)
        if client is None:
            client = _sync_clients[url] = redis.Redis.from_url(
                url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
                retry=Retry(NoBackoff(), 1),  # a connection Redis dropped (a restart): once more on a new one
            )
        return client


def _publish(credentials: list[Credential], code: str) -> None:
    # This process's sockets first: they need no Redis.
    _end_all(_registry.revoke(credentials, code, remember=not settings.REDIS_URL))
    if not settings.REDIS_URL:
        return
    keys = [*(_mark_key(c) for c in credentials), _stream_key()]
    names = " ".join(_name(c) for c in credentials)
    try:
        _sync_client().eval(_PUBLISH, len(keys), *keys, code, REVOCATION_MARK_TTL_S, STREAM_MAX_ENTRIES, names)
    except (RedisError, OSError) as exc:
        # The database change stands; sockets of other processes learn it only from a later notice.
        logger.error("could not publish the revocation of %s to Redis (%s)", names, type(exc).__name__)


def _unmark(credentials: list[Credential]) -> None:
    if not settings.REDIS_URL:
        _registry.forget(credentials)
        return
    try:
        _sync_client().delete(*(_mark_key(c) for c in credentials))
    except (RedisError, OSError) as exc:
        names = " ".join(_name(c) for c in credentials)
        logger.error("could not clear the revocation marks of %s (%s)", names, type(exc).__name__)


# --- sockets (async: the consumer) ------------------------------------------------------
Command = tuple[Any, ...]


@dataclass
class _LoopRedis:
    """One event loop's Redis: a pool for batched commands, and the watcher task."""

    url: str
    client: redis.asyncio.Redis
    batcher: Batcher[Command, Any]
    watcher: asyncio.Task[None] | None = field(default=None)


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopRedis] = weakref.WeakKeyDictionary()


def _loop_redis() -> _LoopRedis:
    loop = asyncio.get_running_loop()
    state = _loops.get(loop)
    if state is None or state.url != settings.REDIS_URL:
        client = redis.asyncio.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=None,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            max_connections=20,
            decode_responses=True,
            retry=AsyncRetry(NoBackoff(), 1),  # a connection Redis dropped (a restart): once more on a new one
        )

        async def send(batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                async with client.pipeline(transaction=False) as pipe:
                    for command, _ in batch:
                        pipe.execute_command(*command)
                    results = await pipe.execute(raise_on_error=False)
            settle_each(batch, results)

        state = _loops[loop] = _LoopRedis(url=settings.REDIS_URL, client=client, batcher=Batcher(send))
    return state


async def _redis(command: Command) -> Any:
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            return await _loop_redis().batcher.submit(command)
    except (RedisError, OSError, TimeoutError):
        raise _RedisUnavailable from None


# KEYS: the socket's marks (ARGV[1] of them), the sets it is counted in, the stream.
# ARGV: marks, socket id, lease (s), then each set's cap. Returns {'revoked', code},
# {'full', set's index} or {'ok', the stream's last id}.
_OPEN = """
local marks = tonumber(ARGV[1])
for i = 1, marks do
    local code = redis.call('GET', KEYS[i])
    if code then return {'revoked', code} end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[3])
for i = marks + 1, #KEYS - 1 do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    local cap = tonumber(ARGV[3 + i - marks])
    if cap > 0 and redis.call('ZCARD', KEYS[i]) >= cap then return {'full', tostring(i - marks)} end
end
for i = marks + 1, #KEYS - 1 do
    redis.call('ZADD', KEYS[i], now + lease, ARGV[2])
    redis.call('EXPIRE', KEYS[i], lease)
end
local last = redis.call('XREVRANGE', KEYS[#KEYS], '+', '-', 'COUNT', 1)
if #last > 0 then return {'ok', last[1][1]} end
return {'ok', '0-0'}
"""

# KEYS: sets; ARGV: lease (s), then the socket id held in each set.
_RENEW = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
    redis.call('ZADD', key, 'XX', until_, ARGV[i + 1])
    redis.call('EXPIRE', key, ARGV[1])
end
"""


async def socket_open(
    *,
    user_id: int,
    api_key_prefix: str | None,
    session_key: str | None,
    on_revoked: Callable[[str], Awaitable[None]],
) -> OpenSocket:
    """Register a socket that passed its handshake; SocketRevoked or TooManySockets if it may not stay."""
    sock = OpenSocket(user_id=user_id, api_key_prefix=api_key_prefix, session_key=session_key, on_revoked=on_revoked)
    if not settings.REDIS_URL:
        _registry.add(sock, count_locally=True)
        return sock
    # Registered before Redis is asked: a notice published from now on finds it.
    _registry.add(sock, count_locally=False)
    counted = [(c, cap) for c, cap in sock.caps if cap > 0]
    marks = [_mark_key(c) for c in sock.credentials]
    sets = [_open_key(c) for c, _ in counted]
    keys = [*marks, *sets, _stream_key()]
    try:
        outcome, value = await _redis(
            ("EVAL", _OPEN, len(keys), *keys, len(marks), sock.id, SOCKET_LEASE_S, *(cap for _, cap in counted))
        )
    except _RedisUnavailable:
        # Redis is down: so is chat (its rate limits answer rate_limit_unavailable), so the socket
        # stays open to say so; uncounted, and watched from whenever Redis answers again.
        logger.warning("a socket opened while Redis did not answer: not counted under the caps")
        _ensure_watcher(start_id="$")
        return sock
    except BaseException:
        _registry.remove(sock)
        raise
    if outcome == "revoked":
        _registry.remove(sock)
        raise SocketRevoked(revocation_message(value), code=value)
    if outcome == "full":
        _registry.remove(sock)
        raise _too_many(*counted[int(value) - 1])
    sock.counted = sets
    _ensure_watcher(start_id=value)
    return sock


async def socket_check(sock: OpenSocket, *, ask_redis: bool) -> None:
    """SocketRevoked if the socket's credential is gone, as this process knows or (`ask_redis`) Redis marks."""
    if sock.revoked is None and ask_redis and settings.REDIS_URL:
        try:
            codes = await _redis(("MGET", *(_mark_key(c) for c in sock.credentials)))
        except _RedisUnavailable:
            # Nobody can have left a mark while Redis is down, and what the frame asks for needs
            # Redis too (a message's rate limit refuses it with rate_limit_unavailable).
            codes = []
        sock.revoked = next((code for code in codes if code), None)
    if sock.revoked is not None:
        raise SocketRevoked(revocation_message(sock.revoked), code=sock.revoked)


async def socket_close(sock: OpenSocket) -> None:
    """Forget a socket that has closed and free its places under the caps."""
    if sock.closed:
        return
    sock.closed = True
    _registry.remove(sock)
    if sock.counted:
        with contextlib.suppress(_RedisUnavailable):  # else its lease runs out instead
            await asyncio.gather(*(_redis(("ZREM", key, sock.id)) for key in sock.counted))


async def revocation_watcher_stop() -> None:
    """Stop this event loop's watcher (shutdown, tests); the next socket opened starts it again."""
    state = _loops.get(asyncio.get_running_loop())
    if state is None or state.watcher is None:
        return
    task, state.watcher = state.watcher, None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _ensure_watcher(*, start_id: str) -> None:
    state = _loop_redis()
    if state.watcher is None or state.watcher.done():
        state.watcher = asyncio.ensure_future(_watch(state, start_id))


_XReadReply = list[tuple[str, list[tuple[str, dict[str, str]]]]]  # RESP2, decoded


async def _watch(state: _LoopRedis, last_id: str) -> None:
    """Read revocation notices (and renew this loop's leases) while the loop has sockets open."""
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    # Its own connection: a blocking XREAD holds one for as long as it waits.
    # RESP2 spelled out: it fixes the shape of XREAD's reply, [[stream, [(id, fields)...]]].
    client = redis.asyncio.Redis.from_url(
        state.url, socket_timeout=None, socket_connect_timeout=REDIS_TIMEOUT_S, decode_responses=True, protocol=2
    )
    next_renewal = loop.time() + LEASE_RENEWAL_S
    failing = False
    try:
        while True:
            try:
                if last_id == "$":  # opened while Redis was down: from the stream's end once it answers
                    newest = cast(list[tuple[str, Any]], await client.xrevrange(_stream_key(), count=1))
                    last_id = newest[0][0] if newest else "0-0"
                wait_ms = max(1, int((next_renewal - loop.time()) * 1000))
                replies = cast(_XReadReply, await client.xread({_stream_key(): last_id}, count=256, block=wait_ms))
                for _, entries in replies or ():
                    for entry_id, fields in entries:
                        last_id = entry_id
                        _apply(fields)
                if loop.time() >= next_renewal:
                    socks = _registry.on_loop(loop)
                    if not socks:
                        state.watcher = None  # before any await: the next socket starts a new one
                        return
                    await _renew(client, socks)
                    next_renewal = loop.time() + LEASE_RENEWAL_S
                failing = False
            except (RedisError, OSError) as exc:
                if not failing:
                    logger.warning("revocation watcher: Redis did not answer (%s); retrying", type(exc).__name__)
                failing = True
                await asyncio.sleep(1)  # a pause between reconnections, not an ordering
    finally:
        if state.watcher is me:
            state.watcher = None
        await client.aclose()


def _apply(fields: dict[str, str]) -> None:
    code = fields.get("code") or REVOKED_API_KEY
    credentials = [c for c in map(_parse, fields.get("credentials", "").split()) if c is not None]
    # Notices also reach the process that published them: its sockets are flagged already.
    _end_all(_registry.revoke(credentials, code, remember=False))


async def _renew(client: redis.asyncio.Redis, socks: list[OpenSocket]) -> None:
    held = [(key, sock.id) for sock in socks if not sock.closed for key in sock.counted]
    for start in range(0, len(held), 500):
        chunk = held[start : start + 500]
        await client.eval(_RENEW, len(chunk), *(key for key, _ in chunk), SOCKET_LEASE_S, *(sid for _, sid in chunk))


# --- signals (connected by AccountsConfig.ready) ----------------------------------------------
def _on_logged_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    session_key = getattr(session, "session_key", None)
    if session_key:
        credentials_revoke(credentials=[session_credential(session_key)], code=LOGGED_OUT)


def _on_user_saved(sender: Any, instance: Any, created: bool = False, update_fields: Any = None, **kwargs: Any) -> None:
    if update_fields is not None and "is_active" not in update_fields:
        return  # e.g. last_login at each login
    if instance.is_active:
        credentials_restore(credentials=[user_credential(instance.pk)])
    else:
        credentials_revoke(credentials=[user_credential(instance.pk)], code=USER_INACTIVE)


def _on_user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    credentials_revoke(credentials=[user_credential(instance.pk)], code=USER_INACTIVE)


def _on_key_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    credentials_revoke(credentials=[key_credential(instance.prefix)], code=REVOKED_API_KEY)


def connect_signals() -> None:
    """Logging out, deactivating or deleting a user, and deleting a key end their sockets."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.signals import user_logged_out
    from django.db.models.signals import post_delete, post_save

    from accounts.models import ApiKey

    user_model = get_user_model()
    user_logged_out.connect(_on_logged_out, dispatch_uid="accounts.revocation.logged_out")
    post_save.connect(_on_user_saved, sender=user_model, dispatch_uid="accounts.revocation.user_saved")
    post_delete.connect(_on_user_deleted, sender=user_model, dispatch_uid="accounts.revocation.user_deleted")
    post_delete.connect(_on_key_deleted, sender=ApiKey, dispatch_uid="accounts.revocation.key_deleted")
