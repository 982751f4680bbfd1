"""OpenAI's error body, {"error": {"message", "type", "param", "code"}}, from EVA's errors.

The SDKs pick their exception by the status (401 AuthenticationError, 403 PermissionDeniedError,
404 NotFoundError, 429 RateLimitError, 400 BadRequestError, 5xx InternalServerError) and read
`code` and `param` from the body: EVA's stable codes go there.
"""

from __future__ import annotations

from typing import Any

from accounts.errors import EvaError, RateLimited

# EVA answers 422 for input it cannot take; OpenAI answers 400 (its SDKs expect that).
_STATUS = {422: 400}
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "requests",
}


class OpenAIError(EvaError):
    """An EvaError that names the request's field at fault (OpenAI's `param`)."""

    def __init__(self, message: str, *, code: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message, code=code, status=status)
        self.param = param


def error_status(exc: EvaError) -> int:
    return _STATUS.get(exc.status, exc.status)


def error_body(exc: EvaError) -> dict[str, Any]:
    status = error_status(exc)
    code = "rate_limit_exceeded" if isinstance(exc, RateLimited) else exc.code
    return {
        "error": {
            "message": exc.message,
            "type": _TYPES.get(status, "server_error"),
            "param": getattr(exc, "param", None),
            "code": code,
        }
    }
