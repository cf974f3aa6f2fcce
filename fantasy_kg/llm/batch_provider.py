"""``AnthropicBatchProvider``: the guide's batch client, made crash-safe and complete.

A facade over submission, reconciliation, status, results (with release) and follow-ups, which
share one :class:`BatchContext`. The guide's workflow and what the client guarantees:
docs/architecture.md, "The batch client".
"""

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from anthropic import AsyncAnthropic
from pydantic import BaseModel

from fantasy_kg.domain.pricing import Cost
from fantasy_kg.domain.schemas import ExtractionResult
from fantasy_kg.llm.backend import make_async_client, resolve_backend
from fantasy_kg.llm.batch_context import (
    DEFAULT_TIMEOUT,
    GUIDE_JOBS_DIR,
    BatchContext,
    BatchResultItem,
)
from fantasy_kg.llm.batch_errors import BatchNotEndedError, ResultsArchivedError
from fantasy_kg.llm.batch_results import ResultProcessor
from fantasy_kg.llm.batch_status import StatusTracker
from fantasy_kg.llm.followups import FollowUps
from fantasy_kg.llm.jobs import JobRecord, JobStore
from fantasy_kg.llm.ownership import dedicated_workspace_from_env
from fantasy_kg.llm.reconcile import Reconciler
from fantasy_kg.llm.release import Releaser
from fantasy_kg.llm.requests import MAX_BATCH_BYTES, MAX_REQUESTS_PER_BATCH, PreparedRequest
from fantasy_kg.llm.submission import SubmitOptions, Submitter


class AnthropicBatchProvider:
    """The guide's Message Batches client over the official ``anthropic`` SDK.

    Args:
        api_key: Anthropic API key; ``None`` reads ``ANTHROPIC_API_KEY`` (or, with no key at all,
            uses the embedded local backend; see :mod:`fantasy_kg.llm.backend`). Never stored.
        jobs_dir: Folder of job files. The guide's default ``data/batch_jobs`` follows
            ``$FANTASY_KG_DATA_DIR``.
        base_url: API base URL (``ANTHROPIC_BASE_URL`` when ``None``).
        client: A ready ``AsyncAnthropic`` (tests, custom transports); overrides the above.
        max_retries: SDK retries for idempotent calls (retrieve, list, results). Create always
            runs with SDK retries off and is retried here, after reconciliation.
        timeout: Per-request timeout in seconds.
        create_attempts: How many create calls one submission may make.
        max_attempts: Batches per section before retryable failures stay recorded (the first
            submission is attempt 1, its follow-up attempt 2).
        backend: ``anthropic`` | ``local`` | ``auto`` (recorded in job files; ``auto`` decides
            by whether a key is configured).
        retry_base_delay: First backoff delay in seconds (tests make it small).
        max_batch_requests: Requests per batch before splitting (API limit 100,000).
        max_batch_bytes: Body bytes per batch before splitting (API limit 256 MB).
        late_create_grace: With a dedicated workspace: after a create timed out and was made
            again, how long (seconds) the submission keeps looking for the timed-out request's
            batch to cancel it.
        dedicated_workspace: The workspace holds only this project's batches from this jobs
            folder, so a batch of a manifest's size created in the window of a failed create may
            be canceled as a late duplicate without proof (saves its cost; cancels anybody
            else's batch that matches). ``None`` reads ``FANTASY_KG_DEDICATED_WORKSPACE``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        jobs_dir: str | Path = GUIDE_JOBS_DIR,
        *,
        base_url: str | None = None,
        client: AsyncAnthropic | None = None,
        max_retries: int = 3,
        timeout: float = DEFAULT_TIMEOUT,
        create_attempts: int = 4,
        max_attempts: int = 2,
        backend: str = "auto",
        retry_base_delay: float = 1.0,
        max_batch_requests: int = MAX_REQUESTS_PER_BATCH,
        max_batch_bytes: int = MAX_BATCH_BYTES - 64 * 1024,
        late_create_grace: float = 30.0,
        dedicated_workspace: bool | None = None,
    ) -> None:
        store = JobStore(None if str(jobs_dir) == GUIDE_JOBS_DIR else Path(jobs_dir))
        if dedicated_workspace is None:
            dedicated_workspace = dedicated_workspace_from_env()
        if client is not None:
            resolved_backend = backend if backend != "auto" else "anthropic"
        else:
            resolved = resolve_backend(backend, api_key=api_key, base_url=base_url)
            resolved_backend = resolved.name
            client = make_async_client(resolved, max_retries=max_retries, timeout=timeout)
        self.ctx = BatchContext(
            client=client,
            create_client=client.with_options(max_retries=0),
            store=store,
            backend=resolved_backend,
            timeout=timeout,
            create_attempts=max(1, create_attempts),
            max_attempts=max(1, max_attempts),
            retry_base_delay=retry_base_delay,
            max_batch_requests=max_batch_requests,
            max_batch_bytes=max_batch_bytes,
            late_create_grace=late_create_grace,
            dedicated_workspace=dedicated_workspace,
        )
        reconciler = Reconciler(self.ctx)
        self._submitter = Submitter(self.ctx, reconciler)
        self._status = StatusTracker(self.ctx, reconciler)
        self._results = ResultProcessor(self.ctx, self._status, Releaser(self.ctx, self._submitter))
        self._followups = FollowUps(self.ctx, self._submitter)

    @property
    def client(self) -> AsyncAnthropic:
        """The SDK client (SDK retries on; creates go through a copy with retries off)."""
        return self.ctx.client

    @property
    def store(self) -> JobStore:
        """Job files, intents and payloads."""
        return self.ctx.store

    @property
    def backend(self) -> str:
        """``anthropic`` or ``local``, as recorded in job files."""
        return self.ctx.backend

    @property
    def jobs_dir(self) -> Path:
        """Where job files are written."""
        return self.ctx.store.root

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.ctx.client.close()

    async def __aenter__(self) -> "AnthropicBatchProvider":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Create

    async def create_batch(
        self,
        requests: Sequence[dict[str, Any] | PreparedRequest],
        output_dir: str | Path,
        model: str,
        series_name: str | None = None,
        **options: Any,
    ) -> JobRecord:
        """Submit ``requests`` as one batch (the guide's method) and return its job record.

        Pre-flight runs first; nothing is sent if any request would be rejected. When the
        requests exceed 100,000 or 256 MB they go out as several batches: the first job is
        returned and lists the others in ``sibling_batch_ids`` (use :meth:`create_batches` to get
        them all). Re-submitting the same manifest reuses its batch.

        Raises:
            PreflightError: a request would be rejected (names the section and why).
            ConfigError: unknown model or bad credentials.
        """
        jobs = await self.create_batches(requests, output_dir, model, series_name, **options)
        return jobs[0]

    async def create_batches(
        self,
        requests: Sequence[dict[str, Any] | PreparedRequest],
        output_dir: str | Path,
        model: str,
        series_name: str | None = None,
        *,
        series: str | None = None,
        parent_batch_id: str | None = None,
        attempt: int = 1,
        force_new: bool = False,
        estimated_cost: Cost | None = None,
    ) -> list[JobRecord]:
        """Like :meth:`create_batch`, returning every batch the requests were split into.

        Args:
            requests: Guide-style dicts or :class:`PreparedRequest` objects.
            output_dir: Where ``<custom_id>_extracted.json`` files go.
            model: Model id or alias.
            series_name: Display name of the series (the guide's argument).
            series: Series slug (derived from the requests' metadata or ``series_name``).
            parent_batch_id: For follow-up batches: the batch whose failures they retry.
            attempt: Attempt number (1 for a first submission).
            force_new: Submit even if the same manifest already has a settled batch (used to
                resubmit archived or permanently failed sections on purpose).
            estimated_cost: Pre-flight estimate to store beside the actual cost.
        """
        options = SubmitOptions(
            series=series,
            parent_batch_id=parent_batch_id,
            attempt=attempt,
            force_new=force_new,
            estimated_cost=estimated_cost,
        )
        return await self._submitter.create_batches(
            requests, output_dir, model, series_name, options
        )

    # Status

    def _load_job(self, batch_id: str) -> JobRecord:
        """Read the job file of ``batch_id`` (the guide's helper; also indexable like a dict)."""
        return self.ctx.store.load(batch_id)

    async def get_batch_status(self, batch_id: str) -> JobRecord:
        """Ask the server for the batch's status and update its job file.

        Works for a batch this process did not create (job file from another process); for a
        batch with no job file, a transient record is returned and nothing is written.
        """
        return await self._status.get_batch_status(batch_id)

    async def poll_until_complete(
        self,
        batch_id: str,
        poll_interval_seconds: float = 60,
        max_wait_hours: float = 24.0,
        *,
        on_update: Callable[[JobRecord], Awaitable[None] | None] | None = None,
    ) -> JobRecord:
        """Poll until the batch has ended; return the final job record.

        Ended does not mean succeeded: process the results to see what each request became.

        Raises:
            TimeoutError: still not ended after ``max_wait_hours`` (the batch keeps running; poll
                again or retrieve later from any process).
        """
        return await self._status.poll_until_complete(
            batch_id, poll_interval_seconds, max_wait_hours, on_update
        )

    async def cancel_batch(self, batch_id: str) -> JobRecord:
        """Ask the server to cancel the batch; not-yet-run requests end as ``canceled``."""
        return await self._status.cancel_batch(batch_id)

    # Results

    async def retrieve_results(self, batch_id: str) -> list[BatchResultItem]:
        """Download every result line of an ended batch, deduplicated by custom_id.

        Lines come back under the custom_ids the caller built the requests with: the submission
        nonce added on the wire is taken off again (per the job file, when there is one).
        """
        return await self._results.retrieve_results(batch_id)

    async def process_results_to_files(
        self,
        batch_id: str,
        schema: type[BaseModel] = ExtractionResult,
        *,
        reprocess: bool = False,
    ) -> dict[str, Any]:
        """Turn every result of an ended batch into a result file or a recorded failure.

        Idempotent: after a crash mid-download, running it again rewrites the same files and
        counts each custom_id once; once a batch is processed, calling it again returns the
        stored summary without downloading anything (``reprocess=True`` downloads again).

        Returns:
            ``processed`` (result files written), ``failed`` (failures recorded), ``usage``
            (:class:`TokenUsage`, ``.total_tokens``), ``files_written`` (paths), plus
            ``batch_id``, ``submitted``, ``parts_written``, ``split``, ``retryable``, ``counts``
            (:class:`ResultCounts`), ``cost`` (batch and real-time USD), ``failures`` (records)
            and ``followup_needed``.

        Raises:
            BatchNotEndedError: the batch is still running.
            ResultsArchivedError: results past retention; every request is recorded as an
                ``archived`` failure first, and :meth:`resubmit_archived` sends them again.
        """
        return await self._results.process_results_to_files(batch_id, schema, reprocess)

    # Follow-ups and resubmission

    async def create_followup(self, batch_id: str) -> JobRecord | None:
        """Submit ONE follow-up batch with only the retryable failures of ``batch_id``.

        Retryable: errored other than ``invalid_request_error``, expired, canceled, missing, and
        the two halves of each truncated section. Exactly-once like any submission: calling it
        again (after a crash, from another process) returns the same follow-up.

        Returns:
            The follow-up job, or ``None`` when there is nothing to retry or the attempt limit is
            reached.
        """
        return await self._followups.create_followup(batch_id)

    async def resubmit_archived(self, batch_id: str) -> JobRecord | None:
        """Send again the requests of an archived batch that never got a result file."""
        return await self._followups.resubmit_archived(batch_id)


__all__ = [
    "AnthropicBatchProvider",
    "BatchContext",
    "BatchNotEndedError",
    "BatchResultItem",
    "ResultsArchivedError",
]
