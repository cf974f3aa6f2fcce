"""Status and polling: the server's view of a batch, written into its job file.

Any process can ask (the sensor, the CLI, another run): the job file is the shared state. Each
status call also looks for a late create of the batch's manifest while one may still land.
"""

import asyncio
from collections.abc import Awaitable, Callable

import anthropic

from fantasy_kg.llm.batch_context import BatchContext
from fantasy_kg.llm.batch_errors import definitive_error
from fantasy_kg.llm.jobs import BatchProcessingStatus, JobRecord
from fantasy_kg.llm.reconcile import Reconciler

#: Called with the job record after every status call while polling.
OnUpdate = Callable[[JobRecord], Awaitable[None] | None] | None


class StatusTracker:
    """Reads batch status from the server and keeps job files current.

    Args:
        ctx: The batch client's shared settings, clients and store.
        reconciler: Looks for late creates while a status call holds the chance.
    """

    def __init__(self, ctx: BatchContext, reconciler: Reconciler) -> None:
        self.ctx = ctx
        self.reconciler = reconciler

    async def get_batch_status(self, batch_id: str) -> JobRecord:
        """Refresh the job file from the server.

        See :meth:`AnthropicBatchProvider.get_batch_status`.
        """
        try:
            batch = await self.ctx.client.messages.batches.retrieve(batch_id)
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
            raise definitive_error(exc) from None
        if self.ctx.store.exists(batch_id):
            job = self.ctx.store.load(batch_id)
            job.update_from_batch(batch)
            self.ctx.store.save(job)
            await self.reconciler.sweep_for_job(job)
            return job
        job = JobRecord(id=batch.id, output_dir="", model="", backend=self.ctx.backend)
        job.update_from_batch(batch)
        return job

    async def poll_until_complete(
        self,
        batch_id: str,
        poll_interval_seconds: float,
        max_wait_hours: float,
        on_update: OnUpdate,
    ) -> JobRecord:
        """Poll until the batch has ended.

        See :meth:`AnthropicBatchProvider.poll_until_complete`.
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
        """Cancel the batch on the server and record its new state."""
        batch = await self.ctx.client.messages.batches.cancel(batch_id)
        if self.ctx.store.exists(batch_id):
            job = self.ctx.store.load(batch_id)
            job.update_from_batch(batch)
            self.ctx.store.save(job)
            return job
        job = JobRecord(id=batch.id, output_dir="", model="", backend=self.ctx.backend)
        job.update_from_batch(batch)
        return job
