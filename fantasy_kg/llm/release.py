"""Release: let go of a provisionally adopted batch whose results prove it is not ours.

A batch found by reconciliation is used only once its results' custom_ids carry this
submission's nonce; otherwise it is released (left alone, nothing of it counted) and its
sections go out again, once. Why: docs/architecture.md, "Only batches proven ours".
"""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fantasy_kg.domain.failpoints import failpoint
from fantasy_kg.domain.pricing import Cost, TokenUsage
from fantasy_kg.llm.batch_context import BatchContext
from fantasy_kg.llm.jobs import JobRecord, ResultCounts, manifest_hash, utcnow
from fantasy_kg.llm.results import write_failure
from fantasy_kg.llm.submission import BatchPlan, Submitter

logger = logging.getLogger(__name__)


class Releaser:
    """Proves or releases batches adopted by reconciliation.

    Args:
        ctx: The batch client's shared settings, clients and store.
        submitter: Sends a released batch's sections again.
    """

    def __init__(self, ctx: BatchContext, submitter: Submitter) -> None:
        self.ctx = ctx
        self.submitter = submitter

    @staticmethod
    def needs_proof(job: JobRecord) -> bool:
        """Whether ``job``'s batch must prove it is ours before any result of it is used.

        Batches adopted by reconciliation do, including those in job files from before nonces
        (their custom_ids are checked against the plain section ids, the best proof they have).
        """
        return job.ownership == "provisional" or (job.reconciled and job.ownership == "created")

    def mark_proven(self, job: JobRecord) -> None:
        """Tell the manifest's intent that its provisionally adopted batch is proven ours."""
        intent = self.ctx.store.load_intent(job.manifest_hash) if job.manifest_hash else None
        if intent is not None and intent.batch_id == job.id and intent.provisional:
            intent.provisional = False
            self.ctx.store.save_intent(intent)

    async def release(self, job: JobRecord, seen: Sequence[str]) -> dict[str, Any]:
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
        with self.ctx.store.lock(job.manifest_hash):
            job = self.ctx.store.load(job.id)
            if not job.is_released:
                job.ownership = "released"
                job.released_at = utcnow().isoformat()
                job.release_reason = reason
                job.results_processed_at = job.released_at
                job.failures, job.splits, job.request_usage = {}, {}, {}
                job.result_counts = ResultCounts()
                job.followup_state = "none"
                self.ctx.store.save(job)
                intent = self.ctx.store.load_intent(job.manifest_hash)
                if intent is not None and intent.batch_id == job.id:
                    intent.history.append({"batch_id": job.id, "state": "released"})
                    if job.id not in intent.released_batch_ids:
                        intent.released_batch_ids.append(job.id)
                    intent.state = "released"
                    intent.batch_id = None
                    intent.provisional = False
                    self.ctx.store.save_intent(intent)
                logger.error(
                    "batch %s was adopted provisionally after an ambiguous create, but it is not "
                    "ours: %s. Released: none of its results are used or counted, and it is not "
                    "canceled; its %d sections are submitted again",
                    job.id,
                    reason,
                    len(job.inputs),
                )
        failpoint("after_release")
        return await self.finish_release(job)

    async def finish_release(self, job: JobRecord) -> dict[str, Any]:
        """Submit the sections of a released job again (once) and link the new batch."""
        if job.replaced_by is None:
            group = self.ctx.store.read_payloads(job.manifest_hash)
            plan = BatchPlan(
                group=group,
                output_dir=Path(job.output_dir),
                model=job.model,
                manifest_hash=manifest_hash(group, job.model, self.ctx.backend),
                series_name=job.series_name,
                series=job.series,
                parent_batch_id=job.parent_batch_id,
                attempt=job.attempt,
                force_new=False,
                estimated_cost=job.estimated_cost or Cost(batch_usd=0.0, realtime_usd=0.0),
            )
            new = await self.submitter.submit(plan)
            self._link_replacement(job, new)
            job = self.ctx.store.load(job.id)
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
        self.ctx.store.save(released)
        if released.sibling_batch_ids:
            new.sibling_batch_ids = list(released.sibling_batch_ids)
            self.ctx.store.save(new)
            for sid in released.sibling_batch_ids:
                if self.ctx.store.exists(sid):
                    sib = self.ctx.store.load(sid)
                    sib.sibling_batch_ids = [
                        new.id if i == released.id else i for i in sib.sibling_batch_ids
                    ]
                    self.ctx.store.save(sib)
        parent_id = released.parent_batch_id
        if parent_id and self.ctx.store.exists(parent_id):
            parent = self.ctx.store.load(parent_id)
            parent.retry_batch_ids = [
                new.id if i == released.id else i for i in parent.retry_batch_ids
            ]
            if new.id not in parent.retry_batch_ids:
                parent.retry_batch_ids.append(new.id)
            for rec in parent.failures.values():
                if rec.resubmitted_in == released.id:
                    rec.resubmitted_in = new.id
                    write_failure(Path(parent.output_dir), rec)
            self.ctx.store.save(parent)
        logger.warning(
            "the sections of released batch %s went out again as batch %s", released.id, new.id
        )
