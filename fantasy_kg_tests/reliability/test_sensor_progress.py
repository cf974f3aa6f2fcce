"""The completion sensor always makes progress, however many batches pile up.

Real sensor evaluations (``build_sensor_context``) against the project's loopback Anthropic API
through the real SDK; the server's request log is the witness of which batches each tick asked
about. 200 batches that never end (the server keeps them in progress) must not starve 5 newer
ones, and settled job files must not be parsed on a tick.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import dagster as dg
import pytest

from fantasy_kg.defs.keys import EXTRACTION_BATCH, STUCK_CHECK
from fantasy_kg.defs.sensors import build_completion_sensor
from fantasy_kg.domain import paths
from fantasy_kg.domain.catalog import default_model
from fantasy_kg.llm.backend import LOCAL_API_KEY
from fantasy_kg.llm.jobs import JobRecord, JobStore, job_files_parsed
from fantasy_kg.local_api import LocalServer, start_local_server
from fantasy_kg_tests.dagster_support import SERIES, Clock, defs_for, resources_of

SCENARIO_CATEGORY = "Sensor progress"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(sample_data_dir: Path, clock: Clock) -> Iterator[LocalServer]:
    """A local API whose batches stay in progress (for a year of injected time)."""
    with start_local_server(
        paths.local_api_dir(sample_data_dir), clock=clock, min_processing_seconds=3.0e7
    ) as srv:
        yield srv


def _submit(srv: LocalServer, store: JobStore, n: int, tag: str) -> list[str]:
    """Create ``n`` one-request batches on the server and their job files, as a submit would."""
    client = anthropic.Anthropic(api_key=LOCAL_API_KEY, base_url=srv.base_url, max_retries=0)
    ids = []
    try:
        for i in range(n):
            batch = client.messages.batches.create(
                requests=[
                    {
                        "custom_id": f"{SERIES}_section_{i:03d}",
                        "params": {
                            "model": default_model(),
                            "max_tokens": 64,
                            "messages": [{"role": "user", "content": f"{tag} {i}"}],
                        },
                    }
                ]
            )
            job = JobRecord(
                id=batch.id,
                output_dir=str(store.root.parent / "extracted"),
                model=default_model(),
                series=SERIES,
                series_name=SERIES,
                backend="local",
            )
            job.update_from_batch(batch)
            job.submitted_at = job.created_at
            store.save(job)
            ids.append(batch.id)
    finally:
        client.close()
    return ids


def _settled(store: JobStore, n: int) -> None:
    for i in range(n):
        job = JobRecord(
            id=f"msgbatch_settled{i:05d}",
            output_dir="/tmp/out",
            model=default_model(),
            series=SERIES,
            backend="local",
            processing_status="ended",
            submitted_at=f"2025-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
            results_processed_at="2025-01-02T00:00:00+00:00",
        )
        store.save(job)


class _Ticker:
    """Evaluates one sensor definition tick after tick, carrying its cursor."""

    def __init__(self, data_dir: Path, srv: LocalServer, **options: Any) -> None:
        self.defs = defs_for(data_dir, backend="local", base_url=srv.base_url, wait_inline=False)
        self.sensor = build_completion_sensor(partition_keys=[SERIES], **options)
        self.srv = srv
        self.cursor: str | None = None
        self.instance = dg.DagsterInstance.ephemeral()

    def tick(self) -> tuple[dg.SensorResult, set[str], int]:
        """One tick: its result, the batch ids it retrieved one by one, and its list calls."""
        before_get = len(self.srv.requests_to("batches.retrieve"))
        before_list = len(self.srv.requests_to("batches.list"))
        with dg.build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources=resources_of(self.defs),
            definitions=self.defs,
        ) as context:
            result = self.sensor(context)
        assert isinstance(result, dg.SensorResult)
        self.cursor = result.cursor
        got = {
            e.path.rsplit("/", 1)[-1] for e in self.srv.requests_to("batches.retrieve")[before_get:]
        }
        return result, got, len(self.srv.requests_to("batches.list")) - before_list

    @property
    def polled(self) -> dict[str, float]:
        return dict(json.loads(self.cursor or "{}").get("polled", {}))


@pytest.mark.scenario(
    id="sensor-200-owed-5-new-listing",
    injected=(
        "200 batches that never end (held in progress by the server) with job files, then 5 "
        "new in-progress batches; real sensor evaluations"
    ),
    checked=(
        "tick 1 refreshes all 200 with 2 batches.list calls and no retrieve; the tick after "
        "the 5 new ones are submitted refreshes each of them (within 2 ticks), again with "
        "list calls only"
    ),
)
def test_new_batches_are_polled_within_two_ticks_by_listing(
    sample_data_dir: Path, server: LocalServer
) -> None:
    store = JobStore(paths.jobs_dir(sample_data_dir))
    old = _submit(server, store, 200, "old")
    ticker = _Ticker(sample_data_dir, server)

    _, retrieved, lists = ticker.tick()
    assert set(ticker.polled) == set(old)  # all 200 from one listing walk
    assert retrieved == set() and lists == 2  # 100 batches a page, newest first

    new = _submit(server, store, 5, "new")
    second, retrieved, lists = ticker.tick()
    assert set(new) <= set(ticker.polled)
    assert lists <= 5 and retrieved == set()
    assert not second.run_requests


@pytest.mark.scenario(
    id="sensor-200-owed-round-robin",
    injected="as sensor-200-owed-5-new-listing with listing off and 50 API calls per tick",
    checked=(
        "each tick makes exactly 50 retrieves, nobody is polled twice before everyone once; "
        "the 5 new batches are polled in the next tick; every batch again within 5 ticks"
    ),
)
@pytest.mark.slow
def test_round_robin_polls_new_batches_first_and_every_batch_in_bounded_ticks(
    sample_data_dir: Path, server: LocalServer
) -> None:
    store = JobStore(paths.jobs_dir(sample_data_dir))
    old = _submit(server, store, 200, "old")
    # Listing off: every status is one retrieve, 50 real calls per tick.
    ticker = _Ticker(sample_data_dir, server, max_list_pages=0, max_polls_per_tick=50)
    seen: set[str] = set()
    for _ in range(4):
        _, retrieved, lists = ticker.tick()
        assert len(retrieved) == 50 and lists == 0
        assert not retrieved & seen  # nobody is polled twice before everyone is polled once
        seen |= retrieved
    assert seen == set(old)

    new = _submit(server, store, 5, "new")
    _, retrieved, _ = ticker.tick()
    assert set(new) <= retrieved and len(retrieved) == 50  # never polled: first in line
    rounds = [retrieved]
    for _ in range(4):
        rounds.append(ticker.tick()[1])
    assert set().union(*rounds) == set(old) | set(new)  # everyone again within 5 ticks


@pytest.mark.scenario(
    id="sensor-settled-jobs-not-parsed",
    injected="300 settled job files and 2 in-progress batches on disk",
    checked="a tick parses exactly the 2 owed job files (job index), none of the 300 settled ones",
)
def test_settled_job_files_are_not_parsed_on_a_tick(
    sample_data_dir: Path, server: LocalServer
) -> None:
    store = JobStore(paths.jobs_dir(sample_data_dir))
    _settled(store, 300)
    owed = _submit(server, store, 2, "owed")
    ticker = _Ticker(sample_data_dir, server)
    ticker.tick()  # builds nothing new: every file was indexed when it was saved
    before = job_files_parsed()
    result, _, _ = ticker.tick()
    assert job_files_parsed() - before == len(owed)  # 300 settled files on disk, none read
    assert "2 batch(es) in progress" in str(result.skip_reason)


@pytest.mark.scenario(
    id="sensor-stuck-batch-reported",
    injected=(
        "a batch still in progress on the server although its job file says it expired in 2020"
    ),
    checked=(
        "the tick's skip reason and log name it as stuck and a failing batches_not_stuck "
        "check evaluation is emitted for its partition (once); it passes again when the batch"
        " settles"
    ),
)
def test_a_batch_stuck_past_its_expiry_is_reported_in_the_log_and_the_check(
    sample_data_dir: Path, server: LocalServer, clock: Clock
) -> None:
    store = JobStore(paths.jobs_dir(sample_data_dir))
    [batch_id] = _submit(server, store, 1, "stuck")
    job = store.load(batch_id)
    job.expires_at = "2020-01-01T00:00:00+00:00"  # the server has not expired it: stuck
    store.save(job)
    # A listing would refresh expires_at from the server; poll from the job file's view only.
    ticker = _Ticker(sample_data_dir, server, max_list_pages=0, max_polls_per_tick=0)
    result, _, _ = ticker.tick()
    checks = [e for e in result.asset_events or [] if isinstance(e, dg.AssetCheckEvaluation)]
    assert len(checks) == 1
    assert checks[0].asset_key == EXTRACTION_BATCH and checks[0].check_name == STUCK_CHECK
    assert checks[0].partition == SERIES and not checks[0].passed
    assert f"{batch_id}: still in_progress" in str(checks[0].description)
    assert "stuck: " in str(result.skip_reason)

    # Unchanged on the next tick: the check is not re-sent; once settled it passes again.
    again, _, _ = ticker.tick()
    assert not [e for e in again.asset_events or [] if isinstance(e, dg.AssetCheckEvaluation)]
    job = store.load(batch_id)
    job.processing_status = "ended"
    job.results_processed_at = "2026-01-01T00:00:00+00:00"
    store.save(job)
    cleared, _, _ = ticker.tick()
    [ok] = [e for e in cleared.asset_events or [] if isinstance(e, dg.AssetCheckEvaluation)]
    assert ok.passed and ok.partition == SERIES
