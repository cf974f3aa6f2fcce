"""Submission: pre-flight, then each batch's requests sent exactly once.

An intent record goes to disk before ``batches.create``; create runs with SDK retries off; the
batch id is persisted at once; after an ambiguous failure the :class:`Reconciler` searches the
server before anything is sent again. Why: docs/architecture.md, "Exactly-once submission".
"""

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic

from fantasy_kg.domain import paths
from fantasy_kg.domain.catalog import get_model
from fantasy_kg.domain.errors import TransientError, UserError
from fantasy_kg.domain.failpoints import failpoint
from fantasy_kg.domain.pricing import Cost
from fantasy_kg.llm.backend import unreachable_message
from fantasy_kg.llm.batch_context import (
    CLOCK_SKEW,
    LATE_CREATE_GRACE,
    LATE_SWEEP_INTERVAL,
    RECONCILE_RETRIES,
    BatchContext,
    as_datetime,
)
from fantasy_kg.llm.batch_errors import (
    ambiguous,
    backoff,
    definitive_error,
    describe_status_error,
    error_code,
    may_land_late,
    never_sent,
    retry_after,
    still_working,
)
from fantasy_kg.llm.jobs import (
    InputRef,
    IntentRecord,
    JobRecord,
    UnprovenCandidate,
    manifest_hash,
    utcnow,
)
from fantasy_kg.llm.ownership import new_nonce, wire_ids
from fantasy_kg.llm.reconcile import Reconciler
from fantasy_kg.llm.requests import PreparedRequest, as_prepared, preflight
from fantasy_kg.llm.results import part_path, result_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchPlan:
    """What one batch submission sends and how its job file describes it.

    Attributes:
        group: The requests of this batch (already through pre-flight).
        output_dir: Where ``<custom_id>_extracted.json`` files go.
        model: Resolved model id.
        manifest_hash: Identity of the request set (model and backend included).
        series_name: Display name of the series (the guide's argument).
        series: Series slug.
        parent_batch_id: For follow-ups: the batch whose failures they retry.
        attempt: Attempt number (1 for a first submission).
        force_new: Submit even if the manifest already has a settled batch.
        estimated_cost: This batch's share of the pre-flight estimate.
    """

    group: list[PreparedRequest]
    output_dir: Path
    model: str
    manifest_hash: str
    series_name: str | None
    series: str
    parent_batch_id: str | None
    attempt: int
    force_new: bool
    estimated_cost: Cost


@dataclass(frozen=True)
class SubmitOptions:
    """How a set of requests is submitted: the keyword arguments of ``create_batches``.

    Attributes:
        series: Series slug (derived from the requests' metadata or the series name).
        parent_batch_id: For follow-up batches: the batch whose failures they retry.
        attempt: Attempt number (1 for a first submission).
        force_new: Submit even if the same manifest already has a settled batch.
        estimated_cost: Pre-flight estimate to store beside the actual cost.
    """

    series: str | None = None
    parent_batch_id: str | None = None
    attempt: int = 1
    force_new: bool = False
    estimated_cost: Cost | None = None


class Submitter:
    """Sends batches exactly once; re-runs reuse or reconcile what an earlier run left.

    Args:
        ctx: The batch client's shared settings, clients and store.
        reconciler: Searches the server after an ambiguous create.
    """

    def __init__(self, ctx: BatchContext, reconciler: Reconciler) -> None:
        self.ctx = ctx
        self.reconciler = reconciler

    async def create_batches(
        self,
        requests: Sequence[dict[str, Any] | PreparedRequest],
        output_dir: str | Path,
        model: str,
        series_name: str | None,
        options: SubmitOptions,
    ) -> list[JobRecord]:
        """Run pre-flight, split into batches, submit each; return every job."""
        info = get_model(model)
        prepared = as_prepared(requests)
        report = preflight(
            prepared,
            info.id,
            max_requests=self.ctx.max_batch_requests,
            max_bytes=self.ctx.max_batch_bytes,
        )
        for warning in report.warnings:
            logger.warning("pre-flight: %s", warning)
        out_dir = Path(output_dir).expanduser().resolve()
        slug = options.series or next((r.meta.series for r in prepared if r.meta.series), "")
        if not slug and series_name:
            slug = paths.slugify(series_name)
        jobs: list[JobRecord] = []
        for group_idx in report.batches:
            group = [prepared[i] for i in group_idx]
            share = len(group) / max(1, len(prepared))
            est = options.estimated_cost or report.estimated_cost
            plan = BatchPlan(
                group=group,
                output_dir=out_dir,
                model=info.id,
                manifest_hash=manifest_hash(group, info.id, self.ctx.backend),
                series_name=series_name,
                series=slug,
                parent_batch_id=options.parent_batch_id,
                attempt=options.attempt,
                force_new=options.force_new,
                estimated_cost=Cost(
                    batch_usd=est.batch_usd * share, realtime_usd=est.realtime_usd * share
                ),
            )
            job = await self.submit(plan)
            jobs.append(job)
        if len(jobs) > 1:
            ids = [j.id for j in jobs]
            for job in jobs:
                job.sibling_batch_ids = [i for i in ids if i != job.id]
                self.ctx.store.save(job)
        return jobs

    async def submit(self, plan: BatchPlan) -> JobRecord:
        """Submit one batch's requests exactly once (or return the batch they already went in).

        Holds the manifest lock throughout: an intent record goes to disk before create, and a
        ``pending`` intent from an interrupted run is reconciled before anything is sent again.
        """
        group, output_dir, mhash = plan.group, plan.output_dir, plan.manifest_hash
        with self.ctx.store.lock(mhash):
            intent = self.ctx.store.load_intent(mhash)
            if intent is not None and intent.state == "created" and intent.batch_id:
                job = await self._job_for_intent(intent, plan)
                await self.reconciler.sweep_late_duplicates(intent, job.id)
                if not (plan.force_new and job.is_ended):
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
                    self.ctx.store.save_intent(intent)
                    logger.info(
                        "manifest %s: job %s was persisted; reusing it", mhash[:12], persisted.id
                    )
                    return persisted
                adopted = await self.reconciler.reconcile(intent)
                if adopted is not None:
                    logger.warning(
                        "found batch %s created by an interrupted submission of manifest %s: "
                        "adopting it instead of submitting again",
                        adopted.id,
                        mhash[:12],
                    )
                    return self._persist_new_job(adopted, plan, intent, reconciled=True)
                logger.info(
                    "interrupted submission of manifest %s never reached the server: submitting",
                    mhash[:12],
                )
            payload = self.ctx.store.write_payloads(mhash, group)
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
                model=plan.model,
                series=plan.series,
                request_count=len(group),
                window_start=now.isoformat(),
                state="pending",
                output_dir=str(output_dir),
                parent_batch_id=plan.parent_batch_id,
                attempt=plan.attempt,
                history=history,
                payload_file=str(payload),
            )
            self.ctx.store.save_intent(intent)
            batch, reconciled, watch_until = await self._create_with_reconcile(group, intent)
            failpoint("after_create")
            job = self._persist_new_job(batch, plan, intent, reconciled=reconciled)
            if watch_until is not None and intent.late_possible > 0:
                await self._watch_for_late_create(intent, job.id, watch_until)
                if intent.duplicate_batch_ids or intent.unproven_batch_ids:
                    job = self.ctx.store.load(job.id)
            return job

    async def _watch_for_late_create(
        self, intent: IntentRecord, keep_id: str, until: datetime
    ) -> None:
        """Look for the batch of a timed-out create until it shows up or ``until`` passes.

        The server was still working on that request when the client gave up, so its batch may
        appear any moment, next to the one just created. Caught while it is queued, a cancel
        bills nothing; later calls keep looking (see :meth:`Reconciler.sweep_late_duplicates`).
        Without a dedicated workspace nothing found could be canceled, so one look (to report)
        is all.
        """
        if not self.ctx.dedicated_workspace:
            await self.reconciler.sweep_late_duplicates(intent, keep_id)
            return
        logger.warning(
            "a create of manifest %s timed out and may still land: watching for its batch for up "
            "to %.0f s to cancel it",
            intent.manifest_hash[:12],
            max(0.0, (until - utcnow()).total_seconds()),
        )
        while True:
            await self.reconciler.sweep_late_duplicates(intent, keep_id)
            if intent.late_possible <= 0 or utcnow() >= until:
                return
            await asyncio.sleep(LATE_SWEEP_INTERVAL)

    def _persist_new_job(
        self, batch: Any, plan: BatchPlan, intent: IntentRecord, *, reconciled: bool
    ) -> JobRecord:
        """Write the job file for a just-created (or adopted) batch, then mark the intent."""
        job = self._new_job_record(batch.id, plan, nonce=intent.nonce)
        job.update_from_batch(batch)
        job.reconciled = reconciled
        job.ownership = "provisional" if reconciled else "created"
        job.estimated_cost = plan.estimated_cost
        # Batches reconciliation saw but could not prove ours, reported in the job file too.
        job.unproven_candidates = [
            UnprovenCandidate(batch_id=bid, request_count=len(plan.group))
            for bid in intent.unproven_batch_ids
        ]
        self.ctx.store.save(job)
        failpoint("after_persist")
        intent.state = "created"
        intent.batch_id = batch.id
        intent.provisional = reconciled
        intent.window_end = intent.window_end or utcnow().isoformat()
        self.ctx.store.save_intent(intent)
        logger.info(
            "submitted batch %s: %d requests for series %s (attempt %d)",
            job.id,
            len(plan.group),
            plan.series or "-",
            plan.attempt,
        )
        return job

    def _new_job_record(self, batch_id: str, plan: BatchPlan, *, nonce: str = "") -> JobRecord:
        """The job file of batch ``batch_id`` carrying ``plan``'s requests."""
        group, output_dir, mhash = plan.group, plan.output_dir, plan.manifest_hash
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
            model=plan.model,
            series_name=plan.series_name,
            series=plan.series,
            backend=self.ctx.backend,
            manifest_hash=mhash,
            payload_file=str(self.ctx.store.payload_path(mhash)),
            prompt_version=versions.pop() if len(versions) == 1 else "",
            inputs={r.custom_id: InputRef.from_meta(r.meta) for r in group},
            local_request_mapping=mapping,
            attempt=plan.attempt,
            max_attempts=self.ctx.max_attempts,
            parent_batch_id=plan.parent_batch_id,
            submitted_at=utcnow().isoformat(),
            nonce=nonce,
            wire_custom_ids=wire_ids([r.custom_id for r in group], nonce) if nonce else {},
        )

    def _persisted_job_for(self, intent: IntentRecord) -> JobRecord | None:
        """A job file written for this intent's submission whose intent update was lost."""
        start = as_datetime(intent.window_start)
        for job in self.ctx.store.all_jobs():
            if job.manifest_hash != intent.manifest_hash:
                continue
            submitted = as_datetime(job.submitted_at)
            if start is None or submitted is None or submitted >= start - CLOCK_SKEW:
                return job
        return None

    async def _job_for_intent(self, intent: IntentRecord, plan: BatchPlan) -> JobRecord:
        """The job of a ``created`` intent; rebuilt from the server if its file was lost."""
        assert intent.batch_id is not None
        if self.ctx.store.exists(intent.batch_id):
            return self.ctx.store.load(intent.batch_id)
        batch = await self.ctx.client.messages.batches.retrieve(intent.batch_id)
        # The intent, not this call, says how the batch was submitted.
        recorded = dataclasses.replace(
            plan,
            model=intent.model,
            series=intent.series,
            manifest_hash=intent.manifest_hash,
            parent_batch_id=intent.parent_batch_id,
            attempt=intent.attempt,
        )
        job = self._new_job_record(batch.id, recorded, nonce=intent.nonce)
        job.update_from_batch(batch)
        job.reconciled = intent.provisional
        job.ownership = "provisional" if intent.provisional else "created"
        self.ctx.store.save(job)
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
        for n in range(self.ctx.create_attempts):
            intent.create_attempts += 1
            intent.window_end = None
            self.ctx.store.save_intent(intent)
            failpoint("before_create")
            call_started = utcnow()
            try:
                batch = await self.ctx.create_client.messages.batches.create(
                    requests=bodies,  # type: ignore[arg-type]  # dict bodies, typed as TypedDicts
                    timeout=self.ctx.timeout,
                )
            except anthropic.RateLimitError as exc:
                # A 429 is decided before any work is accepted: nothing was created.
                last_error = exc
                intent.window_end = utcnow().isoformat()
                self.ctx.store.save_intent(intent)
                delay = retry_after(exc)
                code = error_code(exc)
                if delay is None and code.endswith("spend_limit_reached"):
                    # A spend cap keeps failing until access resumes: retrying only burns time.
                    raise UserError(
                        f"the API spend limit is reached ({code}; {describe_status_error(exc)}); "
                        "nothing was created: raise the limit or wait for it to reset, then "
                        "re-run the same command to resume"
                    ) from None
                delay = delay if delay is not None else backoff(n, self.ctx.retry_base_delay)
                logger.warning("batch create rate-limited (429); retrying in %.1f s", delay)
                await asyncio.sleep(delay)
                continue
            except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
                intent.window_end = utcnow().isoformat()
                self.ctx.store.save_intent(intent)
                if never_sent(exc):
                    # No connection: nothing reached the server, so nothing to reconcile.
                    last_error = exc
                    await asyncio.sleep(backoff(n, self.ctx.retry_base_delay))
                    continue
                if not ambiguous(exc):
                    intent.state = "failed"
                    self.ctx.store.save_intent(intent)
                    raise definitive_error(exc) from None
                last_error = exc
                what = (
                    describe_status_error(exc)
                    if isinstance(exc, anthropic.APIStatusError)
                    else type(exc).__name__
                )
                logger.warning("batch create failed ambiguously (%s): reconciling", what)
                late = may_land_late(exc)
                call = (call_started, utcnow())
                if late:
                    intent.late_possible += 1
                    # The server may still act on the request until the call's timeout has run
                    # out (plus a grace for queues and clocks), not later.
                    timed_out = call_started + timedelta(seconds=self.ctx.timeout)
                    until = max(timed_out, call[1]) + LATE_CREATE_GRACE
                    previous = as_datetime(intent.watch_until)
                    intent.watch_until = max(until, previous or until).isoformat()
                    self.ctx.store.save_intent(intent)
                    if still_working(exc):
                        watch_until = utcnow() + timedelta(seconds=self.ctx.late_create_grace)
                adopted = await self.reconciler.reconcile(intent, call)
                # The request may still be on its way to the server: look again before creating.
                for k in range(RECONCILE_RETRIES if late else 0):
                    if adopted is not None:
                        break
                    await asyncio.sleep(backoff(k, self.ctx.retry_base_delay))
                    adopted = await self.reconciler.reconcile(intent, call)
                if adopted is None and watch_until is not None and not self.ctx.dedicated_workspace:
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
                    delay = retry_after(exc) if isinstance(exc, anthropic.APIStatusError) else None
                    delay = delay if delay is not None else backoff(n, self.ctx.retry_base_delay)
                    await asyncio.sleep(delay)
                continue
            intent.window_end = utcnow().isoformat()
            return batch, False, watch_until
        intent.state = "pending"
        self.ctx.store.save_intent(intent)
        if last_error is not None and never_sent(last_error):
            raise TransientError(unreachable_message(str(self.ctx.client.base_url), last_error))
        raise TransientError(
            f"could not create the batch after {self.ctx.create_attempts} attempts "
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
            adopted = await self.reconciler.reconcile(intent, call)
            if adopted is not None:
                return adopted
        return None
