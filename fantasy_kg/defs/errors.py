"""Show user mistakes in Dagster as one clear line, and let transient failures be retried.

The CLI prints a :class:`~fantasy_kg.domain.errors.UserError` as one line and exits 2; in Dagster
the same error becomes a :class:`dagster.Failure` whose description is that line, so the run page
says what is wrong, where and how to fix it (a missing key, an unknown model, a budget cap hit).

Why it works this way: docs/architecture.md, "Errors and crash testing".
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from fantasy_kg.domain.errors import UserError

RETRY_DELAY_ENV = "FANTASY_KG_RETRY_DELAY_SECONDS"
"""First retry delay in seconds of :func:`transient_retry_policy` (default 30; doubles after)."""

RETRY_MAX_ENV = "FANTASY_KG_RETRY_MAX"
"""Retries of :func:`transient_retry_policy` (default 3)."""


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        return default
    return value if value >= 0 else default


def transient_retry_policy() -> dg.RetryPolicy:
    """The RetryPolicy of the steps that call the API or open DuckDB: exponential backoff.

    30 s, 60 s, 120 s (with jitter) by default: long enough for a rate limit to reset, another
    partition's load to finish or a network blip to pass; ``$FANTASY_KG_RETRY_DELAY_SECONDS``
    and ``$FANTASY_KG_RETRY_MAX`` change it when the code location loads.
    """
    return dg.RetryPolicy(
        max_retries=int(_env_number(RETRY_MAX_ENV, 3)),
        delay=_env_number(RETRY_DELAY_ENV, 30.0),
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )


@contextmanager
def user_errors_as_failures() -> Iterator[None]:
    """Re-raise any ``UserError`` inside the block as a ``dg.Failure``.

    The Failure allows retries exactly when the error is transient (``retryable``).
    """
    try:
        yield
    except UserError as exc:
        raise dg.Failure(
            description=exc.message,
            metadata={"error": type(exc).__name__, "retryable": exc.retryable},
            allow_retries=exc.retryable,
        ) from exc
