"""REST for mobile clients: chat (JSON, or Server-Sent Events) and conversations.

POST /api/v1/chat answers JSON once the reply is complete. With `"stream": true` or
`Accept: text/event-stream` it streams the WebSocket's frames as SSE events instead: EVA's
ASGI router hands those requests to chat.sse.ChatStreamConsumer before Django sees them (see
chat/sse.py, which also serves POST /api/v1/chat/stream). Failures before the reply starts
(bad input 422, rate limit 429, no backend 503) are plain JSON errors with a status code in
both modes.
"""

from __future__ import annotations

from contextlib import aclosing
from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Field, Query, Router, Schema, Status

from accounts.auth import auth_for, request_principal
from accounts.error_schemas import AUTH_ERRORS, BODY_ERRORS, error_responses
from accounts.errors import EvaError
from accounts.models import Scope
from accounts.validation import MAX_QUERY_INT, text_validate
from chat.export import export_dict, export_filename, export_markdown
from chat.generation import ChatGeneration, ChatRequest
from chat.models import ChatSession
from chat.selectors import (
    first_match,
    session_export_messages,
    session_messages,
    session_of,
    sessions_of,
    sessions_search,
)
from chat.services import (
    exchange_supersede,
    session_clear,
    session_create,
    session_delete,
    session_id_validate,
    session_rename,
)

router = Router(tags=["chat"], auth=auth_for(Scope.CHAT))

# Where streamed replies are served (chat/sse.py; routed in chat/routing.py).
CHAT_STREAM_PATH = "/api/v1/chat/stream"


class ChatIn(Schema):
    message: str = Field(..., description="The user's message (1 to CHAT_MAX_MESSAGE_CHARS characters).")
    session_id: str = Field("default", description="Your name for the conversation: [A-Za-z0-9_.:-]{1,100}.")
    stream: bool = Field(False, description="Answer with Server-Sent Events instead of one JSON body.")


class ChatOut(Schema):
    response: str
    session_id: str
    request_id: str
    backend: str
    model: str
    latency_ms: float
    ttft_ms: float | None
    tokens: int
    done_reason: str


def wants_stream(request: HttpRequest, payload: ChatIn) -> bool:
    """Whether the client asked for Server-Sent Events (the body's flag or its Accept header)."""
    return payload.stream or "text/event-stream" in request.headers.get("Accept", "")


async def chat_reply(request: HttpRequest, payload: ChatIn) -> HttpResponse | dict[str, Any]:
    """Shared by /api/v1/chat and the legacy POST /chat: the whole reply as one JSON body."""
    if wants_stream(request, payload):
        # EVA's ASGI router never lets a stream request reach Django; one that did (another
        # server setup, Django's test client) is sent where streams are served, body and all.
        return HttpResponse(status=307, headers={"Location": CHAT_STREAM_PATH})
    principal = request_principal(request)
    chat_request = ChatRequest(  # validates the message and the conversation's id (422)
        user_id=principal.user_id,
        api_key_id=principal.api_key_id,
        session_id=payload.session_id,
        content=payload.message,
        channel="rest",
    )
    generation = ChatGeneration(chat_request)
    last: dict[str, Any] = {}
    async with aclosing(generation.frames()) as frames:  # raises EvaError (429/503) before the start
        async for frame in frames:
            last = frame
    if last["type"] == "error":
        raise EvaError(last["message"], code=last["code"], status=502)
    return {
        "response": generation.text,
        "session_id": chat_request.session_id,
        "request_id": generation.request_id,
        "backend": generation.backend,
        "model": generation.model,
        "latency_ms": last["total_ms"],
        "ttft_ms": last["ttft_ms"],
        "tokens": last["tokens"],
        "done_reason": last["done_reason"],
    }


# --- the streamed reply, as the schema describes it -----------------------------------------
# POST /api/v1/chat/stream is served by a Channels consumer (chat/sse.py), not by Ninja: its
# operation and the frames it sends are registered with the API's schema by hand
# (evaproject.api.register_routers).
class StartFrame(Schema):
    type: Literal["start"]
    request_id: str
    session_id: str
    backend: str
    model: str


class TokenFrame(Schema):
    type: Literal["token"]
    content: str


class EndFrame(Schema):
    type: Literal["end"]
    request_id: str
    session_id: str
    backend: str
    model: str
    ttft_ms: float | None
    total_ms: float
    tokens: int
    done_reason: str


class ErrorFrame(Schema):
    type: Literal["error"]
    code: str
    message: str
    request_id: str | None = None


STREAM_FRAMES: dict[str, type[Schema]] = {
    "start": StartFrame,
    "token": TokenFrame,
    "end": EndFrame,
    "error": ErrorFrame,
}
SSE_DESCRIPTION = (
    "Server-Sent Events: per event, `event: start|token|end|error` and `data:` that frame as JSON"
    " (the WebSocket's frames). Every stream ends with `end` or `error`, then the body ends."
)
# One event, as OpenAPI models text/event-stream (an object of its fields; tools such as
# schemathesis read an OpenAPI 3.1 media type's `schema` per event, as 3.2's itemSchema): `data`
# is JSON, one of the frames. Or the whole body as one string, as a client that does not parse
# events (a generated one) reads it.
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": list(STREAM_FRAMES)},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "oneOf": [{"$ref": f"#/components/schemas/{model.__name__}"} for model in STREAM_FRAMES.values()]
            },
        },
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}
SSE_CONTENT: dict[str, Any] = {
    "schema": {
        "description": SSE_DESCRIPTION,
        "anyOf": [SSE_EVENT, {"type": "string", "description": "The whole stream, read as one text"}],
    }
}


def chat_stream_openapi(*, security: list[dict[str, list[str]]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The schema's path item for POST /api/v1/chat/stream, and the component schemas it names."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    statuses = {
        400: "Not JSON (bad_request)",
        401: "No or bad credentials (unauthenticated)",
        403: "A key without the chat scope, or a session from an origin not allowed",
        413: "The body is over DATA_UPLOAD_MAX_MEMORY_SIZE (request_too_large)",
        422: "Not a valid message or session id",
        429: "Over a rate limit (rate_limited); Retry-After says when to retry",
        503: "No language model answers (no_backend), or the rate limit's Redis is down",
    }
    operation = {
        "operationId": "chat_api_chat_stream",
        "summary": "Send a message; the reply as Server-Sent Events",
        "description": (
            "Takes the body of `POST /api/v1/chat` (`stream` is implied) and streams the reply."
            " Failures before the reply starts are JSON errors with a status code; a failure after"
            " it is an `error` event."
        ),
        "tags": ["chat"],
        "security": security,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatIn"}}},
        },
        "responses": {
            "200": {"description": "The reply, as it is generated", "content": {"text/event-stream": SSE_CONTENT}},
            **{str(status): {"description": text, "content": error} for status, text in statuses.items()},
        },
    }
    schemas = {
        model.__name__: model.model_json_schema(ref_template="#/components/schemas/{model}")
        for model in STREAM_FRAMES.values()
    }
    resume = {"get": _resume_operation(security, error)}
    return {CHAT_STREAM_PATH: {"post": operation}, f"{CHAT_STREAM_PATH}/{{request_id}}": resume}, schemas


def _resume_operation(security: list[dict[str, list[str]]], error: dict[str, Any]) -> dict[str, Any]:
    """GET /api/v1/chat/stream/{request_id}: a reply resumed after a dropped stream (chat/replay_sse.py)."""
    statuses = {
        401: "No or bad credentials (unauthenticated)",
        403: "A key without the chat scope, or a session from an origin not allowed",
        404: "Not the caller's reply, unknown, or expired (not_found: the same answer for each)",
        410: "The frames after the one named are no longer kept (resume_unavailable)",
        422: "A bad Last-Event-ID / after, or one at or past the reply's end (invalid_resume)",
        503: "The buffer's Redis does not answer (resume_unavailable)",
    }
    return {
        "operationId": "chat_api_chat_stream_resume",
        "summary": "Resume a reply after a dropped stream, as Server-Sent Events",
        "description": (
            "Names the reply by the `request_id` of its `start` event and the last event received by"
            " `Last-Event-ID` (each event's `id:` is the frame's number `n`) or `?after=N`; neither means"
            " from the first frame. Streams the missed events, then the rest live, then `end` (or `error`)."
        ),
        "tags": ["chat"],
        "security": security,
        "parameters": [
            {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 36}},
            {"name": "after", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
            {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {
                "description": "The reply's frames after the one named",
                "content": {"text/event-stream": SSE_CONTENT},
            },
            **{str(status): {"description": text, "content": error} for status, text in statuses.items()},
        },
    }


CHAT_RESPONSES: dict[int, Any] = {200: ChatOut, 307: None, **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 429, 502, 503)}
# What Ninja cannot infer: the streamed answer, which EVA's ASGI router serves on this URL
# (chat/sse.py). Integer keys, as Ninja's own, so that these merge into its responses.
CHAT_OPENAPI_EXTRA: dict[str, Any] = {
    "responses": {
        200: {
            "description": "The reply: JSON, or with stream=true / Accept: text/event-stream, Server-Sent Events",
            "content": {"text/event-stream": SSE_CONTENT},
        },
        307: {"description": f"Only outside EVA's ASGI application: a stream request, sent to {CHAT_STREAM_PATH}"},
        413: {"description": "The body is over DATA_UPLOAD_MAX_MEMORY_SIZE (code request_too_large)"},
    }
}


@router.post(
    "/chat",
    response=CHAT_RESPONSES,
    summary="Send a message; JSON reply, or SSE with stream=true / Accept: text/event-stream",
    description=(
        "Answers JSON once the reply is complete. With `\"stream\": true` in the body or"
        " `Accept: text/event-stream`, streams the reply as Server-Sent Events instead; so does"
        f" `POST {CHAT_STREAM_PATH}`, which takes the same body. Failures before the reply starts are"
        " JSON errors with a status code in both modes."
    ),
    openapi_extra=CHAT_OPENAPI_EXTRA,
    auth=auth_for(Scope.CHAT, for_async_view=True),
)
async def chat(request: HttpRequest, payload: ChatIn) -> Any:
    return await chat_reply(request, payload)


# --- conversations ------------------------------------------------------------------------
class SessionOut(Schema):
    session_id: str
    title: str
    created_at: datetime
    updated_at: datetime
    message_count: int = 0


class SessionIn(Schema):
    session_id: str | None = None
    title: str = ""


class SessionPatch(Schema):
    title: str


class MessageOut(Schema):
    id: int
    role: str
    content: str
    status: str
    backend: str
    model: str
    ttft_ms: float | None = Field(None, description="A reply's time to first token, as EVA measured it.")
    total_ms: float | None = Field(None, description="A reply's total time.")
    done_reason: str = Field(
        "",
        description="How a reply ended: stop, length, cancelled (stopped by the person), or a failed reply's"
        " error code (upstream_error, no_backend, internal_error); empty for user messages and older replies.",
    )
    request_id: str = Field("", description="The request a user message and its reply share.")
    created_at: datetime


class MessagesPage(Schema):
    items: list[MessageOut]
    count: int
    limit: int
    offset: int


class PageParams(Schema):
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=MAX_QUERY_INT)


def _session_out(session: ChatSession) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "title": session.title,
        "created_at": session.created_at,
        "updated_at": session.updated_at,
        "message_count": getattr(session, "message_count", None)
        or session.messages.filter(superseded_at__isnull=True).count(),
    }


# The error statuses of the conversation endpoints: a session_id that is not one is 422, someone
# else's or none is 404.
SESSION_ERRORS = error_responses(*AUTH_ERRORS, 404, 422)


@router.get(
    "/sessions",
    response={200: list[SessionOut], **error_responses(*AUTH_ERRORS)},
    summary="My conversations, most recent first",
)
def list_sessions(request: HttpRequest) -> list[dict[str, Any]]:
    return [_session_out(s) for s in sessions_of(owner_id=request_principal(request).user_id)]


@router.post(
    "/sessions",
    response={201: SessionOut, **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 409)},
    summary="Create a conversation",
)
def create_session(request: HttpRequest, payload: SessionIn) -> Status[dict[str, Any]]:
    owner_id = request_principal(request).user_id
    session = session_create(owner_id=owner_id, session_id=payload.session_id, title=payload.title)
    return Status(201, _session_out(session))


@router.get("/sessions/{session_id}", response={200: SessionOut, **SESSION_ERRORS}, summary="One conversation")
def get_session(request: HttpRequest, session_id: str) -> dict[str, Any]:
    owner_id = request_principal(request).user_id
    return _session_out(session_of(owner_id=owner_id, session_id=session_id_validate(session_id)))


@router.get(
    "/sessions/{session_id}/messages",
    response={200: MessagesPage, **SESSION_ERRORS},
    summary="A page of a conversation's messages",
)
def list_messages(request: HttpRequest, session_id: str, page: Query[PageParams]) -> dict[str, Any]:
    session = session_of(owner_id=request_principal(request).user_id, session_id=session_id_validate(session_id))
    items, count = session_messages(session=session, limit=page.limit, offset=page.offset)
    return {"items": items, "count": count, "limit": page.limit, "offset": page.offset}


@router.patch(
    "/sessions/{session_id}",
    response={200: SessionOut, **SESSION_ERRORS, **error_responses(*BODY_ERRORS)},
    summary="Rename a conversation",
)
def rename_session(request: HttpRequest, session_id: str, payload: SessionPatch) -> dict[str, Any]:
    owner_id = request_principal(request).user_id
    return _session_out(session_rename(owner_id=owner_id, session_id=session_id, title=payload.title))


@router.delete(
    "/sessions/{session_id}",
    response={204: None, **SESSION_ERRORS},
    summary="Delete a conversation and its messages",
)
def delete_session(request: HttpRequest, session_id: str) -> Status[None]:
    session_delete(owner_id=request_principal(request).user_id, session_id=session_id)
    return Status(204, None)


@router.post(
    "/sessions/{session_id}/clear",
    response={204: None, **error_responses(*AUTH_ERRORS, 422)},
    summary="Forget a conversation's messages (none to forget is no error)",
)
def clear_session(request: HttpRequest, session_id: str) -> Status[None]:
    session_clear(owner_id=request_principal(request).user_id, session_id=session_id_validate(session_id))
    return Status(204, None)


# --- search, regenerate / edit, export (issue #19) ----------------------------------------
class SessionMatchOut(SessionOut):
    excerpt: str = Field("", description="Part of the newest message that matches, when the title does not.")


class SessionSearchPage(Schema):
    items: list[SessionMatchOut]
    count: int
    limit: int
    offset: int


class SearchParams(PageParams):
    q: str = Field(..., min_length=1, max_length=200, description="Text to find in titles and messages, any case.")
    limit: int = Field(20, ge=1, le=100)


def _excerpt(text: str, query: str, width: int = 120) -> str:
    at = text.lower().find(query.lower())
    start = max(0, at - width // 3) if at >= 0 else 0
    piece = " ".join(text[start : start + width].split())
    return ("…" if start > 0 else "") + piece + ("…" if start + width < len(text) else "")


@router.get(
    "/search/sessions",
    response={200: SessionSearchPage, **error_responses(*AUTH_ERRORS, 422)},
    summary="Search my conversations by title and message text (any case), most recent first",
)
def search_sessions(request: HttpRequest, params: Query[SearchParams]) -> dict[str, Any]:
    query = text_validate(params.q.strip(), field="The search")
    if not query:
        return {"items": [], "count": 0, "limit": params.limit, "offset": params.offset}
    found = sessions_search(owner_id=request_principal(request).user_id, query=query)
    items = []
    for session in found[params.offset : params.offset + params.limit]:
        item = _session_out(session)
        match = None if query.lower() in session.title.lower() else first_match(session=session, query=query)
        item["excerpt"] = _excerpt(match.content, query) if match is not None else ""
        items.append(item)
    return {"items": items, "count": found.count(), "limit": params.limit, "offset": params.offset}


class RewindIn(Schema):
    request_id: str | None = Field(
        None, max_length=36, description="The exchange to take back (its user message's request id); the newest"
        " one when absent.",
    )


class RewindOut(Schema):
    content: str = Field(..., description="The user message taken back: send it again (regenerate) or edited.")
    request_id: str


@router.post(
    "/sessions/{session_id}/rewind",
    response={200: RewindOut, **SESSION_ERRORS, **error_responses(*BODY_ERRORS)},
    summary="Take back an exchange to regenerate its reply or edit its message",
    description=(
        "Marks the user message (the one with `request_id`, else the newest) and every message after it as"
        " superseded: they stay stored (GET .../export?include_superseded=true shows them) but are no longer"
        " listed nor sent to the model. Then send the message again, as it was or edited. 404 with"
        " `message_not_found` when there is no such message."
    ),
)
def rewind_session(request: HttpRequest, session_id: str, payload: RewindIn) -> dict[str, Any]:
    asked = exchange_supersede(
        owner_id=request_principal(request).user_id, session_id=session_id, request_id=payload.request_id
    )
    return {"content": asked.content, "request_id": asked.request_id}


class ExportMessageOut(MessageOut):
    superseded_at: datetime | None = None


class ExportOut(Schema):
    session_id: str
    title: str
    created_at: datetime
    updated_at: datetime
    exported_at: datetime
    messages: list[ExportMessageOut]


class ExportParams(Schema):
    format: Literal["markdown", "json"] = Field("markdown", description="markdown (to read) or json (to keep).")
    include_superseded: bool = Field(False, description="Also the regenerated replies and edited messages.")


EXPORT_OPENAPI_EXTRA: dict[str, Any] = {
    "responses": {
        200: {
            "description": "The conversation as a file (Content-Disposition: attachment)",
            "content": {"text/markdown": {"schema": {"type": "string"}}},
        }
    }
}


@router.get(
    "/sessions/{session_id}/export",
    response={200: ExportOut, **SESSION_ERRORS},
    summary="Export a conversation as Markdown or JSON",
    openapi_extra=EXPORT_OPENAPI_EXTRA,
)
def export_session(
    request: HttpRequest, session_id: str, params: Query[ExportParams], response: HttpResponse
) -> Any:
    session = session_of(owner_id=request_principal(request).user_id, session_id=session_id_validate(session_id))
    messages = session_export_messages(session=session, include_superseded=params.include_superseded)
    if params.format == "markdown":
        file = HttpResponse(export_markdown(session, messages), content_type="text/markdown; charset=utf-8")
        file["Content-Disposition"] = f'attachment; filename="{export_filename(session, "md")}"'
        return file
    response["Content-Disposition"] = f'attachment; filename="{export_filename(session, "json")}"'
    return export_dict(session, messages)


# --- EVA's earlier FastAPI clients: POST /chat with the same body, API key only ------------
legacy_router = Router(auth=auth_for(Scope.CHAT, for_async_view=True)[:2])


@legacy_router.post("/chat", response=CHAT_RESPONSES)
async def legacy_chat(request: HttpRequest, payload: ChatIn) -> Any:
    return await chat_reply(request, payload)
