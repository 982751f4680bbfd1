"""Replies that survive a dropped connection: numbered frames, a replay buffer, resume, grace.

**Numbers.** Every frame of a reply (`start`, `token`..., then `end` or `error`) carries `n`:
1, 2, 3 ... in the order the reply's client gets them (on SSE `n` is also the event's `id:`).
`numbered(generation)` wraps `ChatGeneration.frames()` for the edges (chat/consumers.py,
chat/sse.py): it numbers each frame and appends it to the reply's pending list, off the token
path: a frame is sent to the client at once, and one flusher per process writes every reply's
pending frames every REPLAY_FLUSH_MS, all in one Redis pipeline. A failure after the
start (the reply's write, a bug) becomes a numbered `internal_error` frame here, so that the
buffer ends as the client's stream does; a reply stopped by its client (cancel, disconnect, a
grace that ran out) gets a numbered `end` with `done_reason: cancelled` in the buffer.

**Buffer.** With REDIS_URL: one Redis stream per reply, `<CHANNEL_LAYER_PREFIX>:reply:<request_id>`,
one entry per flush (its frames as a JSON array, id `0-<its last n>`: a read "after n" is XREAD
from `0-<n>`, less the frames up to n), trimmed by id to the entries holding the last
REPLAY_MAX_FRAMES frames, and `…:owner` (the user id); both expire REPLAY_TTL_S after the reply's
last frame. A client may ask before its reply's first write: a resume that does not find its
reply looks again for up to half a second before `not_found`. Any web process reads it: a
client may resume on another process than the one that generates. Without Redis (the embedded
default, one process): the same in process memory.

**Resume** (`follow`): the reply's owner (the same user, by any of her keys or her session) asks
for the frames after `after`; she gets those kept, then the rest as they come, then `end` (or
`error`), each once, in order. Someone else's reply, one that never was and one whose frames
expired all answer `not_found` (404): a request id tells nothing about whose it is. Frames that
were trimmed away answer `resume_unavailable` (410) instead of a reply with a hole; an `after`
past the reply's last frame answers `invalid_resume` (422). A follower renews a lease on the
reply (`…:watch`) while it reads; `cancel` from a follower leaves a mark (`…:cancel`).

**Grace.** When a reply's client goes away after its `start` (`detach`), the generation goes on
without it for REPLAY_GRACE_S, so that a quick reconnect loses nothing: a watchdog looks at the
reply's lease and cancel mark (every second at most) and stops the generation once nobody has
followed it for the grace, or at once when a follower cancels it. Stopped, it is kept as
partial, as a cancelled reply always was. Spoken replies' `audio` frames and their binary audio
are not numbered and not kept: a resumed reply is its text; and a spoken reply stops with its
socket, as before (the speech sends to the socket itself), its text kept for a resume. A detached
reply stays registered with the graceful restart's drain (chat/drain.py): on SIGTERM it may
finish until DRAIN_TIMEOUT_S and is stopped after, stored as partial with its metric row
(`server_restarting`), as a reply whose client is there; its last frames are written at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import orjson
import redis.asyncio
from django.conf import settings
from redis.exceptions import RedisError

from accounts.errors import EvaError, InvalidInput, NotFound
from chat import drain
from chat.generation import ChatGeneration

logger = logging.getLogger("chat.replay")

Frame = dict[str, Any]
Command = tuple[str | bytes, ...]
Write = tuple[str, int, list[tuple[int, bytes]], bool]  # request_id, owner_id, (n, frame JSON)..., refresh
_XReadReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]
FINAL_TYPES = ("end", "error")
REDIS_TIMEOUT_S = 5.0
FOLLOW_POLL_S = 1.0  # a follower's longest blocking read; its lease is renewed between reads
MAX_REQUEST_ID_CHARS = 64
IN_FLIGHT_FRAMES = 256  # frames a live reply's client may have that its buffer has not yet
_REDIS_FAILURES = (RedisError, OSError, TimeoutError)


class ResumeUnavailable(EvaError):
    """The frames after the client's `after` are no longer kept (trimmed), or the buffer is unreachable."""

    code = "resume_unavailable"
    status = 410


class ResumeInterrupted(EvaError):
    """The reply being followed stopped growing without an end (its process went away)."""

    code = "resume_interrupted"
    status = 504


@dataclass(frozen=True)
class Snapshot:
    """What a resume checks first: whose the reply is, and which frames are kept."""

    owner_id: int
    first_n: int
    last_n: int
    finished: bool


class ReplayStore(Protocol):
    """Where replies' frames are kept (Redis, or this process's memory)."""

    async def append_many(self, writes: list[Write]) -> list[Exception | None]:
        """Keep each write's frames (with `refresh`, (re)set its owner and TTL too): each its own error."""
        ...

    async def snapshot(self, request_id: str) -> Snapshot | None: ...

    async def read(self, request_id: str, after: int, *, block_s: float) -> list[tuple[int, Frame]]: ...

    async def watch(self, request_id: str, lease_s: float) -> None: ...

    async def request_cancel(self, request_id: str) -> None: ...

    async def state(self, request_id: str) -> tuple[bool, bool]:
        """(followed now, cancel asked)."""
        ...


def _ms(seconds: float) -> str:
    return str(max(1, int(seconds * 1000)))


# --- Redis ---------------------------------------------------------------------------------
@dataclass
class _LoopRedis:
    url: str
    client: redis.asyncio.Redis


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopRedis] = weakref.WeakKeyDictionary()


def _loop_redis() -> _LoopRedis:
    loop = asyncio.get_running_loop()
    state = _loops.get(loop)
    if state is None or state.url != settings.REDIS_URL:
        client = redis.asyncio.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=None,  # followers block in XREAD; each call has its own deadline
            socket_connect_timeout=REDIS_TIMEOUT_S,
            max_connections=200,
        )
        state = _loops[loop] = _LoopRedis(url=settings.REDIS_URL, client=client)
    return state


class RedisStore:
    """Replies' frames in Redis streams (see the module's docstring)."""

    def _key(self, request_id: str) -> str:
        return f"{settings.CHANNEL_LAYER_PREFIX}:reply:{request_id}"

    async def append_many(self, writes: list[Write]) -> list[Exception | None]:
        ttl, keep = _ms(settings.REPLAY_TTL_S), settings.REPLAY_MAX_FRAMES
        counts: list[int] = []
        async with asyncio.timeout(REDIS_TIMEOUT_S), _loop_redis().client.pipeline(transaction=False) as pipe:
            for request_id, owner_id, frames, refresh in writes:
                key = self._key(request_id)
                # One entry per reply per flush, named after its last frame (so "after n" is an
                # XREAD from 0-n, with the entry holding n itself filtered on reading), and
                # trimmed by id: the entries holding the last REPLAY_MAX_FRAMES frames stay.
                last = frames[-1][0]
                batch = b"[" + b",".join(data for _, data in frames) + b"]"
                pipe.execute_command("XADD", key, "MINID", f"0-{max(1, last - keep + 1)}", f"0-{last}", "f", batch)
                if refresh:  # not with every token: one command per frame is what a token costs
                    pipe.execute_command("SET", f"{key}:owner", str(owner_id), "PX", ttl)
                    pipe.execute_command("PEXPIRE", key, ttl)
                counts.append(1 + (2 if refresh else 0))
            results = await pipe.execute(raise_on_error=False)
        errors: list[Exception | None] = []
        start = 0
        for count in counts:
            mine = results[start : start + count]
            start += count
            errors.append(next((result for result in mine if isinstance(result, Exception)), None))
        return errors

    async def snapshot(self, request_id: str) -> Snapshot | None:
        key = self._key(request_id)
        async with asyncio.timeout(REDIS_TIMEOUT_S), _loop_redis().client.pipeline(transaction=False) as pipe:
            pipe.get(f"{key}:owner")
            pipe.xrange(key, count=1)
            pipe.xrevrange(key, count=1)
            owner, first, last = await pipe.execute()
        if owner is None or not first or not last:
            return None
        first_frame, last_frame = orjson.loads(first[0][1][b"f"])[0], orjson.loads(last[0][1][b"f"])[-1]
        return Snapshot(
            owner_id=int(owner),
            first_n=int(first_frame["n"]),
            last_n=int(last_frame["n"]),
            finished=last_frame.get("type") in FINAL_TYPES,
        )

    async def read(self, request_id: str, after: int, *, block_s: float) -> list[tuple[int, Frame]]:
        key = self._key(request_id)
        client = _loop_redis().client
        async with asyncio.timeout(block_s + REDIS_TIMEOUT_S):
            replies = cast(
                _XReadReply,
                await client.xread(
                    {key: f"0-{after}"}, count=settings.REPLAY_MAX_FRAMES, block=int(block_s * 1000) or None
                ),
            )
        entries = replies[0][1] if replies else []
        frames = [frame for _, fields in entries for frame in orjson.loads(fields[b"f"])]
        return [(int(frame["n"]), frame) for frame in frames if int(frame["n"]) > after]

    async def watch(self, request_id: str, lease_s: float) -> None:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            await _loop_redis().client.set(f"{self._key(request_id)}:watch", b"1", px=int(_ms(lease_s)))

    async def request_cancel(self, request_id: str) -> None:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            await _loop_redis().client.set(f"{self._key(request_id)}:cancel", b"1", px=int(_ms(settings.REPLAY_TTL_S)))

    async def state(self, request_id: str) -> tuple[bool, bool]:
        key = self._key(request_id)
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            watched, cancel = await _loop_redis().client.mget([f"{key}:watch", f"{key}:cancel"])
        return watched is not None, cancel is not None


# --- memory --------------------------------------------------------------------------------
@dataclass
class _KeptReply:
    owner_id: int
    frames: deque[tuple[int, bytes]]
    expires: float
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    watched_until: float = 0.0
    cancel: bool = False


class MemoryStore:
    """The same in this process's memory, for the embedded default (one process, no Redis)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.replies: dict[str, _KeptReply] = {}

    def _get(self, request_id: str) -> _KeptReply | None:
        reply = self.replies.get(request_id)
        if reply is not None and reply.expires <= self.clock():
            del self.replies[request_id]
            return None
        return reply

    def sweep(self) -> None:
        """Forget every expired reply (each new reply does it: memory stays bounded by the TTL)."""
        now = self.clock()
        for request_id in [rid for rid, reply in self.replies.items() if reply.expires <= now]:
            del self.replies[request_id]

    async def append_many(self, writes: list[Write]) -> list[Exception | None]:
        for request_id, owner_id, frames, _ in writes:
            self.append(request_id, owner_id, frames)
        return [None] * len(writes)

    def append(self, request_id: str, owner_id: int, frames: list[tuple[int, bytes]]) -> None:
        reply = self._get(request_id)
        if reply is None:
            self.sweep()
            reply = self.replies[request_id] = _KeptReply(
                owner_id=owner_id, frames=deque(maxlen=settings.REPLAY_MAX_FRAMES), expires=0.0
            )
        reply.frames.extend(frames)
        reply.expires = self.clock() + settings.REPLAY_TTL_S
        changed, reply.changed = reply.changed, asyncio.Event()
        changed.set()

    async def snapshot(self, request_id: str) -> Snapshot | None:
        reply = self._get(request_id)
        if reply is None or not reply.frames:
            return None
        last = orjson.loads(reply.frames[-1][1])
        return Snapshot(
            owner_id=reply.owner_id,
            first_n=reply.frames[0][0],
            last_n=reply.frames[-1][0],
            finished=last.get("type") in FINAL_TYPES,
        )

    async def read(self, request_id: str, after: int, *, block_s: float) -> list[tuple[int, Frame]]:
        reply = self._get(request_id)
        if reply is None:
            return []
        kept = [(n, data) for n, data in reply.frames if n > after]
        if not kept and block_s > 0:
            try:
                async with asyncio.timeout(block_s):
                    await reply.changed.wait()
            except TimeoutError:
                return []
            kept = [(n, data) for n, data in reply.frames if n > after]
        return [(n, orjson.loads(data)) for n, data in kept]

    async def watch(self, request_id: str, lease_s: float) -> None:
        reply = self._get(request_id)
        if reply is not None:
            reply.watched_until = self.clock() + lease_s

    async def request_cancel(self, request_id: str) -> None:
        reply = self._get(request_id)
        if reply is not None:
            reply.cancel = True

    async def state(self, request_id: str) -> tuple[bool, bool]:
        reply = self._get(request_id)
        if reply is None:
            return False, False
        return reply.watched_until > self.clock(), reply.cancel


_memory = MemoryStore()
_redis_store = RedisStore()


def replay_store() -> ReplayStore:
    """Redis when REDIS_URL is set, else this process's memory."""
    return _redis_store if settings.REDIS_URL else _memory


# --- numbering and writing -----------------------------------------------------------------
_tasks: set[asyncio.Future[Any]] = set()  # writers and detached replies, held until they end


def _keep(task: asyncio.Future[Any]) -> None:
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


class _Record:
    """One reply's numbering, and the frames it has not yet written."""

    def __init__(self, generation: ChatGeneration, store: ReplayStore) -> None:
        self.generation = generation
        self.request_id = generation.request_id
        self.owner_id = generation.request.user_id
        self.store = store
        self.n = 0
        self.final: Frame | None = None
        self.pending: list[tuple[int, bytes]] = []
        self.in_flight = 0  # writes of it that are out
        self.broken = False
        self.refreshed_at: float | None = None  # when the owner and TTL were last set (loop time)

    def add(self, frame: Frame) -> Frame:
        self.n += 1
        frame["n"] = self.n
        final = frame["type"] in FINAL_TYPES
        if final:
            self.final = frame
        if not self.broken:
            self.pending.append((self.n, orjson.dumps(frame)))
            _flusher().mark(self)
        return frame

    def take(self, now: float) -> Write:
        """The write of what is pending. The owner and the TTL are set with the first write, the
        last one (the reply's frames then live REPLAY_TTL_S after it), and every quarter TTL."""
        frames, self.pending = self.pending, []
        refresh = (
            self.refreshed_at is None
            or self.final is not None
            or now - self.refreshed_at >= settings.REPLAY_TTL_S / 4
        )
        if refresh:
            self.refreshed_at = now
        self.in_flight += 1
        return (self.request_id, self.owner_id, frames, refresh)

    def wrote(self, error: Exception | None) -> None:
        self.in_flight -= 1
        if error is not None and not self.broken:
            # The reply goes on; it just cannot be resumed (a resume sees a hole or no end).
            self.broken = True
            self.pending = []
            logger.warning("reply %s: its frames cannot be kept (%s)", self.request_id, error)


class _Flusher:
    """One event loop's replies with frames to write: written together every REPLAY_FLUSH_MS, in one
    pipeline, one stream entry per reply. A token costs its reply a list append; the process pays
    one Redis round trip per interval, however many replies."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.dirty: dict[_Record, None] = {}  # insertion-ordered set
        self.timer: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[None] | None = None

    def mark(self, record: _Record) -> None:
        self.dirty[record] = None
        if self.task is None and self.timer is None:
            self.timer = self.loop.call_later(settings.REPLAY_FLUSH_MS / 1000, self.start)

    def start(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is None and self.dirty:
            self.task = asyncio.ensure_future(self._flush())
            _keep(self.task)

    async def _flush(self) -> None:
        try:
            if self.dirty:
                records, now = list(self.dirty), self.loop.time()
                self.dirty.clear()
                groups: dict[int, tuple[ReplayStore, list[_Record], list[Write]]] = {}
                for record in records:
                    if record.pending and not record.broken:
                        group = groups.setdefault(id(record.store), (record.store, [], []))
                        group[1].append(record)
                        group[2].append(record.take(now))
                for store, owners, writes in groups.values():
                    try:
                        errors = await store.append_many(writes)
                    except _REDIS_FAILURES as exc:
                        errors = [exc] * len(writes)
                    for record, error in zip(owners, errors, strict=True):
                        record.wrote(error)
        finally:
            self.task = None
            if self.dirty:  # what came while this flush was out: the next interval
                self.timer = self.loop.call_later(settings.REPLAY_FLUSH_MS / 1000, self.start)


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Flusher] = weakref.WeakKeyDictionary()


def _flusher() -> _Flusher:
    loop = asyncio.get_running_loop()
    flusher = _flushers.get(loop)
    if flusher is None:
        flusher = _flushers[loop] = _Flusher(loop)
    return flusher


_records: dict[asyncio.Task[Any], _Record] = {}  # the task streaming each reply that has started
_by_generation: weakref.WeakKeyDictionary[ChatGeneration, _Record] = weakref.WeakKeyDictionary()


async def numbered(generation: ChatGeneration) -> AsyncGenerator[Frame, None]:
    """`generation.frames()`, each numbered and kept for resumes (see the module's docstring).

    Failures before the start (rate limit, no backend) pass through unchanged, as EvaError.
    """
    record = _Record(generation, replay_store())
    _by_generation[generation] = record
    task = asyncio.current_task()
    inner = generation.frames()
    try:
        try:
            async for frame in inner:
                if record.n == 0 and task is not None:
                    _records[task] = record
                yield record.add(frame)
        except Exception:
            if record.n == 0:
                raise
            logger.exception("chat reply %s failed", generation.request_id)
            error = {
                "type": "error",
                "code": "internal_error",
                "message": "Something went wrong on our side.",
                "request_id": generation.request_id,
            }
            yield record.add(error)
    finally:
        if task is not None:
            _records.pop(task, None)
        await inner.aclose()
        if record.n and record.final is None:  # stopped by its client, or its grace ran out
            record.add(generation.end_frame("cancelled"))


def cancelled_end(generation: ChatGeneration) -> Frame:
    """The `end` frame of a reply its client cancelled: the numbered one kept for resumes."""
    record = _by_generation.get(generation)
    if record is not None and record.final is not None and record.final["type"] == "end":
        return record.final
    return generation.end_frame("cancelled")


async def drain_writes() -> None:
    """Wait for every buffered frame to be written, and detached replies to end (tests, shutdown)."""
    flusher, loop = _flusher(), asyncio.get_running_loop()
    while True:
        flusher.start()
        mine = [task for task in _tasks if task.get_loop() is loop]
        if not mine and not flusher.dirty:
            return
        await asyncio.gather(*mine, return_exceptions=True)


# --- grace -----------------------------------------------------------------------------------
def detach(task: asyncio.Task[Any] | None) -> bool:
    """The client of the reply `task` streams went away. True: the reply goes on without it for
    REPLAY_GRACE_S (see the module's docstring), the edge must only stop sending; False: the
    edge stops it as before (no reply started, finished already, or no grace configured)."""
    if task is None or task.done():
        return False
    record = _records.get(task)
    grace = float(settings.REPLAY_GRACE_S)
    if record is None or record.final is not None or grace <= 0:
        return False
    if record.generation.speech is not None:
        # A spoken reply sends its audio to its socket itself: it stops with the socket, as before
        # (its text so far is kept for a resume, ending `cancelled`).
        return False
    _keep(task)
    _keep(asyncio.ensure_future(_watchdog(task, record, grace)))
    detached = _Detached(task, record)
    drain.stream_opened(detached)  # its edge has left the drain's registry: the reply stays in it
    task.add_done_callback(lambda _: drain.stream_closed(detached))
    return True


class _Detached:
    """A detached reply as chat.drain sees it: on a restart it may finish until the drain's
    deadline, and is stopped after (kept as partial, its metric row `server_restarting`), as a
    reply whose client is still there; then its last frames are written to the buffer, so that a
    client following it from another process gets its end."""

    def __init__(self, task: asyncio.Task[Any], record: _Record) -> None:
        self.task = task
        self.record = record

    async def drain(self, deadline: float) -> None:
        await drain.finish_or_stop(self.task, self.record.generation, deadline)
        flusher = _flusher()
        while self.record.pending or self.record.in_flight:  # now, not at the next interval: the process stops
            flusher.start()
            if flusher.task is None:
                break
            await asyncio.wait([flusher.task])


async def _watchdog(task: asyncio.Task[Any], record: _Record, grace: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    poll = min(FOLLOW_POLL_S, grace)
    while not task.done():
        await asyncio.wait([task], timeout=poll)
        if task.done():
            return
        try:
            followed, cancel = await record.store.state(record.request_id)
        except _REDIS_FAILURES:
            followed, cancel = False, False
        if cancel:
            break
        if followed:
            deadline = loop.time() + grace
        elif loop.time() >= deadline:
            logger.info("reply %s: nobody resumed it within %s s; stopped", record.request_id, grace)
            break
    task.cancel()


# --- resume --------------------------------------------------------------------------------
def _lease_s() -> float:
    return max(2 * FOLLOW_POLL_S, float(settings.REPLAY_GRACE_S))


def _idle_limit_s() -> float:
    # The longest a live reply may go without a frame: the model's silence, then speech's end.
    return float(settings.LLM_TOKEN_IDLE_TIMEOUT_S) + float(getattr(settings, "TTS_TIMEOUT_S", 30)) + 5.0


def _after_validate(after: object) -> int:
    if isinstance(after, str) and after.strip().isdigit():
        after = int(after.strip())
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise InvalidInput("after must be the number of the last frame received (0 or more).", code="invalid_resume")
    return after


def _request_id_validate(request_id: object) -> str:
    if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidInput("request_id must be the request_id of a reply's start frame.", code="invalid_resume")
    if not all(c.isalnum() or c == "-" for c in request_id):
        raise NotFound(f"No reply {request_id!r} to resume.")
    return request_id


class Follower:
    """A resumed reply: the frames after `after`, then the rest live, then its end."""

    def __init__(self, store: ReplayStore, request_id: str, after: int) -> None:
        self.store = store
        self.request_id = request_id
        self.after = after

    async def frames(self) -> AsyncGenerator[Frame, None]:
        """Frames in order, each once, up to and including the end (`end` or `error`).

        ResumeUnavailable if frames went missing meanwhile, ResumeInterrupted if the reply
        stopped growing without an end."""
        loop = asyncio.get_running_loop()
        last = self.after
        lease_s = _lease_s()
        renewed = idle_since = loop.time()
        while True:
            try:
                batch = await self.store.read(self.request_id, last, block_s=FOLLOW_POLL_S)
            except _REDIS_FAILURES:
                raise ResumeUnavailable("The reply's frames cannot be read right now.", status=503) from None
            for n, frame in batch:
                if n != last + 1:
                    raise ResumeUnavailable(f"Frames {last + 1} to {n - 1} of this reply are no longer kept.")
                last = n
                yield frame
                if frame.get("type") in FINAL_TYPES:
                    return
            now = loop.time()
            if batch:
                idle_since = now
            elif now - idle_since > _idle_limit_s():
                raise ResumeInterrupted("The reply stopped without an end; its server may have gone away.")
            if now - renewed >= FOLLOW_POLL_S:
                renewed = now
                with contextlib.suppress(*_REDIS_FAILURES):  # the next read says whether Redis is gone
                    await self.store.watch(self.request_id, lease_s)

    async def cancel(self) -> None:
        """Ask the process generating the reply to stop it; its `end` (cancelled) still comes."""
        try:
            await self.store.request_cancel(self.request_id)
        except _REDIS_FAILURES:
            raise ResumeUnavailable("The reply cannot be reached right now.", status=503) from None

    async def relay(self, send_json: Callable[[Frame], Awaitable[None]]) -> None:
        """Send every frame with `send_json`; a failure is one `error` frame (the socket's way)."""
        try:
            async for frame in self.frames():
                await send_json(frame)
        except EvaError as exc:
            await send_json({"type": "error", "code": exc.code, "message": exc.message, "request_id": self.request_id})


async def follow(*, request_id: object, owner_id: int, after: object) -> Follower:
    """Resume the reply `request_id` for user `owner_id` after frame `after` (see the module's docstring).

    Raises before anything is sent: InvalidInput (`invalid_resume`, 422), NotFound (404),
    ResumeUnavailable (410; 503 when the buffer cannot be reached)."""
    after = _after_validate(after)
    request_id = _request_id_validate(request_id)
    store = replay_store()
    loop = asyncio.get_running_loop()
    # A reply's frames reach the buffer a flush after its client got them: a client that resumes
    # at once may ask before its reply's start is there. Not found is answered after a while,
    # however the id misses (unknown, or someone else's: the same wait, so it tells nothing).
    give_up = loop.time() + max(0.5, 20 * settings.REPLAY_FLUSH_MS / 1000)
    try:
        while True:
            snapshot = await store.snapshot(request_id)
            if snapshot is not None and snapshot.owner_id == owner_id:
                await store.watch(request_id, _lease_s())  # before the first read: the grace cannot end meanwhile
                break
            if loop.time() >= give_up:
                break
            await asyncio.sleep(settings.REPLAY_FLUSH_MS / 1000)
    except _REDIS_FAILURES:
        raise ResumeUnavailable("The reply's frames cannot be read right now.", status=503) from None
    if snapshot is None or snapshot.owner_id != owner_id:
        # Someone else's, expired or never: one answer, so that an id tells nothing about its owner.
        raise NotFound(f"No reply {request_id!r} to resume (unknown, expired, or not yours).")
    # A live reply's last frames may still be on their way to the buffer when its client, which
    # got them, asks: up to IN_FLIGHT_FRAMES past the last kept frame is believed.
    if after > snapshot.last_n + (0 if snapshot.finished else IN_FLIGHT_FRAMES) or (
        snapshot.finished and after >= snapshot.last_n
    ):
        raise InvalidInput(
            f"after={after} is past the reply's last frame ({snapshot.last_n}"
            f"{', its end' if snapshot.finished else ''}).",
            code="invalid_resume",
        )
    if after + 1 < snapshot.first_n:
        raise ResumeUnavailable(
            f"Frames {after + 1} to {snapshot.first_n - 1} of this reply are no longer kept"
            f" (REPLAY_MAX_FRAMES={settings.REPLAY_MAX_FRAMES})."
        )
    return Follower(store, request_id, after)
