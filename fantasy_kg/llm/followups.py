"""Follow-ups: send again only what failed in a processed batch, exactly once.

Retryable failures go into one follow-up batch; truncated answers go as their two halves;
sections of a batch whose results were archived can be resubmitted on purpose.
"""

import dataclasses
import logging
from pathlib import Path

from fantasy_kg.domain.failpoints import failpoint
from fantasy_kg.llm.batch_context import BatchContext
from fantasy_kg.llm.batch_errors import BatchNotEndedError
from fantasy_kg.llm.jobs import JobRecord
from fantasy_kg.llm.requests import PreparedRequest, half_custom_id, split_request
from fantasy_kg.llm.results import write_failure
from fantasy_kg.llm.submission import SubmitOptions, Submitter

logger = logging.getLogger(__name__)


class FollowUps:
    """Creates follow-up and resubmission batches for processed jobs.

    Args:
        ctx: The batch client's shared settings, clients and store.
        submitter: Sends the follow-up batches (exactly once, like any submission).
    """

    def __init__(self, ctx: BatchContext, submitter: Submitter) -> None:
        self.ctx = ctx
        self.submitter = submitter

    async def create_followup(self, batch_id: str) -> JobRecord | None:
        """Submit ONE follow-up batch of the retryable failures.

        See :meth:`AnthropicBatchProvider.create_followup`.
        """
        job = self.ctx.store.load(batch_id)
        if not job.is_settled:
            raise BatchNotEndedError(
                f"batch {batch_id} has not been processed yet: retrieve its results first"
            )
        if job.followup_state == "created" and job.retry_batch_ids:
            return self.ctx.store.load(job.retry_batch_ids[-1])
        if job.followup_state != "pending":
            return None
        requests = self._followup_requests(job)
        if not requests:
            job.followup_state = "none"
            self.ctx.store.save(job)
            return None
        failpoint("before_followup_create")
        new_jobs = await self.submitter.create_batches(
            requests,
            job.output_dir,
            job.model,
            job.series_name,
            SubmitOptions(series=job.series, parent_batch_id=job.id, attempt=job.attempt + 1),
        )
        job = self.ctx.store.load(batch_id)
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
        self.ctx.store.save(job)
        logger.info(
            "follow-up batch %s: %d requests retrying failures of %s",
            new_jobs[0].id,
            len(requests),
            batch_id,
        )
        return new_jobs[0]

    def _followup_requests(self, job: JobRecord) -> list[PreparedRequest]:
        """The retryable requests of ``job``: failed ones again, cut ones as their two halves."""
        payloads = {r.custom_id: r for r in self.ctx.store.read_payloads(job.manifest_hash)}
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

    async def resubmit_archived(self, batch_id: str) -> JobRecord | None:
        """Send again the requests of an archived batch that never got a result file."""
        job = self.ctx.store.load(batch_id)
        payloads = self.ctx.store.read_payloads(job.manifest_hash)
        todo = [
            r
            for r in payloads
            if not Path(job.local_request_mapping.get(r.custom_id, "")).is_file()
        ]
        if not todo:
            return None
        new_jobs = await self.submitter.create_batches(
            todo,
            job.output_dir,
            job.model,
            job.series_name,
            SubmitOptions(series=job.series, parent_batch_id=job.id, attempt=1, force_new=True),
        )
        job.retry_batch_ids.extend(j.id for j in new_jobs if j.id not in job.retry_batch_ids)
        for cid in job.failures:
            job.failures[cid].resubmitted_in = new_jobs[0].id
        job.followup_state = "created"
        self.ctx.store.save(job)
        return new_jobs[0]
