"""Status classes: what a request's outcome means for the people who run EVA.

A row keeps the `status` and `error_code` it was recorded with; its class is derived from them
(the same rule in Python, for the rollups, and in SQL, for queries on raw rows):

- `ok`: answered (`ok`, or `fallback`: answered by the fallback backend);
- `cancelled`: the client stopped it;
- `client_error`: the request itself was refused (4xx): bad input, rate limited, unauthorised;
- `upstream_error`: a model provider failed (or none was available);
- `server_error`: EVA failed (any other error code).

The error rate counts `upstream_error` and `server_error` only: what EVA or its upstreams
failed. Client errors are shown apart; they say nothing about EVA's health.
"""

from __future__ import annotations

import enum

from django.db.models import Case, CharField, Q, Value, When


class StatusClass(enum.StrEnum):
    OK = "ok"
    CANCELLED = "cancelled"
    CLIENT_ERROR = "client_error"
    UPSTREAM_ERROR = "upstream_error"
    SERVER_ERROR = "server_error"


FAILURE_CLASSES = (StatusClass.UPSTREAM_ERROR, StatusClass.SERVER_ERROR)

# The codes of 4xx answers (accounts.errors and the views that answer them), by kind.
CLIENT_ERROR_KINDS: dict[str, tuple[str, ...]] = {
    "rate limited": ("rate_limited", "too_many_sockets"),
    "unauthorised": (
        "unauthenticated",
        "missing_api_key",
        "invalid_api_key",
        "revoked_api_key",
        "expired_api_key",
        "inactive_user",
        "missing_scope",
        "forbidden",
        "origin_not_allowed",
    ),
    "bad input": (
        "bad_request",
        "invalid_request",
        "invalid_text",
        "invalid_message",
        "invalid_session_id",
        "empty_message",
        "message_too_long",
        "text_too_long",
        "unknown_voice",
        "request_too_large",
        "method_not_allowed",
        "not_found",
        "audio_too_large",
    ),
}
CLIENT_ERROR_CODES = frozenset(code for codes in CLIENT_ERROR_KINDS.values() for code in codes)
# Any other `invalid_...` code is bad input too (validation errors name the field that failed).
CLIENT_ERROR_PREFIX = "invalid_"
UPSTREAM_ERROR_CODES = frozenset({"upstream_error", "no_backend"})
UPSTREAM_ERROR_PREFIX = "upstream_"


def status_class(status: str, error_code: str) -> StatusClass:
    """The class of one row's outcome."""
    if status == "cancelled":
        return StatusClass.CANCELLED
    if status != "error":
        return StatusClass.OK
    code = error_code or ""
    if code in CLIENT_ERROR_CODES or code.startswith(CLIENT_ERROR_PREFIX):
        return StatusClass.CLIENT_ERROR
    if code in UPSTREAM_ERROR_CODES or code.startswith(UPSTREAM_ERROR_PREFIX):
        return StatusClass.UPSTREAM_ERROR
    return StatusClass.SERVER_ERROR


def client_error_kind(error_code: str) -> str:
    """`rate limited`, `unauthorised` or `bad input` for a client error's code."""
    for kind, codes in CLIENT_ERROR_KINDS.items():
        if error_code in codes:
            return kind
    return "bad input"


def status_class_q(wanted: StatusClass) -> Q:
    """A filter on raw rows equivalent to `status_class(status, error_code) == wanted`."""
    client = Q(error_code__in=sorted(CLIENT_ERROR_CODES)) | Q(error_code__startswith=CLIENT_ERROR_PREFIX)
    upstream = Q(error_code__in=sorted(UPSTREAM_ERROR_CODES)) | Q(error_code__startswith=UPSTREAM_ERROR_PREFIX)
    if wanted == StatusClass.CANCELLED:
        return Q(status="cancelled")
    if wanted == StatusClass.OK:
        return ~Q(status__in=("cancelled", "error"))
    if wanted == StatusClass.CLIENT_ERROR:
        return Q(status="error") & client
    if wanted == StatusClass.UPSTREAM_ERROR:
        return Q(status="error") & ~client & upstream
    return Q(status="error") & ~client & ~upstream


def status_class_expression() -> Case:
    """The class of each raw row, as an SQL expression."""
    return Case(
        *(When(status_class_q(cls), then=Value(cls.value)) for cls in StatusClass if cls != StatusClass.SERVER_ERROR),
        default=Value(StatusClass.SERVER_ERROR.value),
        output_field=CharField(),
    )
