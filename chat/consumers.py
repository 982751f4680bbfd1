"""/ws/chat: the WebSocket protocol of DESIGN.md.

Client frames: message, cancel, clear, ping, resume. Server frames: start, token..., audio +
binary, end, error, cleared, pong; with voice, speech_end / speech_stopped after `end`. A reply's
frames are numbered and kept (chat/replay.py): a socket that drops after a reply's start leaves it
running for REPLAY_GRACE_S, and `resume` on any socket of the same user picks it up after the
frame it names. One generation at a time per socket: a message sent while a reply's text is
streaming gets the error `busy` (the client may cancel first); one sent while the previous reply
is only being spoken interrupts that speech (barge-in: `speech_stopped`, then the new reply). The
generation runs in a task this consumer owns, so cancel and disconnect stop it (and its upstream
request). Every bad frame gets an error frame and the socket stays open; a bad credential closes it
with 4401, a cookie from a foreign Origin with 4403. A credential that goes while the socket is
open (a revoked key, a deactivated user, a logged-out session: accounts.revocation) closes it
with an error frame and 4401 within moments, and its next frame is refused whatever the watcher
did; a key or user over its cap of open sockets gets `too_many_sockets` and 4429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any, cast

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from accounts.errors import EvaError
from accounts.models import Scope
from accounts.revocation import (
    CLOSE_REVOKED,
    CLOSE_TOO_MANY,
    OpenSocket,
    SocketRevoked,
    TooManySockets,
    revocation_message,
    socket_check,
    socket_close,
    socket_open,
)
from chat import drain, replay
from chat.generation import ChatGeneration, ChatRequest
from chat.services import session_clear, session_id_validate

logger = logging.getLogger("chat.consumers")

CLIENT_TYPES = ("message", "cancel", "clear", "ping", "resume")
MAX_FRAME_CHARS = 64_000  # far above any valid message (CHAT_MAX_MESSAGE_CHARS of text + JSON)


class ChatConsumer(AsyncWebsocketConsumer):
    # Chat sockets receive nothing through the channel layer (no groups, no pushes), so they do
    # not take a layer channel: otherwise every open socket keeps a Redis read loop busy.
    # An alias that is not configured makes Channels skip the layer for this consumer.
    channel_layer_alias = "chat-sockets-need-no-layer"
    generation: ChatGeneration | None = None
    following: replay.Follower | None = None  # a resumed reply (chat/replay.py)
    task: asyncio.Task[None] | None = None
    open_socket: OpenSocket | None = None  # registered under its credentials once accepted
    speech: Any = None  # the last voice reply's SpeechStream: it may speak on after its text's end
    ending = False  # closing or closed: no new work

    async def connect(self) -> None:
        await self.accept()
        scope: Mapping[str, Any] = self.scope  # with WebsocketAuthMiddleware's keys (accounts/ws_auth.py)
        error = scope.get("auth_error")
        if error:
            message = (
                "This origin may not open a session-authenticated socket."
                if error == "origin_not_allowed"
                else "A valid API key (X-API-Key) with the chat scope, or a logged-in session, is required."
            )
            await self.send_error(error, message)
            await self.close(code=4403 if error == "origin_not_allowed" else 4401)
            return
        self.user_id = int(scope["user"].pk)
        api_key = scope.get("api_key")
        self.api_key_id = int(api_key.pk) if api_key is not None else None
        try:
            self.open_socket = await socket_open(
                user_id=self.user_id,
                api_key_prefix=api_key.prefix if api_key is not None else None,
                session_key=scope.get("session_key"),
                on_revoked=self.end_revoked,
            )
        except (SocketRevoked, TooManySockets) as exc:
            self.ending = True
            await self.send_error(exc.code, exc.message)
            await self.close(code=CLOSE_TOO_MANY if isinstance(exc, TooManySockets) else CLOSE_REVOKED)
            return
        drain.stream_opened(self)
        if drain.draining():  # the restart began during the handshake
            await self.end_restarting()

    async def disconnect(self, code: int) -> None:
        self.ending = True
        drain.stream_closed(self)
        if not replay.detach(self.task):  # a reply that started goes on for its grace, for a resume
            await self._stop_task()
        if self.open_socket is not None:
            await socket_close(self.open_socket)

    async def _credential_stands(self) -> None:
        """SocketRevoked if the socket's credential went, as Redis's marks say (a message's admission)."""
        assert self.open_socket is not None
        await socket_check(self.open_socket, ask_redis=True)

    async def end_revoked(self, code: str) -> None:
        """End the socket whose credential went: an `error` frame with `code`, then 4401 (once)."""
        if self.ending:
            return
        self.ending = True
        await self._stop_task()
        await self.send_error(code, revocation_message(code))
        await self.close(code=CLOSE_REVOKED)

    async def drain(self, deadline: float) -> None:
        """The process is stopping (chat.drain): a reply in flight may finish until `deadline`,
        then is stopped and kept as partial; the client gets `server_restarting` and 1012."""
        task, generation = self.task, self.generation
        if task is not None and not await drain.let_finish(task, deadline) and generation is not None:
            generation.stop_code = drain.RESTARTING_CODE
            await self._stop_task()  # its speech too
        await self.end_restarting(generation if task is not None and task.cancelled() else None)

    async def end_restarting(self, stopped: ChatGeneration | None = None) -> None:
        """`server_restarting` (with the request_id of the reply it stopped), then close 1012 (once)."""
        if self.ending:
            return
        self.ending = True
        extra = {"request_id": stopped.request_id} if stopped is not None else {}
        await self.send_error(drain.RESTARTING_CODE, drain.RESTARTING_MESSAGE, **extra)
        try:
            await self.close(code=drain.CLOSE_RESTARTING)
        except Exception:  # daphne cannot send 1012 (chat.drain)
            await self.close(code=drain.CLOSE_RESTARTING_DAPHNE)

    async def _stop_task(self) -> None:
        if self.speech is not None:
            self.speech.cancel()  # the socket is going: nothing more to say to it
        if self.task is not None and not self.task.done() and self.task is not asyncio.current_task():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    # --- frames in -----------------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.open_socket is None or self.ending:
            return  # the socket is closing
        if self.open_socket.revoked is not None:  # known here, the close may not have gone out yet
            await self.end_revoked(self.open_socket.revoked)
            return
        if text_data is None:
            await self.send_error("invalid_frame", "Binary frames are not accepted; send JSON text frames.")
            return
        if len(text_data) > MAX_FRAME_CHARS:
            await self.send_error("message_too_long", f"Frames are limited to {MAX_FRAME_CHARS} characters.")
            return
        try:
            frame = orjson.loads(text_data)
        except ValueError:
            await self.send_error("invalid_json", "The frame is not valid JSON.")
            return
        if not isinstance(frame, dict) or frame.get("type") not in CLIENT_TYPES:
            kind = frame.get("type") if isinstance(frame, dict) else None
            await self.send_error(
                "unknown_type", f"Unknown frame type {kind!r}; expected one of {', '.join(CLIENT_TYPES)}."
            )
            return
        handler = getattr(self, f"on_{frame['type']}")
        try:
            # Frames that act on stored data ask Redis whether the credential still stands (a
            # message's generation asks it beside its rate limit); the others rely on what this
            # process knows, which costs nothing.
            if frame["type"] in ("clear", "resume"):
                await socket_check(self.open_socket, ask_redis=True)
            await handler(frame)
        except SocketRevoked as exc:
            await self.end_revoked(exc.code)
        except EvaError as exc:
            await self.send_error(exc.code, exc.message)

    async def on_ping(self, frame: dict[str, Any]) -> None:
        await self.send_json({"type": "pong"})

    async def on_message(self, frame: dict[str, Any]) -> None:
        content: Any = frame.get("content")  # anything until ChatRequest has checked it
        request = ChatRequest(  # validates the message and the conversation's id
            user_id=self.user_id,
            api_key_id=self.api_key_id,
            session_id=frame.get("session_id", "default"),
            content=content,
            channel="ws",
        )
        voice = frame.get("voice", False)
        if not isinstance(voice, bool):
            await self.send_error("invalid_message", "voice must be true or false.")
            return
        api_key = cast(Mapping[str, Any], self.scope).get("api_key")
        if voice and api_key is not None and not api_key.has_scope(Scope.TTS):
            await self.send_error("missing_scope", "Spoken replies need an API key with the 'tts' scope.")
            return
        if self.task is not None and not self.task.done():
            await self.send_error("busy", "A reply is still streaming: wait for its end, or send cancel first.")
            return
        if self.ending:
            return  # revoked while this frame was checked
        if drain.draining():
            await self.end_restarting()
            return
        if self.speech is not None:  # barge-in: the previous reply is still being spoken
            await self.speech.interrupt("barge_in")
        speech = self.speech = self._speech(frame.get("voice_name")) if voice else None
        self.following = None
        self.generation = ChatGeneration(request, speech=speech, admission=self._credential_stands)
        if speech is not None:
            speech.request_id = self.generation.request_id
        self.task = asyncio.create_task(self._relay(self.generation), name=f"chat-{self.generation.request_id}")

    async def on_cancel(self, frame: dict[str, Any]) -> None:
        task, generation, speech = self.task, self.generation, self.speech
        if self.following is not None and task is not None and not task.done():
            await self.following.cancel()  # its generation stops; its end (cancelled) comes through the resume
            return
        streaming = task is not None and not task.done() and generation is not None
        if not streaming and (speech is None or speech.ended):
            await self.send_error("nothing_to_cancel", "No reply is streaming or being spoken.")
            return
        if streaming:
            assert task is not None and generation is not None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if task.cancelled():  # else it had just ended and sent its own end frame
                await self.send_json(replay.cancelled_end(generation))
        if speech is not None:
            await speech.interrupt("cancelled")  # speech_stopped, unless it had already closed

    async def on_resume(self, frame: dict[str, Any]) -> None:
        if self.task is not None and not self.task.done():
            await self.send_error("busy", "A reply is still streaming: wait for its end, or send cancel first.")
            return
        following = await replay.follow(
            request_id=frame.get("request_id"), owner_id=self.user_id, after=frame.get("after", 0)
        )
        if self.ending:
            return
        self.generation, self.following = None, following
        self.task = asyncio.create_task(following.relay(self.send_json), name=f"resume-{following.request_id}")

    async def on_clear(self, frame: dict[str, Any]) -> None:
        session_id = session_id_validate(frame.get("session_id", "default"))
        generation = self.generation if self.task is not None and not self.task.done() else None
        if generation is not None and generation.request.session_id == session_id:
            await self.send_error("busy", "Cancel the reply in flight before clearing its conversation.")
            return
        await database_sync_to_async(session_clear)(owner_id=self.user_id, session_id=session_id)
        await self.send_json({"type": "cleared", "session_id": session_id})

    # --- the generation task ----------------------------------------------------------
    async def _relay(self, generation: ChatGeneration) -> None:
        frames = replay.numbered(generation)
        try:
            async for frame in frames:
                if not self.ending:  # gone: the reply goes on for a resume (replay.detach)
                    await self.send_json(frame)
        except SocketRevoked as exc:  # refused at admission: nothing was asked or stored
            await self.end_revoked(exc.code)
        except EvaError as exc:
            await self.send_error(exc.code, exc.message, request_id=generation.request_id)
        except Exception:
            logger.exception("chat generation %s failed", generation.request_id)
            await self.send_error(
                "internal_error", "Something went wrong on our side.", request_id=generation.request_id
            )
        finally:
            await frames.aclose()

    def _speech(self, voice_name: object) -> Any:
        from voice.speech_stream import SpeechStream

        return SpeechStream(
            voice=voice_name if isinstance(voice_name, str) else None,
            send_json=self.send_json,
            send_bytes=self.send_audio,
        )

    # --- frames out -------------------------------------------------------------------
    async def send_json(self, content: dict[str, Any]) -> None:
        await self.send(text_data=orjson.dumps(content).decode())

    async def send_audio(self, data: bytes) -> None:
        await self.send(bytes_data=data)

    async def send_error(self, code: str, message: str, **extra: Any) -> None:
        await self.send_json({"type": "error", "code": code, "message": message, **extra})
