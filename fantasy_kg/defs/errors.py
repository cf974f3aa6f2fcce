"""Show user mistakes in Dagster as one clear line, not as a Python traceback.

The CLI prints a :class:`~fantasy_kg.domain.errors.UserError` as one line and exits 2; in Dagster
the same error becomes a :class:`dagster.Failure` whose description is that line, so the run page
says what is wrong, where and how to fix it (a missing key, an unknown model, a budget cap hit).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from fantasy_kg.domain.errors import UserError


@contextmanager
def user_errors_as_failures() -> Iterator[None]:
    """Re-raise any ``UserError`` inside the block as a non-retryable ``dg.Failure``."""
    try:
        yield
    except UserError as exc:
        raise dg.Failure(
            description=exc.message,
            metadata={"error": type(exc).__name__},
            allow_retries=False,
        ) from exc
