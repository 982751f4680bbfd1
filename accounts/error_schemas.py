"""The REST API's error body as a schema: each operation declares the error statuses it can answer."""

from __future__ import annotations

from ninja import Schema


class FieldErrorOut(Schema):
    field: str
    message: str


class ErrorOut(Schema):
    """accounts.errors.error_body: a stable `code`, a `message` for people, per-field `errors` on some 422s."""

    code: str
    message: str
    errors: list[FieldErrorOut] | None = None


# An operation behind auth_for: no or bad credentials (401), a missing scope or CSRF token (403).
AUTH_ERRORS = (401, 403)
# An operation that reads a JSON body: not JSON (400), over DATA_UPLOAD_MAX_MEMORY_SIZE (413), not valid (422).
BODY_ERRORS = (400, 413, 422)


def error_responses(*statuses: int) -> dict[int, type[ErrorOut]]:
    """Ninja's `response` entries for these error statuses, all with the error body."""
    return dict.fromkeys(statuses, ErrorOut)
