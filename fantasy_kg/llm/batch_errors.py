"""How the batch client reads a failed API call: sent or not, ambiguous, retry when, user error.

Used by submission, status and results alike, so each decision (may this create have landed?
may it still land?) is made in one place. Background: docs/architecture.md, "Exactly-once
submission".
"""

import random

import anthropic

from fantasy_kg.domain.errors import ConfigError, PreflightError, TransientError, UserError

#: Transport errors raised before the request left the client: the server never saw it.
_NOT_SENT_ERRORS = ("ConnectError", "ConnectTimeout", "PoolTimeout")


class ResultsArchivedError(UserError):
    """The batch's results are past the 29-day retention and cannot be downloaded anymore."""


class BatchNotEndedError(UserError):
    """Results were asked for before the batch ended."""


def ambiguous(exc: BaseException) -> bool:
    """Whether a failed create may nevertheless have created the batch on the server."""
    if isinstance(exc, anthropic.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, anthropic.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in (408, 409)
    return False


def never_sent(exc: BaseException) -> bool:
    """Whether the request never reached the server: no connection could be made at all."""
    return (
        isinstance(exc, anthropic.APIConnectionError)
        and type(exc.__cause__).__name__ in _NOT_SENT_ERRORS
    )


def may_land_late(exc: BaseException) -> bool:
    """Whether a failed create may still create its batch later, after the client gave up.

    A connection that failed before the request was sent cannot; neither can an answer from the
    API itself (a 500 or 529 means the work is decided, and reconciling at once finds a batch it
    created). A timeout, a connection dropped after sending, or a gateway's 502/504/408 can:
    the API may still be working on the request.
    """
    if isinstance(exc, anthropic.APIConnectionError):
        return type(exc.__cause__).__name__ not in _NOT_SENT_ERRORS
    if isinstance(exc, anthropic.APIStatusError):
        return exc.status_code in (408, 502, 504)
    return False


def still_working(exc: BaseException) -> bool:
    """Whether the server was demonstrably still working on the request when the client quit.

    A read timeout (or a gateway timeout) means exactly that, so the batch may appear any moment:
    the submission waits for it instead of leaving it to a later call.
    """
    if isinstance(exc, anthropic.APITimeoutError):
        return type(exc.__cause__).__name__ not in _NOT_SENT_ERRORS
    if isinstance(exc, anthropic.APIStatusError):
        return exc.status_code in (408, 504)
    return False


def retry_after(exc: anthropic.APIStatusError) -> float | None:
    """The delay the API asked for (``retry-after-ms`` or ``retry-after``), if any."""
    headers = exc.response.headers if exc.response is not None else {}
    raw_ms = headers.get("retry-after-ms")
    raw = headers.get("retry-after")
    try:
        if raw_ms is not None:
            return max(0.0, float(raw_ms) / 1000)
        if raw is not None:
            return max(0.0, float(raw))
    except ValueError:
        return None
    return None


def error_code(exc: anthropic.APIStatusError) -> str:
    """``error.details.error_code`` of an API error (e.g. ``enforced_spend_limit_reached``)."""
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body)
    details = inner.get("details") if isinstance(inner, dict) else None
    code = details.get("error_code") if isinstance(details, dict) else None
    return str(code or "")


def is_cut_stream(exc: Exception) -> bool:
    """Whether a results download failed in a way that fetching again can fix.

    Besides the SDK's connection and status errors, httpx2 transport errors (RemoteProtocolError,
    ReadError) escape the SDK's exception mapping when raised mid-iteration of the JSONL stream.
    """
    if isinstance(exc, anthropic.APIConnectionError | anthropic.APIStatusError | OSError):
        return True
    return type(exc).__module__.split(".")[0] in ("httpx2", "httpx", "httpcore", "h11")


def backoff(attempt: int, base: float) -> float:
    """Exponential delay for retry ``attempt`` (capped at 60 s, with jitter)."""
    return float(min(base * 2**attempt, 60.0) * (1 - 0.25 * random.random()))


def describe_status_error(exc: anthropic.APIStatusError) -> str:
    """One line about an HTTP error (the SDK message carries the API's, never the key)."""
    msg = str(getattr(exc, "message", "") or exc).splitlines()[0]
    return f"HTTP {exc.status_code}: {msg[:300]}"


def definitive_error(exc: BaseException) -> UserError:
    """The user error a non-retryable API failure stands for (credentials, a rejected body)."""
    if isinstance(exc, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
        return ConfigError(
            f"the API refused the credentials ({describe_status_error(exc)}): check "
            "ANTHROPIC_API_KEY"
        )
    if isinstance(exc, anthropic.APIStatusError):
        return PreflightError(
            f"the API rejected the batch ({describe_status_error(exc)}); nothing was created"
        )
    return TransientError(f"batch create failed: {type(exc).__name__}")
