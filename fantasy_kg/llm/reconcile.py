"""Reconciliation: find the batch an interrupted or ambiguous create may have made.

Lists the workspace's batches, adopts at most one provisionally, reports (or, in a dedicated
workspace, cancels) the others, and keeps looking for creates that may land late. Why it works
this way: docs/architecture.md, "Exactly-once submission" and "Only batches proven ours".
"""

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import anthropic

from fantasy_kg.domain.errors import TransientError
from fantasy_kg.llm.backend import unreachable_message
from fantasy_kg.llm.batch_context import CLOCK_SKEW, BatchContext, as_datetime
from fantasy_kg.llm.batch_errors import never_sent
from fantasy_kg.llm.jobs import (
    BatchProcessingStatus,
    IntentRecord,
    JobRecord,
    UnprovenCandidate,
    utcnow,
)

logger = logging.getLogger(__name__)


def could_own(other: IntentRecord, created: datetime) -> bool:
    """Whether a batch created at ``created`` may belong to another submission ``other``.

    ``other`` is in flight or crashed (pending) or may itself have a late create: any batch of its
    size created after its window opened (until its own ``watch_until``) could be its own.
    """
    start = as_datetime(other.window_start)
    if start is None or created < start - CLOCK_SKEW:
        return False
    if other.state == "pending":
        return True
    until = as_datetime(other.watch_until)
    return until is not None and created <= until + CLOCK_SKEW


class Reconciler:
    """Searches the server's batch list on behalf of one submission's intent.

    Args:
        ctx: The batch client's shared settings, clients and store.
    """

    def __init__(self, ctx: BatchContext) -> None:
        self.ctx = ctx
        self._last_list_error: BaseException | None = None

    async def reconcile(
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
        start = as_datetime(intent.window_start)
        if start is None:
            return None
        end_raw = as_datetime(intent.window_end)
        end = (end_raw or start + timedelta(seconds=self.ctx.timeout)) + CLOCK_SKEW
        lower = start - CLOCK_SKEW
        candidates = await self._list_candidates(intent, lower, end, self._claimed_batch_ids())
        if candidates is None:
            failed = self._last_list_error
            if failed is not None and never_sent(failed):
                raise TransientError(unreachable_message(str(self.ctx.client.base_url), failed))
            raise TransientError(
                "cannot list batches to reconcile an interrupted submission: re-run later; "
                "nothing will be submitted until the list succeeds"
            )
        if not candidates:
            return None

        def rank(batch: Any) -> tuple[float, datetime, str]:
            created = as_datetime(batch.created_at) or start
            if call is None:
                return (0.0, created, batch.id)
            # Distance (s) from the failed call: a batch created while it ran is likeliest ours.
            before = (call[0] - created).total_seconds()
            after = (created - call[1]).total_seconds()
            return (max(0.0, before, after), created, batch.id)

        candidates.sort(key=rank)
        keep, others = candidates[0], candidates[1:]
        if self.ctx.dedicated_workspace:
            intent.late_possible = max(0, intent.late_possible - len(candidates))
            await self._cancel_duplicates(intent, others)
        else:
            # ``keep`` may be someone else's, so a late create may still come: later calls keep
            # looking (to report, never to cancel) until the window closes.
            self.note_unproven(intent, others, keep.id)
        return keep

    async def _list_candidates(
        self, intent: IntentRecord, lower: datetime, upper: datetime, claimed: set[str]
    ) -> list[Any] | None:
        """Unclaimed batches of ``intent``'s size created in ``[lower, upper]``.

        Returns ``None`` when the list call failed.
        """
        found = []
        try:
            async for batch in self.ctx.client.messages.batches.list(limit=100):
                created = as_datetime(batch.created_at)
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

    def note_unproven(self, intent: IntentRecord, batches: Sequence[Any], job_id: str) -> None:
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
                as_datetime(batch.created_at),
                intent.manifest_hash[:12],
            )
            intent.unproven_batch_ids.append(batch.id)
        self.ctx.store.save_intent(intent)
        if job_id and self.ctx.store.exists(job_id):
            job = self.ctx.store.load(job_id)
            known = {c.batch_id for c in job.unproven_candidates}
            for batch in new:
                if batch.id not in known:
                    job.unproven_candidates.append(
                        UnprovenCandidate(
                            batch_id=batch.id,
                            created_at=str(as_datetime(batch.created_at) or "") or None,
                            request_count=intent.request_count,
                        )
                    )
            self.ctx.store.save(job)

    def _claimed_batch_ids(self) -> set[str]:
        """Batches that belong to some job file or intent here: never adopted or canceled."""
        claimed = self.ctx.store.known_batch_ids()
        for other in self.ctx.store.all_intents():
            claimed |= other.claimed_batch_ids()
        return claimed

    async def _cancel_duplicates(self, intent: IntentRecord, dupes: Sequence[Any]) -> None:
        """Cancel batches that repeat ``intent``'s manifest and record them in the intent.

        Only with a dedicated workspace: nothing proves a running batch is ours, and canceling
        someone else's is the one harm this client must never do uninvited.
        """
        if not self.ctx.dedicated_workspace:
            self.note_unproven(intent, dupes, intent.batch_id or "")
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
                    await self.ctx.client.messages.batches.cancel(dupe.id)
                except anthropic.APIError:
                    logger.warning("could not cancel duplicate batch %s", dupe.id)
            if dupe.id not in intent.duplicate_batch_ids:
                intent.duplicate_batch_ids.append(dupe.id)
        if dupes:
            self.ctx.store.save_intent(intent)

    async def sweep_late_duplicates(self, intent: IntentRecord, keep_id: str) -> None:
        """Look for a batch that an earlier failed create of ``intent`` made after all.

        Runs (caller holds the manifest lock) while the intent counts failed creates that may
        land late and its ``watch_until`` (the failed call's timeout plus a grace) has not
        passed. A candidate is created inside the submission window, has the manifest's request
        count, and is claimed by no job file or intent. Nothing proves a running batch is ours,
        so by default candidates are only reported (:meth:`note_unproven`). With a dedicated
        workspace they are canceled, except one that another in-flight submission of the same
        size here could own. List errors are only logged: the next status, poll or re-run looks
        again.
        """
        until = as_datetime(intent.watch_until)
        start = as_datetime(intent.window_start)
        if intent.late_possible <= 0 or until is None or start is None or utcnow() > until:
            return
        lower, upper = start - CLOCK_SKEW, until + CLOCK_SKEW
        claimed = self._claimed_batch_ids() | {keep_id}
        listed = await self._list_candidates(intent, lower, upper, claimed)
        if listed is None:
            logger.warning("no look for a late create this time: will look again later")
            return
        if not self.ctx.dedicated_workspace:
            self.note_unproven(intent, listed, keep_id)
            return
        rivals = [
            other
            for other in self.ctx.store.all_intents()
            if other.manifest_hash != intent.manifest_hash
            and other.request_count == intent.request_count
            and (other.state == "pending" or other.late_possible > 0)
        ]
        found = []
        for batch in listed:
            created = as_datetime(batch.created_at)
            if created is not None and any(could_own(other, created) for other in rivals):
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
        if self.ctx.store.exists(keep_id):
            job = self.ctx.store.load(keep_id)
            job.duplicate_batch_ids = list(
                dict.fromkeys([*job.duplicate_batch_ids, *(b.id for b in found)])
            )
            self.ctx.store.save(job)

    async def sweep_for_job(self, job: JobRecord) -> None:
        """Look for a late create of ``job``'s manifest if its submission had one pending.

        Skipped when another process holds the manifest lock (it is submitting or sweeping).
        """
        if not job.manifest_hash:
            return
        intent = self.ctx.store.load_intent(job.manifest_hash)
        if intent is None or intent.late_possible <= 0 or intent.batch_id != job.id:
            return
        with self.ctx.store.lock(job.manifest_hash, blocking=False) as locked:
            if not locked:
                return
            intent = self.ctx.store.load_intent(job.manifest_hash)
            if intent is not None and intent.batch_id == job.id:
                await self.sweep_late_duplicates(intent, job.id)
                if intent.duplicate_batch_ids or intent.unproven_batch_ids:
                    saved = self.ctx.store.load(job.id)
                    job.duplicate_batch_ids = saved.duplicate_batch_ids
                    job.unproven_candidates = saved.unproven_candidates
