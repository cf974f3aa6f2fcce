"""Wire-level pieces of the Anthropic API shared by the local server, its store and its engine.

The local backend must be indistinguishable from the real API for the official SDK, so error
bodies, id prefixes, timestamps and the status ↔ error-type table live in one place and every
module builds them the same way.
"""

import secrets
import string
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Clock = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime; injectable so tests can jump 24 h ahead."""

API_VERSIONS = ("2023-06-01", "2026-10-21")
"""Accepted ``anthropic-version`` values (SDK 0.x/1.x send the first, SDK 2.x the second)."""

NO_SAMPLING_VERSION = "2026-10-21"
"""From this API version on, ``temperature``/``top_p``/``top_k`` are rejected with 400."""

SAMPLING_PARAMS = ("temperature", "top_p", "top_k")

STATUS_FOR_ERROR_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
"""HTTP status of each ``error.type`` (official errors page)."""

ERROR_TYPE_FOR_STATUS: dict[int, str] = {v: k for k, v in STATUS_FOR_ERROR_TYPE.items()}

_ALPHABET = string.ascii_letters + string.digits


def utc_now() -> datetime:
    """The default clock: the real current time in UTC."""
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A random id shaped like the API's (``req_``, ``msg_``, ``msgbatch_`` + 24 base62 chars)."""
    value = secrets.randbits(131)  # 62**22 > 2**130: 22 base62 digits of randomness
    digits = []
    for _ in range(22):
        value, rem = divmod(value, 62)
        digits.append(_ALPHABET[rem])
    return prefix + "01" + "".join(digits)


def rfc3339(moment: datetime) -> str:
    """Format like the API: ``2024-09-24T18:37:24.100435Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> datetime:
    """Inverse of :func:`rfc3339` (accepts a trailing ``Z`` or an explicit offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def error_type_for_status(status: int) -> str:
    """The ``error.type`` the real API uses for ``status`` (other 4xx → invalid_request_error)."""
    if status in ERROR_TYPE_FOR_STATUS:
        return ERROR_TYPE_FOR_STATUS[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def status_for_error_type(error_type: str) -> int:
    """The HTTP status for an ``error.type``; unknown types count as server errors."""
    return STATUS_FOR_ERROR_TYPE.get(error_type, 500)


def error_object(
    error_type: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The inner ``error`` object (``{"type": ..., "message": ...}`` plus optional details)."""
    obj: dict[str, Any] = {"type": error_type, "message": message}
    if details:
        obj["details"] = details
    return obj


def error_body(
    error_type: str,
    message: str,
    request_id: str | None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The full error response body the API returns (also the ``error`` of an errored result)."""
    return {
        "type": "error",
        "error": error_object(error_type, message, details),
        "request_id": request_id,
    }


class ApiError(Exception):
    """An API error to send as an HTTP response (or to record as an errored batch result).

    Attributes:
        status: HTTP status code.
        error_type: The ``error.type`` string.
        message: Human-readable message (never contains the API key).
        details: Optional ``error.details`` (``{"error_code": "enforced_spend_limit_reached"}``).
        headers: Extra response headers (``retry-after``, ``x-should-retry``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type or error_type_for_status(status)
        self.message = message
        self.details = details
        self.headers = dict(headers or {})

    def body(self, request_id: str | None) -> dict[str, Any]:
        """The JSON body for this error."""
        return error_body(self.error_type, self.message, request_id, self.details)


def invalid_request(message: str) -> ApiError:
    """A 400 ``invalid_request_error``."""
    return ApiError(400, message, "invalid_request_error")


def not_found(message: str) -> ApiError:
    """A 404 ``not_found_error``."""
    return ApiError(404, message, "not_found_error")
