"""The completion sensor against a real batch: in progress, then ended, then already requested.

A loopback Anthropic-compatible server (the project's local API) holds the batch in progress with
``min_processing_seconds`` and an injected clock, so the test jumps ahead instead of sleeping.
``extraction_batch`` returns at once (``wait_inline=False``, as with the real API); the sensor
reads the job files, polls the server through the official SDK, requests the downstream run when
the batch ends, never requests it twice, and requests a new attempt when that run failed.
"""

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from fantasy_kg.defs import build_definitions
from fantasy_kg.defs.errors import RETRY_DELAY_ENV
from fantasy_kg.defs.keys import ATTEMPT_TAG, BATCH_ID_TAG
from fantasy_kg.defs.sensors import SENSOR_NAME
from fantasy_kg.domain import paths
from fantasy_kg.llm.jobs import JobStore
from fantasy_kg.local_api import LocalServer, start_local_server
from fantasy_kg_tests.dagster_support import (
    SERIES,
    Clock,
    materialize,
    materialized_keys,
    metadata_of,
    resources_for,
    resources_of,
)

DOWNSTREAM = {"extraction_results", "knowledge_graph", "cost_summary", "graph_view"}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(
    sample_data_dir: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalServer]:
    """A local API that keeps every batch in progress for an hour of (injected) time.

    The server answers in real time while the injected clock holds the batch open; these tests
    tick the sensor right after advancing the clock, so they need the answers computed by then.
    The rules alone answer in milliseconds; the entity tagger's load and pass take seconds on a
    busy machine and are not what the sensor tests are about.
    """
    monkeypatch.setenv("FANTASY_KG_TAGGER", "off")
    with start_local_server(
        paths.local_api_dir(sample_data_dir), clock=clock, min_processing_seconds=3600
    ) as srv:
        yield srv


def _defs(data_dir: Path, base_url: str) -> dg.Definitions:
    return build_definitions(
        data_dir,
        resources=resources_for(
            data_dir, backend="local", base_url=base_url, wait_inline=False, max_section_tokens=6000
        ),
    )


def _tick(
    defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None
) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources=resources_of(defs),
        definitions=defs,
        sensor_name=SENSOR_NAME,
    ) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def _requests(result: dg.SensorResult) -> list[dg.RunRequest]:
    return list(result.run_requests or [])


def _skip(result: dg.SensorResult) -> str:
    assert result.skip_reason is not None
    return str(result.skip_reason.skip_message)


def _end(server: LocalServer, clock: Clock, batch_id: str, timeout_s: float = 120.0) -> None:
    """Jump past the batch's hour in progress and wait for the server's worker to end it.

    The worker answers the requests and ends the batch in its own thread; on a busy machine that
    can take longer than the test takes to reach its next tick, which would then see the batch
    still in progress.
    """
    clock.advance(hours=2)
    deadline = time.monotonic() + timeout_s
    while server.store.load(batch_id)["processing_status"] != "ended":
        assert time.monotonic() < deadline, f"{batch_id} did not end within {timeout_s:.0f} s"
        time.sleep(0.05)


def _submit(defs: dg.Definitions, instance: dg.DagsterInstance) -> str:
    """Materialize everything; with the batch in progress only the first two assets land."""
    result = materialize(defs, instance)
    assert result.success, result.get_failed_step_keys()
    assert materialized_keys(result) == {"book_sections", "extraction_batch"}
    skipped = {e.step_key for e in result.get_step_skipped_events()}
    assert {"knowledge_graph", "cost_summary"} <= skipped
    batch = metadata_of(result, "extraction_batch")
    assert batch["status"] == "submitted"
    assert batch["processing_status"] == "in_progress"
    assert batch["waited_inline"] is False
    return str(batch["batch_id"])


def _run(defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest) -> Any:
    assert request.asset_selection is not None
    return materialize(
        defs,
        instance,
        selection=list(request.asset_selection),
        tags=dict(request.tags),
        partition=str(request.partition_key),
    )


def test_sensor_waits_then_requests_once_and_the_run_completes(
    sample_data_dir: Path, server: LocalServer, clock: Clock
) -> None:
    defs = _defs(sample_data_dir, server.base_url)
    with dg.instance_for_test() as instance:
        batch_id = _submit(defs, instance)
        sections = len(JobStore(paths.jobs_dir(sample_data_dir)).load(batch_id).inputs)

        in_progress = _tick(defs, instance, None)
        assert not _requests(in_progress)
        reason = _skip(in_progress)
        assert reason.startswith("1 batch(es) in progress: ")
        assert f"{SERIES} {batch_id}" in reason and f"/{sections}" in reason
        observed = in_progress.asset_events[0]
        assert isinstance(observed, dg.AssetObservation)
        assert observed.partition == SERIES
        assert observed.metadata["processing_status"].value == "in_progress"

        still = _tick(defs, instance, in_progress.cursor)
        assert not _requests(still)
        assert not still.asset_events  # nothing changed, nothing re-observed

        _end(server, clock, batch_id)
        ended = _tick(defs, instance, still.cursor)
        assert len(_requests(ended)) == 1
        request = _requests(ended)[0]
        assert request.run_key == f"{batch_id}:1"
        assert request.partition_key == SERIES
        assert {k.to_user_string() for k in request.asset_selection or []} == DOWNSTREAM
        assert request.tags == {BATCH_ID_TAG: batch_id, ATTEMPT_TAG: "1"}
        assert json.loads(str(ended.cursor))["requested"] == {batch_id: 1}

        again = _tick(defs, instance, ended.cursor)
        assert not _requests(again)
        assert f"{batch_id} (results run attempt 1)" in _skip(again)

        run = _run(defs, instance, request)
        assert run.success, run.get_failed_step_keys()
        assert materialized_keys(run) == DOWNSTREAM
        results = metadata_of(run, "extraction_results")
        assert results["batches_retrieved"] == [batch_id]
        assert results["succeeded"] == sections
        assert metadata_of(run, "knowledge_graph")["entities"] > 10
        assert all(e.passed for e in run.get_asset_check_evaluations())

        done = _tick(defs, instance, again.cursor)
        assert not _requests(done)
        assert _skip(done).startswith("no batch owes results")
        assert json.loads(str(done.cursor))["requested"] == {}


def _dead_url() -> str:
    """A loopback URL nobody listens on (connection refused, no waiting)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.slow
def test_failed_results_run_gets_a_new_attempt_key(
    sample_data_dir: Path, server: LocalServer, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    defs = _defs(sample_data_dir, server.base_url)
    with dg.instance_for_test() as instance:
        batch_id = _submit(defs, instance)
        _end(server, clock, batch_id)
        first = _tick(defs, instance, None)
        assert [r.run_key for r in _requests(first)] == [f"{batch_id}:1"]

        # The results run cannot reach the API: it fails and the batch still owes its results.
        # Its step still goes through all its retries, 0.1 s apart instead of 30, 60 and 120 s.
        monkeypatch.setenv(RETRY_DELAY_ENV, "0.1")
        broken = _defs(sample_data_dir, _dead_url())
        failed = _run(broken, instance, _requests(first)[0])
        assert not failed.success
        assert "extraction_results" in failed.get_failed_step_keys()
        assert not JobStore(paths.jobs_dir(sample_data_dir)).load(batch_id).is_settled

        retry = _tick(defs, instance, first.cursor)
        assert [r.run_key for r in _requests(retry)] == [f"{batch_id}:2"]
        assert _requests(retry)[0].tags[ATTEMPT_TAG] == "2"

        # A reset cursor must not reuse a key Dagster has already seen: attempts come from runs.
        reset = _tick(defs, instance, None)
        assert [r.run_key for r in _requests(reset)] == [f"{batch_id}:2"]

        ok = _run(defs, instance, _requests(retry)[0])
        assert ok.success
        assert _requests(_tick(defs, instance, retry.cursor)) == []


def test_sensor_survives_an_unreachable_api_and_leaves_a_busy_partition_alone(
    sample_data_dir: Path, server: LocalServer, clock: Clock
) -> None:
    defs = _defs(sample_data_dir, server.base_url)
    with dg.instance_for_test() as instance:
        batch_id = _submit(defs, instance)
        _end(server, clock, batch_id)

        # The API cannot be reached: the tick survives, says so, and requests nothing.
        unreachable = _tick(_defs(sample_data_dir, _dead_url()), instance, None)
        assert not _requests(unreachable)
        assert f"could not poll 1: {SERIES} {batch_id}: APIConnectionError" in _skip(unreachable)

        instance.create_run_for_job(
            defs.resolve_implicit_global_asset_job_def(),
            tags={"dagster/partition": SERIES},
            status=dg.DagsterRunStatus.STARTED,
        )
        busy = _tick(defs, instance, None)
        assert not _requests(busy)
        assert f"{SERIES} {batch_id} (run " in _skip(busy)
