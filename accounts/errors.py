"""EVA's own exceptions: each carries a stable `code` that clients can branch on."""

from __future__ import annotations

from accounts.redaction import redact


class EvaError(Exception):
    """Base error: `code` is stable for clients, `message` is for people, `status` for HTTP."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        # Messages reach clients (JSON errors, error frames) and logs: no URL password, no secret.
        message = redact(message)
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class AuthenticationFailed(EvaError):
    code = "unauthenticated"
    status = 401


class PermissionDenied(EvaError):
    code = "forbidden"
    status = 403


class NotFound(EvaError):
    code = "not_found"
    status = 404


class InvalidInput(EvaError):
    code = "invalid_request"
    status = 422


class RateLimited(EvaError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def error_body(*, code: str, message: str, **extra: object) -> dict[str, object]:
    """The one JSON error body of EVA's HTTP API: {"code": ..., "message": ..., **extra}."""
    return {"code": code, "message": message, **extra}
