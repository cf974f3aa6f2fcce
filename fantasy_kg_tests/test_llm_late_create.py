"""A batch create that times out and lands on the server late, after the retry created it again.

The submission itself watches for the late batch right after a timeout (covered by the
reliability scenario ``net-slow-create-past-timeout``). Here that watch is turned off
(``late_create_grace=0``), so the late batch lands while nothing is submitting.

While it runs, nothing shows whose the late batch is (the workspace is shared, design invariant
9). By default the next status poll finds it, reports it (``unproven_candidates``) and leaves it
alone: no cancel call, never used. Only with ``dedicated_workspace=True`` (the opt-in, the
behaviour before issue 12) does the poll cancel it while it is still queued (so it bills
nothing). Either way nothing afterwards may use it (results, cost, a re-run).
"""

import asyncio
import time
from pathlib import Path
from typing import Any

from fantasy_kg.domain.schemas import ExtractionResult
from fantasy_kg.domain.sections import read_sections
from fantasy_kg.llm import AnthropicBatchProvider, build_extraction_batch_request
from fantasy_kg.llm.jobs import JobStore
from fantasy_kg.local_api import Fault, FaultPlan
from fantasy_kg_tests.llm_support import (
    FAKE_KEY,
    MODEL,
    SERIES,
    batches_on_server,
    make_sections,
    server,
)


def _requests(sections_dir: Path) -> list[dict[str, Any]]:
    # max_tokens leaves room for the whole answer plus the model's thinking: the local backend
    # cuts an answer that does not fit (as Claude does), and this test is not about splitting.
    return [
        build_extraction_batch_request(
            sec.stem, f"Extract entities.\n\n{sec.text}", MODEL, ExtractionResult, 16000, None
        )
        for sec in read_sections(sections_dir, SERIES)
    ]


def test_late_create_is_canceled_by_the_next_status_poll_with_a_dedicated_workspace(
    tmp_path: Path, data_dir: Path
) -> None:
    make_sections(data_dir / "sections")
    requests = _requests(data_dir / "sections")
    jobs, out = data_dir / "jobs", data_dir / "out"
    plan = FaultPlan(faults=(Fault.slow("batches.create", 3.0),))
    with server(tmp_path / "api", plan, min_processing_seconds=4.0) as srv:

        async def run() -> tuple[Any, ...]:
            provider = AnthropicBatchProvider(
                api_key=FAKE_KEY,
                jobs_dir=jobs,
                base_url=srv.base_url,
                timeout=1.0,
                retry_base_delay=0.05,
                late_create_grace=0.0,
                dedicated_workspace=True,
            )
            job = await provider.create_batch(requests, out, MODEL)
            created_before_landing = len(batches_on_server(srv))
            # The timed-out create is answered (and logged) once the server has carried it out.
            while len(srv.requests_to("batches.create")) < 2:
                await asyncio.sleep(0.05)
            status = await provider.get_batch_status(job.id)
            await provider.poll_until_complete(job.id, poll_interval_seconds=0.1)
            summary = await provider.process_results_to_files(job.id)
            again = await provider.create_batch(requests, out, MODEL)
            await provider.close()
            return job, created_before_landing, status, summary, again

        job, created_before_landing, status, summary, again = asyncio.run(run())
        deadline = time.monotonic() + 60
        while not all(b.processing_status == "ended" for b in batches_on_server(srv)):
            assert time.monotonic() < deadline, "the duplicate never ended"
            time.sleep(0.1)
        on_server = {b.id: b for b in batches_on_server(srv)}
        creates = len(srv.requests_to("batches.create"))

    assert created_before_landing == 1
    (dupe,) = set(on_server) - {job.id}
    # Found by the status poll, canceled while queued: nothing of it ran, so nothing is billed.
    assert status.duplicate_batch_ids == [dupe]
    assert on_server[dupe].request_counts.succeeded == 0
    assert on_server[dupe].request_counts.canceled == len(requests)
    store = JobStore(jobs)
    intent = store.load_intent(status.manifest_hash)
    assert intent is not None
    assert intent.duplicate_batch_ids == [dupe] and intent.late_possible == 0
    # The duplicate never becomes a job: no results from it, no cost, never reused by a re-run.
    assert not store.exists(dupe)
    assert summary["processed"] == len(requests) and summary["batch_id"] == job.id
    assert set(store.load(job.id).request_usage) == {r["custom_id"] for r in requests}
    assert again.id == job.id and creates == 2


def test_late_create_is_reported_and_left_alone_by_default(tmp_path: Path, data_dir: Path) -> None:
    make_sections(data_dir / "sections")
    requests = _requests(data_dir / "sections")
    jobs, out = data_dir / "jobs", data_dir / "out"
    plan = FaultPlan(faults=(Fault.slow("batches.create", 3.0),))
    with server(tmp_path / "api", plan, min_processing_seconds=4.0) as srv:

        async def run() -> tuple[Any, ...]:
            provider = AnthropicBatchProvider(
                api_key=FAKE_KEY,
                jobs_dir=jobs,
                base_url=srv.base_url,
                timeout=1.0,
                retry_base_delay=0.05,
                late_create_grace=0.0,
            )
            job = await provider.create_batch(requests, out, MODEL)
            while len(srv.requests_to("batches.create")) < 2:
                await asyncio.sleep(0.05)
            status = await provider.get_batch_status(job.id)
            await provider.poll_until_complete(job.id, poll_interval_seconds=0.1)
            summary = await provider.process_results_to_files(job.id)
            again = await provider.create_batch(requests, out, MODEL)
            await provider.close()
            return job, status, summary, again

        job, status, summary, again = asyncio.run(run())
        deadline = time.monotonic() + 60
        while not all(b.processing_status == "ended" for b in batches_on_server(srv)):
            assert time.monotonic() < deadline, "the late batch never ended"
            time.sleep(0.1)
        on_server = {b.id: b for b in batches_on_server(srv)}
        cancels = srv.requests_to("batches.cancel")
        looked_at = [e.path for e in srv.requests_to("batches.retrieve")]
        looked_at += [e.path for e in srv.requests_to("batches.results")]
        creates = len(srv.requests_to("batches.create"))

    (late,) = set(on_server) - {job.id}
    # The server's log is the witness: no cancel call at all, the late batch never read.
    assert cancels == []
    assert not [path for path in looked_at if late in path]
    assert on_server[late].request_counts.canceled == 0
    # Reported, in the job file and the intent, and never adopted.
    assert [c.batch_id for c in status.unproven_candidates] == [late]
    assert status.duplicate_batch_ids == []
    store = JobStore(jobs)
    intent = store.load_intent(status.manifest_hash)
    assert intent is not None and intent.unproven_batch_ids == [late]
    assert not store.exists(late)
    assert summary["processed"] == len(requests) and summary["batch_id"] == job.id
    assert again.id == job.id and creates == 2
