"""Refresh the status of many batches with one ``batches.list`` walk instead of one call each.

Why it works this way: docs/architecture.md, "The batch client".
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from anthropic import AsyncAnthropic

from fantasy_kg.llm.jobs import JobRecord, JobStore

DEFAULT_PAGE_SIZE = 100
"""Batches per list call (the API allows up to 1,000)."""


@dataclass
class ListingRefresh:
    """What one listing walk did.

    Attributes:
        refreshed: Jobs whose status came from the listing (their job files are current).
        pages: List calls made.
    """

    refreshed: dict[str, JobRecord] = field(default_factory=dict)
    pages: int = 0


def needs_own_poll(store: JobStore, job: JobRecord) -> bool:
    """Whether a batch must be polled on its own (``get_batch_status``), not from a listing.

    A submission whose create call may still land late watches for that batch on every status
    call of its job (the provider's sweep); a listing would skip that.
    """
    if not job.manifest_hash:
        return False
    try:
        intent = store.load_intent(job.manifest_hash)
    except (OSError, ValueError):
        return True
    return intent is not None and intent.late_possible > 0


def _created(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _same(job: JobRecord, batch: Any) -> bool:
    counts = batch.request_counts
    c = job.request_counts
    return (
        job.processing_status == str(batch.processing_status)
        and c.processing == counts.processing
        and c.succeeded == counts.succeeded
        and c.errored == counts.errored
        and c.canceled == counts.canceled
        and c.expired == counts.expired
    )


async def refresh_by_listing(
    client: AsyncAnthropic,
    store: JobStore,
    jobs: Sequence[JobRecord],
    *,
    max_pages: int,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> ListingRefresh:
    """Update the job files of ``jobs`` from ``batches.list`` pages, newest first.

    The walk stops when every job was found, when a page reaches batches older than the oldest
    job (the list is newest first, so nothing further can match), or after ``max_pages``.
    A job file is rewritten only when its status or counts changed, and it is re-read just
    before, so a results run that wrote it meanwhile is not overwritten with an older copy.

    Raises:
        anthropic.APIError: the list call failed (the caller falls back to individual polls).
    """
    out = ListingRefresh()
    wanted = {j.id: j for j in jobs}
    if not wanted or max_pages <= 0:
        return out
    created = [c for c in (_created(j.created_at) for j in jobs) if c is not None]
    oldest = min(created) if len(created) == len(wanted) else None
    page = await client.messages.batches.list(limit=page_size)
    out.pages = 1
    while True:
        last: datetime | None = None
        for batch in page.data:
            last = _created(batch.created_at) or last
            job = wanted.pop(batch.id, None)
            if job is None:
                continue
            if not _same(job, batch):
                job = store.load(job.id)
                job.update_from_batch(batch)
                store.save(job)
            out.refreshed[job.id] = job
        if not wanted or out.pages >= max_pages or not page.has_next_page():
            break
        if oldest is not None and last is not None and last < oldest:
            break
        page = await page.get_next_page()
        out.pages += 1
    return out
