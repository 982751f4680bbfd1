"""The REST API object: OpenAPI at /api/openapi.json, docs at /api/docs, JSON errors with a `code`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.openapi.schema import OpenAPISchema

from accounts.errors import EvaError, RateLimited, error_body
from accounts.ratelimit import current_rate_limit, rate_limit_headers
from accounts.validation import INVALID_TEXT_CODE

logger = logging.getLogger("evaproject.api")


class EvaAPI(NinjaAPI):
    """Ninja's API with what its schema cannot infer (docs/architecture.md, "The REST schema"):

    - paths served outside Django (the chat stream, a Channels consumer) and the schemas they
      refer to, registered by the app that serves them (`extra_paths`, `extra_schemas`);
    - 500 `internal_error` (on_unexpected), which any operation can answer, on every operation;
    - response keys as strings only: an app's `openapi_extra` with the integer keys that Ninja
      uses merges into Ninja's entries instead of adding a second "200" to the JSON.

    Its answers to a request that was counted against the rate limits (chat; speech sets its own)
    carry X-RateLimit-Limit, -Remaining and -Reset (accounts.ratelimit.rate_limit_headers).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extra_paths: dict[str, dict[str, Any]] = {}
        self.extra_schemas: dict[str, dict[str, Any]] = {}

    def create_response(
        self,
        request: HttpRequest,
        data: Any,
        *,
        status: int | None = None,
        temporal_response: HttpResponse | None = None,
    ) -> HttpResponse:
        response = super().create_response(request, data, status=status, temporal_response=temporal_response)
        for name, value in rate_limit_headers(current_rate_limit()).items():
            response[name] = value
        return response

    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> OpenAPISchema:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        schema["paths"].update(self.extra_paths)
        schema["components"].setdefault("schemas", {}).update(self.extra_schemas)
        for path_item in schema["paths"].values():
            for operation in path_item.values():
                responses: dict[str, Any] = {}
                for status, response in operation.get("responses", {}).items():
                    merged = responses.setdefault(str(status), {})
                    merged.update(response)
                responses.setdefault("500", _INTERNAL_ERROR)
                if "429" in responses:  # counted against the rate limits: say where the caller stands
                    for status, response in responses.items():
                        if status.startswith("2") or status == "429":
                            headers = response.setdefault("headers", {})
                            headers.update(_RATE_LIMIT_HEADERS)
                            if status == "429":
                                headers["Retry-After"] = _RETRY_AFTER
                operation["responses"] = responses
        return schema


_RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": {
        "description": "The tighter of the caller's limits (per key, per user): requests per window",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {
        "description": "Requests left in that limit's moving window",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Reset": {
        "description": "Seconds until the oldest counted request leaves the window (a place frees)",
        "schema": {"type": "integer"},
    },
}
_RETRY_AFTER = {"description": "Seconds to wait before retrying", "required": True, "schema": {"type": "integer"}}
_INTERNAL_ERROR = {
    "description": "Something failed on EVA's side (code internal_error); the error is logged",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
}

api = EvaAPI(
    title="EVA API",
    version="1.0.0",
    description="Chat with a local LLM (Ollama, Groq fallback), text-to-speech, and latency metrics.",
    urls_namespace="api",
)
# EVA's earlier FastAPI version served POST /chat at the root; kept for its clients, not documented.
legacy_api = NinjaAPI(title="EVA legacy API", urls_namespace="legacy", docs_url=None, openapi_url=None)


def error_response(request: HttpRequest, *, status: int, code: str, message: str, **extra: object) -> HttpResponse:
    """The one error body of the API (accounts.errors.error_body) as a response."""
    return api.create_response(request, error_body(code=code, message=message, **extra), status=status)


ErrorHandler = TypeVar("ErrorHandler", bound=Callable[..., HttpResponse])


def _on_both(exc_class: type[Exception]) -> Callable[[ErrorHandler], ErrorHandler]:
    """Register the decorated handler for `exc_class` on both APIs."""

    def register(handler: ErrorHandler) -> ErrorHandler:
        api.add_exception_handler(exc_class, handler)
        legacy_api.add_exception_handler(exc_class, handler)
        return handler

    return register


@_on_both(EvaError)
def on_eva_error(request: HttpRequest, exc: EvaError) -> HttpResponse:
    response = error_response(request, status=exc.status, code=exc.code, message=exc.message)
    if isinstance(exc, RateLimited):
        response["Retry-After"] = str(exc.retry_after)
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="eva"'
    return response


@_on_both(AuthenticationError)
def on_unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = error_response(
        request,
        status=401,
        code="unauthenticated",
        message="Authentication required: send X-API-Key or Authorization: Bearer, or log in.",
    )
    response["WWW-Authenticate"] = 'Bearer realm="eva"'
    return response


@_on_both(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [
        {"field": ".".join(str(part) for part in err.get("loc", ())[1:]) or "body", "message": err.get("msg", "")}
        for err in exc.errors
    ]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "The request is not valid."
    # Text that no store can hold has its own code, as the WebSocket's and the SSE's errors do.
    types = {err.get("type") for err in exc.errors}
    code = INVALID_TEXT_CODE if types == {INVALID_TEXT_CODE} else "invalid_request"
    return error_response(request, status=422, code=code, message=summary, errors=errors)


@_on_both(RequestDataTooBig)
def on_body_too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return error_response(
        request, status=413, code="request_too_large", message=f"The request body is limited to {limit} bytes."
    )


@_on_both(SuspiciousOperation)
@_on_both(MultiPartParserError)
def on_malformed_request(request: HttpRequest, exc: Exception) -> HttpResponse:
    # Django's own answer to these (too many fields, a multipart body without a boundary, read
    # by the CSRF check of a session call) is a 400, as here.
    return error_response(request, status=400, code="bad_request", message="The request body is malformed.")


@_on_both(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    codes = {400: "bad_request", 403: "csrf_failed", 404: "not_found", 405: "method_not_allowed"}
    return error_response(request, status=exc.status_code, code=codes.get(exc.status_code, "error"), message=str(exc))


@_on_both(Http404)
def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, status=404, code="not_found", message="Not found.")


@_on_both(OperationalError)
@_on_both(InterfaceError)
def on_database_unavailable(request: HttpRequest, exc: Exception) -> HttpResponse:
    # The database went away or refused the connection (#16): a clear, retryable answer.
    logger.warning("database unavailable in %s %s: %s", request.method, request.path, type(exc).__name__)
    return error_response(
        request, status=503, code="database_unavailable", message="The database is unavailable; try again."
    )


@_on_both(Exception)
def on_unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("unhandled error in %s %s", request.method, request.path)
    return error_response(request, status=500, code="internal_error", message="Something went wrong on our side.")


def register_routers() -> None:
    """Attach every app's router once (called from urls.py)."""
    from accounts.keys_api import router as keys_router
    from chat.api import chat_stream_openapi, legacy_router
    from chat.api import router as chat_router
    from metrics.api import router as metrics_router
    from voice.api import router as voice_router

    api.add_router("/v1/", chat_router)
    api.add_router("/v1/keys", keys_router)
    api.add_router("/v1/", voice_router)
    api.add_router("/v1/", metrics_router)
    legacy_api.add_router("", legacy_router)
    # The chat stream is served by a Channels consumer (chat/sse.py); its operation is described
    # by hand, with the security schemes of POST /api/v1/chat, which takes the same credentials.
    schemes = ("AsyncApiKeyHeaderAuth", "AsyncApiKeyBearerAuth", "BrowserSessionAuth")
    security: list[dict[str, list[str]]] = [{scheme: []} for scheme in schemes]
    paths, schemas = chat_stream_openapi(security=security)
    api.extra_paths.update(paths)
    api.extra_schemas.update(schemas)
