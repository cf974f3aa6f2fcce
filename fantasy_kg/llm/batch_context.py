"""What every part of the batch client shares: its settings, clients and job store.

The provider builds one :class:`BatchContext` and hands it to its collaborators (submission,
reconciliation, status, results, follow-ups), so none of them needs a long parameter list or a
reference back to the provider.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from anthropic import AsyncAnthropic

from fantasy_kg.llm.jobs import BatchResultType, JobStore

GUIDE_JOBS_DIR = "data/batch_jobs"
#: Seconds of clock skew tolerated when matching a server ``created_at`` to a local window.
CLOCK_SKEW = timedelta(seconds=120)
DEFAULT_TIMEOUT = 600.0
RESULTS_REFETCHES = 4
#: Extra list calls (with backoff) after a failed create that may land late, before creating again.
RECONCILE_RETRIES = 2
#: How long after the failed create call's timeout status, poll, retrieve and re-runs look for
#: a late batch: a request the server is still working on when the client gives up lands within
#: moments, not an hour later.
LATE_CREATE_GRACE = timedelta(seconds=120)
#: Seconds between list calls while a submission watches for a timed-out create to land.
LATE_SWEEP_INTERVAL = 0.5
MAX_SPLIT_ROUNDS = 4
"""Rounds of halving a cut answer may take beyond ``max_attempts`` (a section down to 1/16 of its
size at the deepest), so a dense section still ends as a result, never as a lost good half."""


@dataclass
class BatchContext:
    """Settings, clients and job store shared by the batch client's parts.

    Attributes:
        client: The SDK client for idempotent calls (retrieve, list, results), SDK retries on.
        create_client: The same client with SDK retries off, for ``batches.create`` only.
        store: Job files, intents and payloads.
        backend: ``anthropic`` or ``local`` (recorded in job files).
        timeout: Per-request timeout in seconds.
        create_attempts: How many create calls one submission may make.
        max_attempts: Batches per section before retryable failures stay recorded.
        retry_base_delay: First backoff delay in seconds.
        max_batch_requests: Requests per batch before splitting.
        max_batch_bytes: Body bytes per batch before splitting.
        late_create_grace: Seconds a submission watches for a timed-out create's batch.
        dedicated_workspace: Whether unproven late duplicates may be canceled.
    """

    client: AsyncAnthropic
    create_client: AsyncAnthropic
    store: JobStore
    backend: str
    timeout: float
    create_attempts: int
    max_attempts: int
    retry_base_delay: float
    max_batch_requests: int
    max_batch_bytes: int
    late_create_grace: float
    dedicated_workspace: bool


@dataclass
class BatchResultItem:
    """One line of a batch's results, joined on ``custom_id``.

    Attributes:
        custom_id: The request it answers.
        result_type: succeeded, errored, canceled or expired.
        message: The SDK ``Message`` for succeeded lines.
        error: The ``ErrorResponse`` for errored lines.
    """

    custom_id: str
    result_type: BatchResultType
    message: Any = None
    error: Any = None


def as_datetime(value: Any) -> datetime | None:
    """A server or job-file timestamp as a ``datetime`` (``None`` when absent or unreadable)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
