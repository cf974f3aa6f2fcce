"""Results: download an ended batch's lines and turn each into a file or a recorded failure.

Every submitted custom_id ends as a result file, a part of a split section, a recorded failure
or a planned split, and the counts must add up (design invariant 2). A provisionally adopted
batch must prove it is ours first (:mod:`fantasy_kg.llm.release`).
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
from pydantic import BaseModel

from fantasy_kg.domain.catalog import ModelInfo, get_model
from fantasy_kg.domain.errors import TransientError, UserError
from fantasy_kg.domain.failpoints import failpoint
from fantasy_kg.domain.pricing import Cost, TokenUsage
from fantasy_kg.llm.batch_context import (
    MAX_SPLIT_ROUNDS,
    RESULTS_REFETCHES,
    BatchContext,
    BatchResultItem,
)
from fantasy_kg.llm.batch_errors import (
    BatchNotEndedError,
    ResultsArchivedError,
    backoff,
    definitive_error,
    describe_status_error,
    is_cut_stream,
)
from fantasy_kg.llm.batch_status import StatusTracker
from fantasy_kg.llm.jobs import (
    BatchResultType,
    FailureRecord,
    InputRef,
    JobRecord,
    JobStore,
    RequestUsage,
    ResultCounts,
    utcnow,
)
from fantasy_kg.llm.ownership import proves_ownership
from fantasy_kg.llm.release import Releaser
from fantasy_kg.llm.requests import PreparedRequest, RequestMeta, half_custom_id, split_request
from fantasy_kg.llm.results import (
    Provenance,
    cost_of,
    interpret_error,
    interpret_message,
    not_run_failure,
    record_split,
    request_failure,
    try_merge,
    write_failure,
    write_result,
)

logger = logging.getLogger(__name__)


async def _replay(items: Sequence["BatchResultItem"]) -> AsyncIterator["BatchResultItem"]:
    """Yield already downloaded result lines again (after they proved the batch ours)."""
    for item in items:
        yield item


@dataclass
class _ResultTally:
    """What processing one batch's results has produced so far.

    Attributes:
        job: The batch's job record.
        info: Its model's catalog entry (prices).
        schema: The model the answers are validated against.
        out_dir: Where result and failure files go.
        store: Job store, to read the submitted payloads when a cut answer must be split.
        written: Result files written.
        parts: Part files (halves of split sections) written.
        failures: Failure records by custom_id.
        splits: Truncated custom_id -> the two halves planned for the follow-up.
        request_usage: Usage and cost per custom_id.
        unexpected: Result lines whose custom_id was never submitted.
    """

    job: JobRecord
    info: ModelInfo
    schema: type[BaseModel]
    out_dir: Path
    store: JobStore
    written: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    failures: dict[str, FailureRecord] = field(default_factory=dict)
    splits: dict[str, list[str]] = field(default_factory=dict)
    request_usage: dict[str, RequestUsage] = field(default_factory=dict)
    unexpected: int = 0
    _payloads: dict[str, PreparedRequest] | None = None

    def payload_for(self, cid: str) -> PreparedRequest | None:
        """The submitted request of ``cid`` (payloads are read once, on first need)."""
        if self._payloads is None:
            try:
                self._payloads = {
                    r.custom_id: r for r in self.store.read_payloads(self.job.manifest_hash)
                }
            except UserError:
                self._payloads = {}
        return self._payloads.get(cid)


class ResultProcessor:
    """Downloads results and accounts for every submitted request.

    Args:
        ctx: The batch client's shared settings, clients and store.
        status: Refreshes the job before processing.
        releaser: Proves a provisionally adopted batch ours, or releases it.
    """

    def __init__(self, ctx: BatchContext, status: StatusTracker, releaser: Releaser) -> None:
        self.ctx = ctx
        self.status = status
        self.releaser = releaser

    async def _iter_results(self, batch_id: str) -> AsyncIterator[BatchResultItem]:
        """Yield each custom_id's result once, re-downloading when the stream is cut.

        The SDK retries obtaining the response but not a connection that drops mid-stream; the
        download then starts over and lines already seen are skipped (results come in any order,
        so dedupe is by custom_id, not by position).
        """
        seen: set[str] = set()
        for attempt in range(RESULTS_REFETCHES + 1):
            try:
                stream = await self.ctx.client.messages.batches.results(batch_id)
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
                raise definitive_error(exc) from None
            except anthropic.NotFoundError as exc:
                raise ResultsArchivedError(
                    f"results of batch {batch_id} are not available ({describe_status_error(exc)})"
                    "; they are kept 29 days after creation"
                ) from None
            except Exception as exc:
                if not is_cut_stream(exc):
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
                await asyncio.sleep(backoff(attempt, self.ctx.retry_base_delay / 2))

    async def retrieve_results(self, batch_id: str) -> list[BatchResultItem]:
        """Every result line of an ended batch, under the caller's custom_ids."""
        by_wire = (
            self.ctx.store.load(batch_id).sections_by_wire_id()
            if self.ctx.store.exists(batch_id)
            else {}
        )
        items = [item async for item in self._iter_results(batch_id)]
        for item in items:
            item.custom_id = by_wire.get(item.custom_id, item.custom_id)
        return items

    async def process_results_to_files(
        self, batch_id: str, schema: type[BaseModel], reprocess: bool
    ) -> dict[str, Any]:
        """Write every result of an ended batch.

        See :meth:`AnthropicBatchProvider.process_results_to_files`.
        """
        job = self.ctx.store.load(batch_id)
        if job.is_released:
            return await self.releaser.finish_release(job)
        if job.is_settled and not reprocess:
            return self.stored_summary(job)
        job = await self.status.get_batch_status(batch_id)
        if not job.is_ended:
            raise BatchNotEndedError(
                f"batch {batch_id} is still {job.processing_status} "
                f"({job.request_counts.processing} processing): poll until it ends"
            )
        if job.archived_at is not None:
            self.record_archived(job)
            raise ResultsArchivedError(self.archived_message(job))
        run = _ResultTally(
            job=job,
            info=get_model(job.model),
            schema=schema,
            out_dir=Path(job.output_dir),
            store=self.ctx.store,
        )
        out_dir = run.out_dir
        seen: set[str] = set()
        by_wire = job.sections_by_wire_id()
        lines: AsyncIterator[BatchResultItem] = self._iter_results(batch_id)
        try:
            if self.releaser.needs_proof(job):
                # Found by reconciliation: nothing is written until the results prove it ours.
                held = [item async for item in lines]
                if not proves_ownership((i.custom_id for i in held), by_wire):
                    return await self.releaser.release(job, [i.custom_id for i in held])
                job.ownership = "proven"
                self.ctx.store.save(job)
                self.releaser.mark_proven(job)
                logger.info("batch %s: results prove it is this submission's own", job.id)
                lines = _replay(held)
            async for item in lines:
                cid = by_wire.get(item.custom_id, "")
                ref = job.inputs.get(cid)
                if ref is None:
                    run.unexpected += 1
                    logger.warning(
                        "batch %s returned unknown custom_id %r: ignored", batch_id, item.custom_id
                    )
                    continue
                seen.add(cid)
                meta = ref.to_meta(cid)
                self._handle_item(item, meta, run)
                failpoint("during_results")
        except ResultsArchivedError:
            job.archived_at = job.archived_at or utcnow().isoformat()
            self.record_archived(job)
            raise ResultsArchivedError(self.archived_message(job)) from None
        for cid in sorted(set(job.inputs) - seen):
            meta = job.inputs[cid].to_meta(cid)
            rec = not_run_failure("missing_result", meta, batch_id=job.id, attempt=job.attempt)
            run.failures[cid] = rec
            write_failure(out_dir, rec)
        failpoint("after_results")
        return self._finish_processing(run)

    def _handle_item(self, item: BatchResultItem, meta: RequestMeta, run: _ResultTally) -> None:
        """Turn one result line into a result file, a part, a split plan or a failure."""
        job, out_dir = run.job, run.out_dir
        failures, splits = run.failures, run.splits
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
            item.message, meta, schema=run.schema, batch_id=job.id, attempt=job.attempt
        )
        usage = outcome.usage or TokenUsage()
        cost = cost_of(run.info, usage)
        run.request_usage[cid] = RequestUsage(usage=usage, cost=cost)
        if outcome.truncated:
            rec, halves = self._plan_split(meta, job, out_dir, outcome.stop_reason, run.payload_for)
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
        prov = Provenance.of_request(
            meta,
            custom_id=cid,
            series=meta.series or job.series,
            model=job.model,
            batch_id=job.id,
            backend=job.backend,
            mode="batch",
            usage=usage,
            cost=cost,
            rejected=outcome.rejected,
        )
        if meta.split_of:
            path = write_result(out_dir, meta, outcome.result, prov, as_part=True)
            run.parts.append(str(path))
            root = meta.split_root or meta.split_of
            root_ref = self._find_root_ref(job, root)
            merged = try_merge(out_dir, root, root_ref.to_meta(root)) if root_ref else None
            if merged is not None:
                logger.info("all halves of %s done: merged into %s", root, merged.name)
        else:
            path = write_result(out_dir, meta, outcome.result, prov)
            run.written.append(str(path))

    def _find_root_ref(self, job: JobRecord, root: str) -> InputRef | None:
        """The input of the original (unsplit) section, searched up the parent chain."""
        current: JobRecord | None = job
        while current is not None:
            if root in current.inputs:
                return current.inputs[root]
            parent = current.parent_batch_id
            current = (
                self.ctx.store.load(parent) if parent and self.ctx.store.exists(parent) else None
            )
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
        base = request_failure(
            meta,
            stop_reason,
            "",
            batch_id=job.id,
            attempt=job.attempt,
            retryable=False,
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

    def _finish_processing(self, run: _ResultTally) -> dict[str, Any]:
        """Check the accounting, store usage, cost and follow-up state; return the summary."""
        job, written, parts = run.job, run.written, run.parts
        failures, splits, request_usage = run.failures, run.splits, run.request_usage
        unexpected = run.unexpected
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
        self.ctx.store.save(job)
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

    def stored_summary(self, job: JobRecord) -> dict[str, Any]:
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

    def record_archived(self, job: JobRecord) -> None:
        """Record every request of an archived batch that has no result file as ``archived``."""
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
        self.ctx.store.save(job)

    def archived_message(self, job: JobRecord) -> str:
        """The one-line error for an archived batch, with the command that resubmits it."""
        return (
            f"results of batch {job.id} are archived (kept 29 days after creation "
            f"{job.created_at}); the {len(job.failures)} sections without results are recorded "
            f"as 'archived': resubmit them with `fantasy-kg extract-batch --mode retrieve "
            f"--batch-id {job.id} --resubmit-archived`"
        )
