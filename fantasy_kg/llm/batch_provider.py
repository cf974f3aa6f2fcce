"""``AnthropicBatchProvider``: the guide's batch client, made crash-safe and complete.

The guide's workflow keeps working with only the imports changed::

    provider = AnthropicBatchProvider(jobs_dir="data/batch_jobs")
    job = await provider.create_batch(requests, output_dir, model, series_name="Oz")
    await provider.poll_until_complete(job.id, poll_interval_seconds=60)
    summary = await provider.process_results_to_files(job.id, ExtractionResult)

What it adds:

* **Exactly-once submission** (design invariant 1). The API has no idempotency key and the SDK
  retries a failed ``POST /v1/messages/batches`` by itself, so: an intent record goes to disk
  first, create runs with SDK retries off, the batch id is persisted at once, and after an
  ambiguous failure (timeout, dropped connection, 5xx/529) the server's batch list is searched for
  a batch created inside the submission window with the same request count before anything is
  sent again. A re-run with the same manifest reuses the existing job or reconciles a ``pending``
  intent; a crash at any point followed by a re-run submits nothing twice.
* **Only batches proven ours** (design invariant 9). The workspace is shared, and a batch
  object says nothing about who made it, so every custom_id sent carries the submission's random
  nonce (:mod:`fantasy_kg.llm.ownership`). A batch found by reconciliation is adopted only
  provisionally: once it has ended, its results' custom_ids are checked; if they are not this
  submission's, the batch is *released* (nothing of it is written or counted, its job file is
  marked ``released`` and ignored from then on) and its sections are submitted again, once.
* **Late creates.** A create that timed out may still be carried out by the server after the
  client gave up, and after the retry created the batch again. Until the failed call's timeout
  plus :data:`LATE_CREATE_GRACE` has passed, status, poll, retrieve and re-runs look for such a
  batch (inside the submission window, the manifest's request count, claimed by no job file or
  intent). While it runs nothing can prove it is ours, so by default it is left alone and
  reported (``unproven_candidates`` in the job file, a warning in the log). Only with a
  dedicated workspace (``dedicated_workspace=True``, ``--dedicated-workspace``,
  ``FANTASY_KG_DEDICATED_WORKSPACE=1``) is it canceled while queued, which bills nothing
  (reference §10: "If a duplicate is found, cancel() it"), at the risk of canceling someone
  else's batch of the same size.
* **Every result handled** (invariant 2): see :mod:`fantasy_kg.llm.results`. Truncated answers are
  split in two and resubmitted, retryable failures go into one follow-up batch
  (:meth:`AnthropicBatchProvider.create_followup`), and at the end
  ``submitted == written + parts + failed + split`` holds for every batch.
* **Usage and cost** per request and per batch, at the batch rate with the real-time price beside
  it, in the job file.
"""

import asyncio
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
from anthropic import AsyncAnthropic
from pydantic import BaseModel

from fantasy_kg.domain import paths
from fantasy_kg.domain.catalog import get_model
from fantasy_kg.domain.errors import ConfigError, PreflightError, TransientError, UserError
from fantasy_kg.domain.failpoints import failpoint
from fantasy_kg.domain.pricing import Cost, TokenUsage
from fantasy_kg.domain.schemas import ExtractionResult
from fantasy_kg.llm.backend import unreachable_message
from fantasy_kg.llm.jobs import (
    BatchProcessingStatus,
    BatchResultType,
    FailureRecord,
    InputRef,
    IntentRecord,
    JobRecord,
    JobStore,
    RequestUsage,
    ResultCounts,
    UnprovenCandidate,
    manifest_hash,
    utcnow,
)
from fantasy_kg.llm.ownership import (
    dedicated_workspace_from_env,
    new_nonce,
    proves_ownership,
    wire_ids,
)
from fantasy_kg.llm.requests import (
    MAX_BATCH_BYTES,
    MAX_REQUESTS_PER_BATCH,
    PreparedRequest,
    RequestMeta,
    as_prepared,
    half_custom_id,
    preflight,
    split_request,
)
from fantasy_kg.llm.results import (
    Provenance,
    cost_of,
    interpret_error,
    interpret_message,
    not_run_failure,
    part_path,
    record_split,
    result_path,
    try_merge,
    write_failure,
    write_result,
)

logger = logging.getLogger(__name__)

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
#: Transport errors raised before the request left the client: the server never saw it.
MAX_SPLIT_ROUNDS = 4
"""Rounds of halving a cut answer may take beyond ``max_attempts`` (a section down to 1/16 of its
size at the deepest), so a dense section still ends as a result, never as a lost good half."""

_NOT_SENT_ERRORS = ("ConnectError", "ConnectTimeout", "PoolTimeout")


class ResultsArchivedError(UserError):
    """The batch's results are past the 29-day retention and cannot be downloaded anymore."""


class BatchNotEndedError(UserError):
    """Results were asked for before the batch ended."""


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


def _ambiguous(exc: BaseException) -> bool:
    """Whether a failed create may nevertheless have created the batch on the server."""
    if isinstance(exc, anthropic.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, anthropic.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in (408, 409)
    return False


def _never_sent(exc: BaseException) -> bool:
    """Whether the request never reached the server: no connection could be made at all."""
    return (
        isinstance(exc, anthropic.APIConnectionError)
        and type(exc.__cause__).__name__ in _NOT_SENT_ERRORS
    )


def _may_land_late(exc: BaseException) -> bool:
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


def _still_working(exc: BaseException) -> bool:
    """Whether the server was demonstrably still working on the request when the client quit.

    A read timeout (or a gateway timeout) means exactly that, so the batch may appear any moment:
    the submission waits for it instead of leaving it to a later call.
    """
    if isinstance(exc, anthropic.APITimeoutError):
        return type(exc.__cause__).__name__ not in _NOT_SENT_ERRORS
    if isinstance(exc, anthropic.APIStatusError):
        return exc.status_code in (408, 504)
    return False


def _retry_after(exc: anthropic.APIStatusError) -> float | None:
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


def _error_code(exc: anthropic.APIStatusError) -> str:
    """``error.details.error_code`` of an API error (e.g. ``enforced_spend_limit_reached``)."""
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body)
    details = inner.get("details") if isinstance(inner, dict) else None
    code = details.get("error_code") if isinstance(details, dict) else None
    return str(code or "")


def _is_cut_stream(exc: Exception) -> bool:
    """Whether a results download failed in a way that fetching again can fix.

    Besides the SDK's connection and status errors, httpx2 transport errors (RemoteProtocolError,
    ReadError) escape the SDK's exception mapping when raised mid-iteration of the JSONL stream.
    """
    if isinstance(exc, anthropic.APIConnectionError | anthropic.APIStatusError | OSError):
        return True
    return type(exc).__module__.split(".")[0] in ("httpx2", "httpx", "httpcore", "h11")


def _backoff(attempt: int, base: float) -> float:
    return float(min(base * 2**attempt, 60.0) * (1 - 0.25 * random.random()))


def _as_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _could_own(other: IntentRecord, created: datetime) -> bool:
    """Whether a batch created at ``created`` may belong to another submission ``other``.

    ``other`` is in flight or crashed (pending) or may itself have a late create: any batch of its
    size created after its window opened (until its own ``watch_until``) could be its own.
    """
    start = _as_datetime(other.window_start)
    if start is None or created < start - CLOCK_SKEW:
        return False
    if other.state == "pending":
        return True
    until = _as_datetime(other.watch_until)
    return until is not None and created <= until + CLOCK_SKEW


async def _replay(items: Sequence["BatchResultItem"]) -> AsyncIterator["BatchResultItem"]:
    """Yield already downloaded result lines again (after they proved the batch ours)."""
    for item in items:
        yield item


def _describe_status_error(exc: anthropic.APIStatusError) -> str:
    """One line about an HTTP error (the SDK message carries the API's, never the key)."""
    msg = str(getattr(exc, "message", "") or exc).splitlines()[0]
    return f"HTTP {exc.status_code}: {msg[:300]}"


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
        from fantasy_kg.llm.backend import make_async_client, resolve_backend

        self.store = JobStore(None if str(jobs_dir) == GUIDE_JOBS_DIR else Path(jobs_dir))
        self.timeout = timeout
        self.create_attempts = max(1, create_attempts)
        self.max_attempts = max(1, max_attempts)
        self._last_list_error: BaseException | None = None
        self.retry_base_delay = retry_base_delay
        self.max_batch_requests = max_batch_requests
        self.max_batch_bytes = max_batch_bytes
        self.late_create_grace = late_create_grace
        self.dedicated_workspace = (
            dedicated_workspace_from_env() if dedicated_workspace is None else dedicated_workspace
        )
        if client is not None:
            self.client = client
            self.backend = backend if backend != "auto" else "anthropic"
        else:
            resolved = resolve_backend(backend, api_key=api_key, base_url=base_url)
            self.backend = resolved.name
            self.client = make_async_client(resolved, max_retries=max_retries, timeout=timeout)
        self._create_client = self.client.with_options(max_retries=0)

    @property
    def jobs_dir(self) -> Path:
        """Where job files are written."""
        return self.store.root

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.close()

    async def __aenter__(self) -> "AnthropicBatchProvider":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ======================================================================================
    # Create
    # ======================================================================================

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
        info = get_model(model)
        prepared = as_prepared(requests)
        report = preflight(
            prepared,
            info.id,
            max_requests=self.max_batch_requests,
            max_bytes=self.max_batch_bytes,
        )
        for warning in report.warnings:
            logger.warning("pre-flight: %s", warning)
        out_dir = Path(output_dir).expanduser().resolve()
        slug = series or next((r.meta.series for r in prepared if r.meta.series), "")
        if not slug and series_name:
            slug = paths.slugify(series_name)
        jobs: list[JobRecord] = []
        for group_idx in report.batches:
            group = [prepared[i] for i in group_idx]
            share = len(group) / max(1, len(prepared))
            est = estimated_cost or report.estimated_cost
            job = await self._submit_exactly_once(
                group,
                out_dir,
                info.id,
                series_name=series_name,
                series=slug,
                parent_batch_id=parent_batch_id,
                attempt=attempt,
                force_new=force_new,
                estimated_cost=Cost(
                    batch_usd=est.batch_usd * share, realtime_usd=est.realtime_usd * share
                ),
            )
            jobs.append(job)
        if len(jobs) > 1:
            ids = [j.id for j in jobs]
            for job in jobs:
                job.sibling_batch_ids = [i for i in ids if i != job.id]
                self.store.save(job)
        return jobs

    async def _submit_exactly_once(
        self,
        group: list[PreparedRequest],
        output_dir: Path,
        model: str,
        *,
        series_name: str | None,
        series: str,
        parent_batch_id: str | None,
        attempt: int,
        force_new: bool,
        estimated_cost: Cost,
    ) -> JobRecord:
        mhash = manifest_hash(group, model, self.backend)
        with self.store.lock(mhash):
            intent = self.store.load_intent(mhash)
            if intent is not None and intent.state == "created" and intent.batch_id:
                job = await self._job_for_intent(intent, group, output_dir, series_name)
                await self._sweep_late_duplicates(intent, job.id)
                if not (force_new and job.is_ended):
                    logger.info(
                        "manifest %s already submitted as batch %s: reusing it",
                        mhash[:12],
                        job.id,
                    )
                    return job
            if intent is not None and intent.state == "pending":
                persisted = self._persisted_job_for(intent)
                if persisted is not None:
                    intent.state = "created"
                    intent.batch_id = persisted.id
                    self.store.save_intent(intent)
                    logger.info(
                        "manifest %s: job %s was persisted; reusing it", mhash[:12], persisted.id
                    )
                    return persisted
                adopted = await self._reconcile(intent)
                if adopted is not None:
                    logger.warning(
                        "found batch %s created by an interrupted submission of manifest %s: "
                        "adopting it instead of submitting again",
                        adopted.id,
                        mhash[:12],
                    )
                    return self._persist_new_job(
                        adopted,
                        group,
                        output_dir,
                        model,
                        series_name,
                        series,
                        mhash,
                        parent_batch_id,
                        attempt,
                        estimated_cost,
                        intent,
                        reconciled=True,
                    )
                logger.info(
                    "interrupted submission of manifest %s never reached the server: submitting",
                    mhash[:12],
                )
            payload = self.store.write_payloads(mhash, group)
            failpoint("before_intent")
            now = utcnow()
            history = list(intent.history) if intent is not None else []
            if intent is not None and intent.state in ("created", "done") and intent.batch_id:
                history.append({"batch_id": intent.batch_id, "state": intent.state})
            # What an interrupted submission left to watch for stays watched (and its canceled
            # duplicates stay claimed, so no reconciliation ever adopts one). An interrupted or
            # released submission keeps its nonce: a create of it that lands late is still ours.
            interrupted = intent is not None and intent.state == "pending"
            continued = intent is not None and intent.state in ("pending", "released")
            intent = IntentRecord(
                nonce=intent.nonce if continued and intent and intent.nonce else new_nonce(),
                released_batch_ids=list(intent.released_batch_ids) if intent else [],
                unproven_batch_ids=list(intent.unproven_batch_ids) if intent else [],
                late_possible=intent.late_possible if interrupted and intent else 0,
                watch_until=intent.watch_until if interrupted and intent else None,
                duplicate_batch_ids=list(intent.duplicate_batch_ids) if intent else [],
                manifest_hash=mhash,
                custom_ids=[r.custom_id for r in group],
                model=model,
                series=series,
                request_count=len(group),
                window_start=now.isoformat(),
                state="pending",
                output_dir=str(output_dir),
                parent_batch_id=parent_batch_id,
                attempt=attempt,
                history=history,
                payload_file=str(payload),
            )
            self.store.save_intent(intent)
            batch, reconciled, watch_until = await self._create_with_reconcile(group, intent)
            failpoint("after_create")
            job = self._persist_new_job(
                batch,
                group,
                output_dir,
                model,
                series_name,
                series,
                mhash,
                parent_batch_id,
                attempt,
                estimated_cost,
                intent,
                reconciled=reconciled,
            )
            if watch_until is not None and intent.late_possible > 0:
                await self._watch_for_late_create(intent, job.id, watch_until)
                if intent.duplicate_batch_ids or intent.unproven_batch_ids:
                    job = self.store.load(job.id)
            return job

    async def _watch_for_late_create(
        self, intent: IntentRecord, keep_id: str, until: datetime
    ) -> None:
        """Look for the batch of a timed-out create until it shows up or ``until`` passes.

        The server was still working on that request when the client gave up, so its batch may
        appear any moment, next to the one just created. Caught while it is queued, a cancel
        bills nothing; later calls keep looking (see :meth:`_sweep_late_duplicates`). Without a
        dedicated workspace nothing found could be canceled, so one look (to report) is all.
        """
        if not self.dedicated_workspace:
            await self._sweep_late_duplicates(intent, keep_id)
            return
        logger.warning(
            "a create of manifest %s timed out and may still land: watching for its batch for up "
            "to %.0f s to cancel it",
            intent.manifest_hash[:12],
            max(0.0, (until - utcnow()).total_seconds()),
        )
        while True:
            await self._sweep_late_duplicates(intent, keep_id)
            if intent.late_possible <= 0 or utcnow() >= until:
                return
            await asyncio.sleep(LATE_SWEEP_INTERVAL)

    def _persist_new_job(
        self,
        batch: Any,
        group: list[PreparedRequest],
        output_dir: Path,
        model: str,
        series_name: str | None,
        series: str,
        mhash: str,
        parent_batch_id: str | None,
        attempt: int,
        estimated_cost: Cost,
        intent: IntentRecord,
        *,
        reconciled: bool,
    ) -> JobRecord:
        """Write the job file for a just-created (or adopted) batch, then mark the intent."""
        job = self._new_job_record(
            batch.id,
            group,
            output_dir,
            model,
            series_name,
            series,
            mhash,
            parent_batch_id,
            attempt,
            nonce=intent.nonce,
        )
        job.update_from_batch(batch)
        job.reconciled = reconciled
        job.ownership = "provisional" if reconciled else "created"
        job.estimated_cost = estimated_cost
        # Batches reconciliation saw but could not prove ours, reported in the job file too.
        job.unproven_candidates = [
            UnprovenCandidate(batch_id=bid, request_count=len(group))
            for bid in intent.unproven_batch_ids
        ]
        self.store.save(job)
        failpoint("after_persist")
        intent.state = "created"
        intent.batch_id = batch.id
        intent.provisional = reconciled
        intent.window_end = intent.window_end or utcnow().isoformat()
        self.store.save_intent(intent)
        logger.info(
            "submitted batch %s: %d requests for series %s (attempt %d)",
            job.id,
            len(group),
            series or "-",
            attempt,
        )
        return job

    def _new_job_record(
        self,
        batch_id: str,
        group: list[PreparedRequest],
        output_dir: Path,
        model: str,
        series_name: str | None,
        series: str,
        mhash: str,
        parent_batch_id: str | None,
        attempt: int,
        *,
        nonce: str = "",
    ) -> JobRecord:
        mapping: dict[str, str] = {}
        for req in group:
            as_part = bool(req.meta.split_of)
            dest = (
                part_path(output_dir, req.custom_id)
                if as_part
                else result_path(output_dir, req.custom_id)
            )
            mapping[req.custom_id] = str(dest)
        versions = {r.meta.prompt_version for r in group if r.meta.prompt_version}
        return JobRecord(
            id=batch_id,
            output_dir=str(output_dir),
            model=model,
            series_name=series_name,
            series=series,
            backend=self.backend,
            manifest_hash=mhash,
            payload_file=str(self.store.payload_path(mhash)),
            prompt_version=versions.pop() if len(versions) == 1 else "",
            inputs={r.custom_id: InputRef.from_meta(r.meta) for r in group},
            local_request_mapping=mapping,
            attempt=attempt,
            max_attempts=self.max_attempts,
            parent_batch_id=parent_batch_id,
            submitted_at=utcnow().isoformat(),
            nonce=nonce,
            wire_custom_ids=wire_ids([r.custom_id for r in group], nonce) if nonce else {},
        )

    def _persisted_job_for(self, intent: IntentRecord) -> JobRecord | None:
        """A job file written for this intent's submission whose intent update was lost."""
        start = _as_datetime(intent.window_start)
        for job in self.store.all_jobs():
            if job.manifest_hash != intent.manifest_hash:
                continue
            submitted = _as_datetime(job.submitted_at)
            if start is None or submitted is None or submitted >= start - CLOCK_SKEW:
                return job
        return None

    async def _job_for_intent(
        self,
        intent: IntentRecord,
        group: list[PreparedRequest],
        output_dir: Path,
        series_name: str | None,
    ) -> JobRecord:
        """The job of a ``created`` intent; rebuilt from the server if its file was lost."""
        assert intent.batch_id is not None
        if self.store.exists(intent.batch_id):
            return self.store.load(intent.batch_id)
        batch = await self.client.messages.batches.retrieve(intent.batch_id)
        job = self._new_job_record(
            batch.id,
            group,
            output_dir,
            intent.model,
            series_name,
            intent.series,
            intent.manifest_hash,
            intent.parent_batch_id,
            intent.attempt,
            nonce=intent.nonce,
        )
        job.update_from_batch(batch)
        job.reconciled = intent.provisional
        job.ownership = "provisional" if intent.provisional else "created"
        self.store.save(job)
        return job

    async def _create_with_reconcile(
        self, group: list[PreparedRequest], intent: IntentRecord
    ) -> tuple[Any, bool, datetime | None]:
        """Call create (SDK retries off); after an ambiguous failure, reconcile before retrying.

        Returns:
            The batch, whether it was adopted by reconciliation, and until when the submission
            should watch for the batch of a timed-out create (``None``: no create timed out).
        """
        wire = wire_ids([r.custom_id for r in group], intent.nonce)
        bodies = [{**r.body, "custom_id": wire[r.custom_id]} for r in group]
        last_error: BaseException | None = None
        watch_until: datetime | None = None
        for n in range(self.create_attempts):
            intent.create_attempts += 1
            intent.window_end = None
            self.store.save_intent(intent)
            failpoint("before_create")
            call_started = utcnow()
            try:
                batch = await self._create_client.messages.batches.create(
                    requests=bodies,  # type: ignore[arg-type]  # dict bodies, typed as TypedDicts
                    timeout=self.timeout,
                )
            except anthropic.RateLimitError as exc:
                # A 429 is decided before any work is accepted: nothing was created.
                last_error = exc
                intent.window_end = utcnow().isoformat()
                self.store.save_intent(intent)
                delay = _retry_after(exc)
                code = _error_code(exc)
                if delay is None and code.endswith("spend_limit_reached"):
                    # A spend cap keeps failing until access resumes: retrying only burns time.
                    raise UserError(
                        f"the API spend limit is reached ({code}; {_describe_status_error(exc)}); "
                        "nothing was created: raise the limit or wait for it to reset, then "
                        "re-run the same command to resume"
                    ) from None
                delay = delay if delay is not None else _backoff(n, self.retry_base_delay)
                logger.warning("batch create rate-limited (429); retrying in %.1f s", delay)
                await asyncio.sleep(delay)
                continue
            except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
                intent.window_end = utcnow().isoformat()
                self.store.save_intent(intent)
                if _never_sent(exc):
                    # No connection: nothing reached the server, so nothing to reconcile.
                    last_error = exc
                    await asyncio.sleep(_backoff(n, self.retry_base_delay))
                    continue
                if not _ambiguous(exc):
                    intent.state = "failed"
                    self.store.save_intent(intent)
                    raise self._definitive_error(exc) from None
                last_error = exc
                what = (
                    _describe_status_error(exc)
                    if isinstance(exc, anthropic.APIStatusError)
                    else type(exc).__name__
                )
                logger.warning("batch create failed ambiguously (%s): reconciling", what)
                late = _may_land_late(exc)
                call = (call_started, utcnow())
                if late:
                    intent.late_possible += 1
                    # The server may still act on the request until the call's timeout has run
                    # out (plus a grace for queues and clocks), not later.
                    timed_out = call_started + timedelta(seconds=self.timeout)
                    until = max(timed_out, call[1]) + LATE_CREATE_GRACE
                    previous = _as_datetime(intent.watch_until)
                    intent.watch_until = max(until, previous or until).isoformat()
                    self.store.save_intent(intent)
                    if _still_working(exc):
                        watch_until = utcnow() + timedelta(seconds=self.late_create_grace)
                adopted = await self._reconcile(intent, call)
                # The request may still be on its way to the server: look again before creating.
                for k in range(RECONCILE_RETRIES if late else 0):
                    if adopted is not None:
                        break
                    await asyncio.sleep(_backoff(k, self.retry_base_delay))
                    adopted = await self._reconcile(intent, call)
                if adopted is None and watch_until is not None and not self.dedicated_workspace:
                    # The server was still working on it. A second create could not be undone
                    # (nothing proves a running batch ours, so nothing is canceled): wait for the
                    # first to land instead, up to the grace, then adopt it provisionally.
                    adopted = await self._await_late_create(intent, call, watch_until)
                    watch_until = None
                if adopted is not None:
                    logger.warning(
                        "the server may have accepted the batch despite the error: adopting %s "
                        "provisionally (its results must prove it ours before any is used)",
                        adopted.id,
                    )
                    return adopted, True, watch_until
                if not late:
                    delay = _retry_after(exc) if isinstance(exc, anthropic.APIStatusError) else None
                    delay = delay if delay is not None else _backoff(n, self.retry_base_delay)
                    await asyncio.sleep(delay)
                continue
            intent.window_end = utcnow().isoformat()
            return batch, False, watch_until
        intent.state = "pending"
        self.store.save_intent(intent)
        if last_error is not None and _never_sent(last_error):
            raise TransientError(unreachable_message(str(self.client.base_url), last_error))
        raise TransientError(
            f"could not create the batch after {self.create_attempts} attempts "
            f"({type(last_error).__name__}); nothing was submitted twice: re-run the same "
            "command to reconcile and retry"
        )

    async def _await_late_create(
        self, intent: IntentRecord, call: tuple[datetime, datetime], until: datetime
    ) -> Any | None:
        """Reconcile every :data:`LATE_SWEEP_INTERVAL` until a batch shows up or ``until``."""
        logger.warning(
            "a create of manifest %s timed out while the server was working on it: waiting up "
            "to %.0f s for its batch before creating again",
            intent.manifest_hash[:12],
            max(0.0, (until - utcnow()).total_seconds()),
        )
        while utcnow() < until:
            await asyncio.sleep(LATE_SWEEP_INTERVAL)
            adopted = await self._reconcile(intent, call)
            if adopted is not None:
                return adopted
        return None

    def _definitive_error(self, exc: BaseException) -> UserError:
        if isinstance(exc, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
            return ConfigError(
                f"the API refused the credentials ({_describe_status_error(exc)}): check "
                "ANTHROPIC_API_KEY"
            )
        if isinstance(exc, anthropic.APIStatusError):
            return PreflightError(
                f"the API rejected the batch ({_describe_status_error(exc)}); nothing was created"
            )
        return TransientError(f"batch create failed: {type(exc).__name__}")

    async def _reconcile(
        self, intent: IntentRecord, call: tuple[datetime, datetime] | None = None
    ) -> Any | None:
        """Find a batch the server may have created for ``intent`` and adopt it provisionally.

        The client never learned the batch's id; once it has ended it is proven or released.

        Lists batches newest first and keeps those created inside the submission window (with
        :data:`CLOCK_SKEW` either side) whose request count equals the manifest's and which no job
        file or intent already claims. Nothing on a running batch shows whose it is, so one
        candidate is adopted provisionally: the one created during the failed call ``call`` (when
        given), else the oldest. The others are left alone and reported as unproven; only with a
        dedicated workspace are they canceled as duplicates.
        """
        start = _as_datetime(intent.window_start)
        if start is None:
            return None
        end_raw = _as_datetime(intent.window_end)
        end = (end_raw or start + timedelta(seconds=self.timeout)) + CLOCK_SKEW
        lower = start - CLOCK_SKEW
        candidates = await self._list_candidates(intent, lower, end, self._claimed_batch_ids())
        if candidates is None:
            failed = self._last_list_error
            if failed is not None and _never_sent(failed):
                raise TransientError(unreachable_message(str(self.client.base_url), failed))
            raise TransientError(
                "cannot list batches to reconcile an interrupted submission: re-run later; "
                "nothing will be submitted until the list succeeds"
            )
        if not candidates:
            return None

        def rank(batch: Any) -> tuple[float, datetime, str]:
            created = _as_datetime(batch.created_at) or start
            if call is None:
                return (0.0, created, batch.id)
            # Distance (s) from the failed call: a batch created while it ran is likeliest ours.
            before = (call[0] - created).total_seconds()
            after = (created - call[1]).total_seconds()
            return (max(0.0, before, after), created, batch.id)

        candidates.sort(key=rank)
        keep, others = candidates[0], candidates[1:]
        if self.dedicated_workspace:
            intent.late_possible = max(0, intent.late_possible - len(candidates))
            await self._cancel_duplicates(intent, others)
        else:
            # ``keep`` may be someone else's, so a late create may still come: later calls keep
            # looking (to report, never to cancel) until the window closes.
            self._note_unproven(intent, others, keep.id)
        return keep

    async def _list_candidates(
        self, intent: IntentRecord, lower: datetime, upper: datetime, claimed: set[str]
    ) -> list[Any] | None:
        """Unclaimed batches of ``intent``'s size created in ``[lower, upper]``.

        Returns ``None`` when the list call failed.
        """
        found = []
        try:
            async for batch in self.client.messages.batches.list(limit=100):
                created = _as_datetime(batch.created_at)
                if created is None:
                    continue
                if created < lower:
                    break
                if created > upper or batch.id in claimed:
                    continue
                if sum(batch.request_counts.model_dump().values()) == intent.request_count:
                    found.append(batch)
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            self._last_list_error = exc
            logger.warning("could not list batches (%s)", type(exc).__name__)
            return None
        return found

    def _note_unproven(self, intent: IntentRecord, batches: Sequence[Any], job_id: str) -> None:
        """Report batches that may be ours or anybody's; touch none of them (invariant 9).

        They are recorded in the intent and in the job file's ``unproven_candidates`` and logged
        once each. Nothing is canceled: the workspace is shared, and a batch of the same size
        created in the same minutes may well be a colleague's.
        """
        new = [b for b in batches if b.id not in intent.unproven_batch_ids]
        if not new:
            return
        for batch in new:
            logger.warning(
                "batch %s (%d requests, created %s) may be a late create of manifest %s or "
                "someone else's batch in this workspace: nothing proves it is ours, so it is "
                "left alone (not canceled, not used); if it is ours it runs and bills once more. "
                "Use --dedicated-workspace to cancel such batches",
                batch.id,
                intent.request_count,
                _as_datetime(batch.created_at),
                intent.manifest_hash[:12],
            )
            intent.unproven_batch_ids.append(batch.id)
        self.store.save_intent(intent)
        if job_id and self.store.exists(job_id):
            job = self.store.load(job_id)
            known = {c.batch_id for c in job.unproven_candidates}
            for batch in new:
                if batch.id not in known:
                    job.unproven_candidates.append(
                        UnprovenCandidate(
                            batch_id=batch.id,
                            created_at=str(_as_datetime(batch.created_at) or "") or None,
                            request_count=intent.request_count,
                        )
                    )
            self.store.save(job)

    def _claimed_batch_ids(self) -> set[str]:
        """Batches that belong to some job file or intent here: never adopted or canceled."""
        claimed = self.store.known_batch_ids()
        for other in self.store.all_intents():
            claimed |= other.claimed_batch_ids()
        return claimed

    async def _cancel_duplicates(self, intent: IntentRecord, dupes: Sequence[Any]) -> None:
        """Cancel batches that repeat ``intent``'s manifest and record them in the intent.

        Only with a dedicated workspace: nothing proves a running batch is ours, and canceling
        someone else's is the one harm this client must never do uninvited.
        """
        if not self.dedicated_workspace:
            self._note_unproven(intent, dupes, intent.batch_id or "")
            return
        for dupe in dupes:
            if str(dupe.processing_status) == BatchProcessingStatus.ENDED.value:
                logger.error(
                    "batch %s duplicates manifest %s and has already ended: its results are "
                    "ignored, but the API bills what it ran",
                    dupe.id,
                    intent.manifest_hash[:12],
                )
            else:
                logger.warning(
                    "dedicated workspace: canceling batch %s as a duplicate of manifest %s",
                    dupe.id,
                    intent.manifest_hash[:12],
                )
                try:
                    await self.client.messages.batches.cancel(dupe.id)
                except anthropic.APIError:
                    logger.warning("could not cancel duplicate batch %s", dupe.id)
            if dupe.id not in intent.duplicate_batch_ids:
                intent.duplicate_batch_ids.append(dupe.id)
        if dupes:
            self.store.save_intent(intent)

    async def _sweep_late_duplicates(self, intent: IntentRecord, keep_id: str) -> None:
        """Look for a batch that an earlier failed create of ``intent`` made after all.

        Runs (caller holds the manifest lock) while the intent counts failed creates that may
        land late and its ``watch_until`` (the failed call's timeout plus a grace) has not
        passed. A candidate is created inside the submission window, has the manifest's request
        count, and is claimed by no job file or intent. Nothing proves a running batch is ours,
        so by default candidates are only reported (:meth:`_note_unproven`). With a dedicated
        workspace they are canceled, except one that another in-flight submission of the same
        size here could own. List errors are only logged: the next status, poll or re-run looks
        again.
        """
        until = _as_datetime(intent.watch_until)
        start = _as_datetime(intent.window_start)
        if intent.late_possible <= 0 or until is None or start is None or utcnow() > until:
            return
        lower, upper = start - CLOCK_SKEW, until + CLOCK_SKEW
        claimed = self._claimed_batch_ids() | {keep_id}
        listed = await self._list_candidates(intent, lower, upper, claimed)
        if listed is None:
            logger.warning("no look for a late create this time: will look again later")
            return
        if not self.dedicated_workspace:
            self._note_unproven(intent, listed, keep_id)
            return
        rivals = [
            other
            for other in self.store.all_intents()
            if other.manifest_hash != intent.manifest_hash
            and other.request_count == intent.request_count
            and (other.state == "pending" or other.late_possible > 0)
        ]
        found = []
        for batch in listed:
            created = _as_datetime(batch.created_at)
            if created is not None and any(_could_own(other, created) for other in rivals):
                logger.warning(
                    "batch %s could be a late create of manifest %s or of another submission "
                    "in flight: left alone for now",
                    batch.id,
                    intent.manifest_hash[:12],
                )
                continue
            found.append(batch)
        if not found:
            return
        intent.late_possible = max(0, intent.late_possible - len(found))
        await self._cancel_duplicates(intent, found)
        if self.store.exists(keep_id):
            job = self.store.load(keep_id)
            job.duplicate_batch_ids = list(
                dict.fromkeys([*job.duplicate_batch_ids, *(b.id for b in found)])
            )
            self.store.save(job)

    # ======================================================================================
    # Status
    # ======================================================================================

    def _load_job(self, batch_id: str) -> JobRecord:
        """Read the job file of ``batch_id`` (the guide's helper; also indexable like a dict)."""
        return self.store.load(batch_id)

    async def get_batch_status(self, batch_id: str) -> JobRecord:
        """Ask the server for the batch's status and update its job file.

        Works for a batch this process did not create (job file from another process); for a
        batch with no job file, a transient record is returned and nothing is written.
        """
        try:
            batch = await self.client.messages.batches.retrieve(batch_id)
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
            raise self._definitive_error(exc) from None
        if self.store.exists(batch_id):
            job = self.store.load(batch_id)
            job.update_from_batch(batch)
            self.store.save(job)
            await self._sweep_for_job(job)
            return job
        job = JobRecord(id=batch.id, output_dir="", model="", backend=self.backend)
        job.update_from_batch(batch)
        return job

    async def _sweep_for_job(self, job: JobRecord) -> None:
        """Look for a late create of ``job``'s manifest if its submission had one pending.

        Skipped when another process holds the manifest lock (it is submitting or sweeping).
        """
        if not job.manifest_hash:
            return
        intent = self.store.load_intent(job.manifest_hash)
        if intent is None or intent.late_possible <= 0 or intent.batch_id != job.id:
            return
        with self.store.lock(job.manifest_hash, blocking=False) as locked:
            if not locked:
                return
            intent = self.store.load_intent(job.manifest_hash)
            if intent is not None and intent.batch_id == job.id:
                await self._sweep_late_duplicates(intent, job.id)
                if intent.duplicate_batch_ids or intent.unproven_batch_ids:
                    saved = self.store.load(job.id)
                    job.duplicate_batch_ids = saved.duplicate_batch_ids
                    job.unproven_candidates = saved.unproven_candidates

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
        deadline = asyncio.get_running_loop().time() + max_wait_hours * 3600
        while True:
            job = await self.get_batch_status(batch_id)
            if on_update is not None:
                maybe = on_update(job)
                if maybe is not None:
                    await maybe
            if job.processing_status == BatchProcessingStatus.ENDED.value:
                return job
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(
                    f"batch {batch_id} is still {job.processing_status} after {max_wait_hours} h"
                )
            await asyncio.sleep(min(poll_interval_seconds, remaining))

    async def cancel_batch(self, batch_id: str) -> JobRecord:
        """Ask the server to cancel the batch; not-yet-run requests end as ``canceled``."""
        batch = await self.client.messages.batches.cancel(batch_id)
        if self.store.exists(batch_id):
            job = self.store.load(batch_id)
            job.update_from_batch(batch)
            self.store.save(job)
            return job
        job = JobRecord(id=batch.id, output_dir="", model="", backend=self.backend)
        job.update_from_batch(batch)
        return job

    # ======================================================================================
    # Results
    # ======================================================================================

    async def _iter_results(self, batch_id: str) -> AsyncIterator[BatchResultItem]:
        """Yield each custom_id's result once, re-downloading when the stream is cut.

        The SDK retries obtaining the response but not a connection that drops mid-stream; the
        download then starts over and lines already seen are skipped (results come in any order,
        so dedupe is by custom_id, not by position).
        """
        seen: set[str] = set()
        for attempt in range(RESULTS_REFETCHES + 1):
            try:
                stream = await self.client.messages.batches.results(batch_id)
                async for line in stream:
                    cid = line.custom_id
                    if cid in seen:
                        continue
                    seen.add(cid)
                    res = line.result
                    rtype = BatchResultType(str(res.type))
                    yield BatchResultItem(
                        custom_id=cid,
                        result_type=rtype,
                        message=getattr(res, "message", None),
                        error=getattr(res, "error", None),
                    )
                return
            except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
                raise self._definitive_error(exc) from None
            except anthropic.NotFoundError as exc:
                raise ResultsArchivedError(
                    f"results of batch {batch_id} are not available ({_describe_status_error(exc)})"
                    "; they are kept 29 days after creation"
                ) from None
            except Exception as exc:
                if not _is_cut_stream(exc):
                    raise
                if attempt >= RESULTS_REFETCHES:
                    raise TransientError(
                        f"results download of batch {batch_id} kept failing "
                        f"({type(exc).__name__}); re-run retrieve later"
                    ) from None
                logger.warning(
                    "results stream of %s cut after %d lines (%s): fetching again",
                    batch_id,
                    len(seen),
                    type(exc).__name__,
                )
                await asyncio.sleep(_backoff(attempt, self.retry_base_delay / 2))

    async def retrieve_results(self, batch_id: str) -> list[BatchResultItem]:
        """Download every result line of an ended batch, deduplicated by custom_id.

        Lines come back under the custom_ids the caller built the requests with: the submission
        nonce added on the wire is taken off again (per the job file, when there is one).
        """
        by_wire = (
            self.store.load(batch_id).sections_by_wire_id() if self.store.exists(batch_id) else {}
        )
        items = [item async for item in self._iter_results(batch_id)]
        for item in items:
            item.custom_id = by_wire.get(item.custom_id, item.custom_id)
        return items

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
        job = self.store.load(batch_id)
        if job.is_released:
            return await self._finish_release(job)
        if job.is_settled and not reprocess:
            return self._stored_summary(job)
        job = await self.get_batch_status(batch_id)
        if not job.is_ended:
            raise BatchNotEndedError(
                f"batch {batch_id} is still {job.processing_status} "
                f"({job.request_counts.processing} processing): poll until it ends"
            )
        if job.archived_at is not None:
            self._record_archived(job)
            raise ResultsArchivedError(self._archived_message(job))
        info = get_model(job.model)
        out_dir = Path(job.output_dir)
        written: list[str] = []
        parts: list[str] = []
        failures: dict[str, FailureRecord] = {}
        splits: dict[str, list[str]] = {}
        request_usage: dict[str, RequestUsage] = {}
        seen: set[str] = set()
        unexpected = 0
        payloads: dict[str, PreparedRequest] | None = None

        def payload_for(cid: str) -> PreparedRequest | None:
            nonlocal payloads
            if payloads is None:
                try:
                    payloads = {r.custom_id: r for r in self.store.read_payloads(job.manifest_hash)}
                except UserError:
                    payloads = {}
            return payloads.get(cid)

        by_wire = job.sections_by_wire_id()
        lines: AsyncIterator[BatchResultItem] = self._iter_results(batch_id)
        try:
            if self._needs_proof(job):
                # Found by reconciliation: nothing is written until the results prove it ours.
                held = [item async for item in lines]
                if not proves_ownership((i.custom_id for i in held), by_wire):
                    return await self._release(job, [i.custom_id for i in held])
                job.ownership = "proven"
                self.store.save(job)
                self._mark_proven(job)
                logger.info("batch %s: results prove it is this submission's own", job.id)
                lines = _replay(held)
            async for item in lines:
                cid = by_wire.get(item.custom_id, "")
                ref = job.inputs.get(cid)
                if ref is None:
                    unexpected += 1
                    logger.warning(
                        "batch %s returned unknown custom_id %r: ignored", batch_id, item.custom_id
                    )
                    continue
                seen.add(cid)
                meta = ref.to_meta(cid)
                self._handle_item(
                    item,
                    meta,
                    job,
                    info,
                    schema,
                    out_dir,
                    written,
                    parts,
                    failures,
                    splits,
                    request_usage,
                    payload_for,
                )
                failpoint("during_results")
        except ResultsArchivedError:
            job.archived_at = job.archived_at or utcnow().isoformat()
            self._record_archived(job)
            raise ResultsArchivedError(self._archived_message(job)) from None
        for cid in sorted(set(job.inputs) - seen):
            meta = job.inputs[cid].to_meta(cid)
            rec = not_run_failure("missing_result", meta, batch_id=job.id, attempt=job.attempt)
            failures[cid] = rec
            write_failure(out_dir, rec)
        failpoint("after_results")
        return self._finish_processing(
            job, info, written, parts, failures, splits, request_usage, unexpected
        )

    @staticmethod
    def _needs_proof(job: JobRecord) -> bool:
        """Whether ``job``'s batch must prove it is ours before any result of it is used.

        Batches adopted by reconciliation do, including those in job files from before nonces
        (their custom_ids are checked against the plain section ids, the best proof they have).
        """
        return job.ownership == "provisional" or (job.reconciled and job.ownership == "created")

    def _mark_proven(self, job: JobRecord) -> None:
        """Tell the manifest's intent that its provisionally adopted batch is proven ours."""
        intent = self.store.load_intent(job.manifest_hash) if job.manifest_hash else None
        if intent is not None and intent.batch_id == job.id and intent.provisional:
            intent.provisional = False
            self.store.save_intent(intent)

    async def _release(self, job: JobRecord, seen: Sequence[str]) -> dict[str, Any]:
        """Let go of a provisionally adopted batch that is not ours, then resubmit its sections.

        "Released" on disk: the job file stays (so the id is never adopted again and ``status``
        can explain it) with ``ownership: released``, no result, failure, usage or cost, and is
        skipped by every reader of job files (:meth:`JobStore.all_jobs`); the intent records the
        id in ``released_batch_ids`` and goes to state ``released``. The batch itself is left
        alone: never canceled, its results never written.
        """
        ours = set(job.sections_by_wire_id())
        foreign = sorted(set(seen) - ours)
        reason = (
            f"{len(foreign)} of {len(set(seen))} custom_ids in its results are not this "
            f"submission's (e.g. {foreign[0]!r})"
            if foreign
            else "its results hold no custom_id at all"
        )
        with self.store.lock(job.manifest_hash):
            job = self.store.load(job.id)
            if not job.is_released:
                job.ownership = "released"
                job.released_at = utcnow().isoformat()
                job.release_reason = reason
                job.results_processed_at = job.released_at
                job.failures, job.splits, job.request_usage = {}, {}, {}
                job.result_counts = ResultCounts()
                job.followup_state = "none"
                self.store.save(job)
                intent = self.store.load_intent(job.manifest_hash)
                if intent is not None and intent.batch_id == job.id:
                    intent.history.append({"batch_id": job.id, "state": "released"})
                    if job.id not in intent.released_batch_ids:
                        intent.released_batch_ids.append(job.id)
                    intent.state = "released"
                    intent.batch_id = None
                    intent.provisional = False
                    self.store.save_intent(intent)
                logger.error(
                    "batch %s was adopted provisionally after an ambiguous create, but it is not "
                    "ours: %s. Released: none of its results are used or counted, and it is not "
                    "canceled; its %d sections are submitted again",
                    job.id,
                    reason,
                    len(job.inputs),
                )
        failpoint("after_release")
        return await self._finish_release(job)

    async def _finish_release(self, job: JobRecord) -> dict[str, Any]:
        """Submit the sections of a released job again (once) and link the new batch."""
        if job.replaced_by is None:
            group = self.store.read_payloads(job.manifest_hash)
            new = await self._submit_exactly_once(
                group,
                Path(job.output_dir),
                job.model,
                series_name=job.series_name,
                series=job.series,
                parent_batch_id=job.parent_batch_id,
                attempt=job.attempt,
                force_new=False,
                estimated_cost=job.estimated_cost or Cost(batch_usd=0.0, realtime_usd=0.0),
            )
            self._link_replacement(job, new)
            job = self.store.load(job.id)
        return {
            "batch_id": job.id,
            "processed": 0,
            "failed": 0,
            "usage": TokenUsage(),
            "files_written": [],
            "parts_written": [],
            "submitted": 0,
            "split": 0,
            "retryable": 0,
            "counts": ResultCounts(),
            "cost": Cost(batch_usd=0.0, realtime_usd=0.0),
            "failures": [],
            "followup_needed": False,
            "released": True,
            "replaced_by": job.replaced_by,
        }

    def _link_replacement(self, released: JobRecord, new: JobRecord) -> None:
        """Point everything that referred to a released batch at the batch that replaced it."""
        released.replaced_by = new.id
        released.retry_batch_ids = [new.id]
        # The replacement is what follows this job: callers that chase follow-ups find it.
        released.followup_state = "created"
        self.store.save(released)
        if released.sibling_batch_ids:
            new.sibling_batch_ids = list(released.sibling_batch_ids)
            self.store.save(new)
            for sid in released.sibling_batch_ids:
                if self.store.exists(sid):
                    sib = self.store.load(sid)
                    sib.sibling_batch_ids = [
                        new.id if i == released.id else i for i in sib.sibling_batch_ids
                    ]
                    self.store.save(sib)
        parent_id = released.parent_batch_id
        if parent_id and self.store.exists(parent_id):
            parent = self.store.load(parent_id)
            parent.retry_batch_ids = [
                new.id if i == released.id else i for i in parent.retry_batch_ids
            ]
            if new.id not in parent.retry_batch_ids:
                parent.retry_batch_ids.append(new.id)
            for rec in parent.failures.values():
                if rec.resubmitted_in == released.id:
                    rec.resubmitted_in = new.id
                    write_failure(Path(parent.output_dir), rec)
            self.store.save(parent)
        logger.warning(
            "the sections of released batch %s went out again as batch %s", released.id, new.id
        )

    def _handle_item(
        self,
        item: BatchResultItem,
        meta: RequestMeta,
        job: JobRecord,
        info: Any,
        schema: type[BaseModel],
        out_dir: Path,
        written: list[str],
        parts: list[str],
        failures: dict[str, FailureRecord],
        splits: dict[str, list[str]],
        request_usage: dict[str, RequestUsage],
        payload_for: Callable[[str], PreparedRequest | None],
    ) -> None:
        cid = meta.custom_id
        if item.result_type == BatchResultType.ERRORED:
            rec = interpret_error(item.error, meta, batch_id=job.id, attempt=job.attempt)
            failures[cid] = rec
            write_failure(out_dir, rec)
            return
        if item.result_type in (BatchResultType.EXPIRED, BatchResultType.CANCELED):
            rec = not_run_failure(
                item.result_type.value, meta, batch_id=job.id, attempt=job.attempt
            )
            failures[cid] = rec
            write_failure(out_dir, rec)
            return
        outcome = interpret_message(
            item.message, meta, schema=schema, batch_id=job.id, attempt=job.attempt
        )
        usage = outcome.usage or TokenUsage()
        cost = cost_of(info, usage)
        request_usage[cid] = RequestUsage(usage=usage, cost=cost)
        if outcome.truncated:
            rec, halves = self._plan_split(meta, job, out_dir, outcome.stop_reason, payload_for)
            if halves is not None:
                splits[cid] = list(halves)
            failures[cid] = rec
            write_failure(out_dir, rec)
            return
        if outcome.failure is not None:
            failures[cid] = outcome.failure
            write_failure(out_dir, outcome.failure)
            return
        assert outcome.result is not None
        prov = Provenance(
            custom_id=cid,
            file_name=meta.file_name,
            chunk_id=meta.chunk_id,
            series=meta.series or job.series,
            section_path=meta.section_path,
            sha256=meta.sha256,
            prompt_version=meta.prompt_version,
            model=job.model,
            batch_id=job.id,
            backend=job.backend,
            mode="batch",
            written_at=utcnow().isoformat(),
            usage=usage,
            cost=cost,
            rejected=outcome.rejected,
        )
        if meta.split_of:
            path = write_result(out_dir, meta, outcome.result, prov, as_part=True)
            parts.append(str(path))
            root = meta.split_root or meta.split_of
            root_ref = self._find_root_ref(job, root)
            merged = try_merge(out_dir, root, root_ref.to_meta(root)) if root_ref else None
            if merged is not None:
                logger.info("all halves of %s done: merged into %s", root, merged.name)
        else:
            path = write_result(out_dir, meta, outcome.result, prov)
            written.append(str(path))

    def _find_root_ref(self, job: JobRecord, root: str) -> InputRef | None:
        """The input of the original (unsplit) section, searched up the parent chain."""
        current: JobRecord | None = job
        while current is not None:
            if root in current.inputs:
                return current.inputs[root]
            parent = current.parent_batch_id
            current = self.store.load(parent) if parent and self.store.exists(parent) else None
        return None

    def _plan_split(
        self,
        meta: RequestMeta,
        job: JobRecord,
        out_dir: Path,
        stop_reason: str,
        payload_for: Callable[[str], PreparedRequest | None],
    ) -> tuple[FailureRecord, tuple[str, str] | None]:
        """Record a truncated answer and, when possible, plan its two halves for the follow-up."""
        cid = meta.custom_id
        base = FailureRecord(
            custom_id=cid,
            batch_id=job.id,
            type=stop_reason,
            attempt=job.attempt,
            file_name=meta.file_name,
            series=meta.series,
            stop_reason=stop_reason,
        )
        if job.attempt >= job.max_attempts + MAX_SPLIT_ROUNDS:
            base.message = (
                f"answer truncated ({stop_reason}) after {MAX_SPLIT_ROUNDS} rounds of splitting; "
                "raise --max-tokens or re-section smaller"
            )
            base.retryable = True
            return base, None
        req = payload_for(cid)
        ids = (half_custom_id(cid, "a"), half_custom_id(cid, "b"))
        halves = split_request(req.body, ids) if req is not None else None
        if halves is None:
            base.message = (
                f"answer truncated ({stop_reason}) and the section is too short to split; raise "
                "--max-tokens"
            )
            base.retryable = False
            return base, None
        root = meta.split_root or cid
        record_split(out_dir, root, cid, ids)
        base.message = f"answer truncated ({stop_reason}); split into {ids[0]}, {ids[1]}"
        base.retryable = True
        return base, ids

    def _finish_processing(
        self,
        job: JobRecord,
        info: Any,
        written: list[str],
        parts: list[str],
        failures: dict[str, FailureRecord],
        splits: dict[str, list[str]],
        request_usage: dict[str, RequestUsage],
        unexpected: int,
    ) -> dict[str, Any]:
        submitted = len(job.inputs)
        split_n = len(splits)
        failed = len(failures) - split_n
        retryable = sum(1 for cid, f in failures.items() if f.retryable and cid not in splits)
        counts = ResultCounts(
            submitted=submitted,
            written=len(written),
            parts_written=len(parts),
            failed=failed,
            retryable=retryable,
            split=split_n,
            unexpected=unexpected,
        )
        if counts.written + counts.parts_written + counts.failed + counts.split != submitted:
            raise RuntimeError(
                f"accounting error in batch {job.id}: submitted {submitted} != written "
                f"{counts.written} + parts {counts.parts_written} + failed {counts.failed} + "
                f"split {counts.split}"
            )
        total = TokenUsage()
        batch_usd = realtime_usd = 0.0
        for ru in request_usage.values():
            total = total + ru.usage
            batch_usd += ru.cost.batch_usd
            realtime_usd += ru.cost.realtime_usd
        job.usage = total
        job.cost = Cost(batch_usd=batch_usd, realtime_usd=realtime_usd)
        job.request_usage = request_usage
        # Failures of earlier processing runs that are now results must not linger.
        job.failures = failures
        job.splits = splits
        job.result_counts = counts
        job.results_processed_at = utcnow().isoformat()
        # A split repairs a planning miss (the answer did not fit), so halves go out even when
        # the attempt limit for transient failures is reached, for up to MAX_SPLIT_ROUNDS more.
        wants_followup = retryable > 0 or split_n > 0
        if split_n > 0 or (retryable > 0 and job.attempt < job.max_attempts):
            job.followup_state = "pending" if job.followup_state != "created" else "created"
        elif wants_followup:
            job.followup_state = "exhausted"
        else:
            job.followup_state = "none" if job.followup_state != "created" else "created"
        self.store.save(job)
        logger.info(
            "batch %s: submitted %d = written %d + parts %d + failed %d + split %d "
            "(retryable %d); cost $%.4f batch ($%.4f real-time)",
            job.id,
            submitted,
            counts.written,
            counts.parts_written,
            counts.failed,
            counts.split,
            retryable,
            batch_usd,
            realtime_usd,
        )
        return {
            "batch_id": job.id,
            "processed": len(written),
            "failed": failed,
            "usage": total,
            "files_written": written,
            "parts_written": parts,
            "submitted": submitted,
            "split": split_n,
            "retryable": retryable,
            "counts": counts,
            "cost": job.cost,
            "failures": list(failures.values()),
            "followup_needed": job.followup_state == "pending",
        }

    def _stored_summary(self, job: JobRecord) -> dict[str, Any]:
        """The summary of an already processed batch, from its job file alone."""
        counts = job.result_counts or ResultCounts()
        written = [
            dest
            for cid, dest in job.local_request_mapping.items()
            if cid not in job.failures and not job.inputs[cid].split_of
        ]
        parts = [
            dest
            for cid, dest in job.local_request_mapping.items()
            if cid not in job.failures and job.inputs[cid].split_of
        ]
        return {
            "batch_id": job.id,
            "processed": counts.written,
            "failed": counts.failed,
            "usage": job.usage,
            "files_written": written,
            "parts_written": parts,
            "submitted": counts.submitted,
            "split": counts.split,
            "retryable": counts.retryable,
            "counts": counts,
            "cost": job.cost,
            "failures": list(job.failures.values()),
            "followup_needed": job.followup_state == "pending",
        }

    # ======================================================================================
    # Follow-ups and resubmission
    # ======================================================================================

    async def create_followup(self, batch_id: str) -> JobRecord | None:
        """Submit ONE follow-up batch with only the retryable failures of ``batch_id``.

        Retryable: errored other than ``invalid_request_error``, expired, canceled, missing, and
        the two halves of each truncated section. Exactly-once like any submission: calling it
        again (after a crash, from another process) returns the same follow-up.

        Returns:
            The follow-up job, or ``None`` when there is nothing to retry or the attempt limit is
            reached.
        """
        job = self.store.load(batch_id)
        if not job.is_settled:
            raise BatchNotEndedError(
                f"batch {batch_id} has not been processed yet: retrieve its results first"
            )
        if job.followup_state == "created" and job.retry_batch_ids:
            return self.store.load(job.retry_batch_ids[-1])
        if job.followup_state != "pending":
            return None
        requests = self._followup_requests(job)
        if not requests:
            job.followup_state = "none"
            self.store.save(job)
            return None
        failpoint("before_followup_create")
        new_jobs = await self.create_batches(
            requests,
            job.output_dir,
            job.model,
            job.series_name,
            series=job.series,
            parent_batch_id=job.id,
            attempt=job.attempt + 1,
        )
        job = self.store.load(batch_id)
        for new in new_jobs:
            if new.id not in job.retry_batch_ids:
                job.retry_batch_ids.append(new.id)
        covered = {cid: new.id for new in new_jobs for cid in new.inputs}
        for cid, rec in job.failures.items():
            targets = job.splits.get(cid, [cid])
            hit = next((covered[t] for t in targets if t in covered), None)
            if rec.retryable and hit is not None:
                rec.resubmitted_in = hit
                write_failure(Path(job.output_dir), rec)
        job.followup_state = "created"
        self.store.save(job)
        logger.info(
            "follow-up batch %s: %d requests retrying failures of %s",
            new_jobs[0].id,
            len(requests),
            batch_id,
        )
        return new_jobs[0]

    def _followup_requests(self, job: JobRecord) -> list[PreparedRequest]:
        payloads = {r.custom_id: r for r in self.store.read_payloads(job.manifest_hash)}
        out: list[PreparedRequest] = []
        retries_left = job.attempt < job.max_attempts
        for cid in sorted(job.failures):
            rec = job.failures[cid]
            if not rec.retryable or cid not in payloads:
                continue
            if cid not in job.splits and not retries_left:
                continue  # only the halves of cut answers go past the attempt limit
            req = payloads[cid]
            if rec.type in ("max_tokens", "model_context_window_exceeded"):
                if cid not in job.splits:
                    continue
                ids = (half_custom_id(cid, "a"), half_custom_id(cid, "b"))
                halves = split_request(req.body, ids)
                if halves is None:
                    continue
                root = req.meta.split_root or cid
                for body in halves:
                    hid = str(body["custom_id"])
                    meta = dataclasses.replace(
                        req.meta, custom_id=hid, split_of=cid, split_root=root
                    )
                    out.append(PreparedRequest(body=body, meta=meta))
            else:
                out.append(req)
        return out

    def _record_archived(self, job: JobRecord) -> None:
        out_dir = Path(job.output_dir)
        for cid, ref in job.inputs.items():
            dest = Path(job.local_request_mapping.get(cid, ""))
            if dest.is_file():
                continue
            rec = not_run_failure(
                "archived",
                ref.to_meta(cid),
                batch_id=job.id,
                attempt=job.attempt,
                message=f"results of batch {job.id} were archived (29-day retention) before "
                "they were downloaded",
            )
            job.failures[cid] = rec
            write_failure(out_dir, rec)
        self.store.save(job)

    def _archived_message(self, job: JobRecord) -> str:
        return (
            f"results of batch {job.id} are archived (kept 29 days after creation "
            f"{job.created_at}); the {len(job.failures)} sections without results are recorded "
            f"as 'archived': resubmit them with `fantasy-kg extract-batch --mode retrieve "
            f"--batch-id {job.id} --resubmit-archived`"
        )

    async def resubmit_archived(self, batch_id: str) -> JobRecord | None:
        """Send again the requests of an archived batch that never got a result file."""
        job = self.store.load(batch_id)
        payloads = self.store.read_payloads(job.manifest_hash)
        todo = [
            r
            for r in payloads
            if not Path(job.local_request_mapping.get(r.custom_id, "")).is_file()
        ]
        if not todo:
            return None
        new_jobs = await self.create_batches(
            todo,
            job.output_dir,
            job.model,
            job.series_name,
            series=job.series,
            parent_batch_id=job.id,
            attempt=1,
            force_new=True,
        )
        job.retry_batch_ids.extend(j.id for j in new_jobs if j.id not in job.retry_batch_ids)
        for cid in job.failures:
            job.failures[cid].resubmitted_in = new_jobs[0].id
        job.followup_state = "created"
        self.store.save(job)
        return new_jobs[0]
