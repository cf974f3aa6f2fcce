"""Transient failures are retried by Dagster's RetryPolicy; bad input fails once and for all.

Real materializations of the series assets against the project's loopback Anthropic API with
injected faults (429 and 500 answers on create and list), and a real DuckDB lock held by another
process for the load. The server's request log and the run's events are the witnesses.
"""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from fantasy_kg.domain import paths
from fantasy_kg.local_api import Fault, FaultPlan, LocalServer, start_local_server
from fantasy_kg_tests.dagster_support import defs_for, materialize, materialized_keys

SCENARIO_CATEGORY = "Transient versus permanent failures"


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry at once instead of after 30 s (read when the definitions are built)."""
    monkeypatch.setenv("FANTASY_KG_RETRY_DELAY_SECONDS", "0.2")


@pytest.fixture
def api(sample_data_dir: Path) -> Iterator[LocalServer]:
    with start_local_server(paths.local_api_dir(sample_data_dir), faults=FaultPlan()) as srv:
        yield srv


def _defs(data_dir: Path, srv: LocalServer, **overrides: object) -> dg.Definitions:
    return defs_for(
        data_dir, backend="local", base_url=srv.base_url, max_section_tokens=6000, **overrides
    )


def _retries(result: dg.ExecuteInProcessResult, step: str) -> int:
    return sum(
        1
        for e in result.all_events
        if e.event_type_value == "STEP_UP_FOR_RETRY" and e.step_key == step
    )


@pytest.mark.scenario(
    id="retry-create-exhausted-429",
    injected=(
        "four 429s (retry-after 0) on batch create use up the client's four create attempts "
        "inside a Dagster materialization of every asset"
    ),
    checked=(
        "the step fails as retryable and the RetryPolicy runs it again; the partition "
        "succeeds (knowledge_graph materialized); 5 create calls, one batch"
    ),
)
def test_create_exhausted_by_429s_is_retried_and_the_partition_succeeds(
    sample_data_dir: Path, api: LocalServer
) -> None:
    # Four 429s use up the provider's four create attempts: "could not create the batch".
    api.set_faults(
        FaultPlan(
            faults=(
                Fault("batches.create", "error", calls=(0, 1, 2, 3), status=429, retry_after=0),
            )
        )
    )
    with dg.instance_for_test() as instance:
        result = materialize(_defs(sample_data_dir, api), instance)
    assert result.success, result.get_failed_step_keys()
    assert _retries(result, "extraction_batch") == 1
    assert "knowledge_graph" in materialized_keys(result)
    assert len(api.requests_to("batches.create")) == 5  # 4 refused + 1 accepted: one batch


@pytest.mark.scenario(
    id="retry-list-failed-during-reconcile",
    injected=(
        "an ambiguous 500 on batch create, then 500 on every batches.list call of the "
        "reconciliation (the SDK's own retries included)"
    ),
    checked=(
        "the step is retried once by the RetryPolicy and the partition succeeds; exactly 2 "
        "create calls (nothing submitted twice)"
    ),
)
def test_list_failure_during_reconciliation_is_retried(
    sample_data_dir: Path, api: LocalServer
) -> None:
    # A 500 on create is ambiguous: the client lists batches to reconcile, and the list keeps
    # failing (the SDK's own retries included) -> "cannot list batches" -> the step is retried.
    api.set_faults(
        FaultPlan(
            faults=(
                Fault("batches.create", "error", calls=(0,), status=500),
                Fault("batches.list", "error", calls=(0, 1, 2, 3), status=500, retry_after_ms=1),
            )
        )
    )
    with dg.instance_for_test() as instance:
        result = materialize(_defs(sample_data_dir, api), instance)
    assert result.success, result.get_failed_step_keys()
    assert _retries(result, "extraction_batch") == 1
    assert len(api.requests_to("batches.create")) == 2  # nothing was submitted twice


@pytest.mark.scenario(
    id="retry-bad-input-not-retried",
    injected=(
        "batch create answers 400 invalid_request_error on every call (the API rejects the "
        "request itself)"
    ),
    checked=(
        "the step fails once with one line (the API rejected the batch), no retry event, "
        "exactly one create call"
    ),
)
def test_bad_input_is_not_retried(sample_data_dir: Path, api: LocalServer) -> None:
    # A 400 is the API rejecting the request itself: retrying cannot help.
    api.set_faults(FaultPlan(faults=(Fault("batches.create", "error", calls=None, status=400),)))
    with dg.instance_for_test() as instance:
        result = materialize(_defs(sample_data_dir, api), instance)
    assert not result.success
    assert "extraction_batch" in result.get_failed_step_keys()
    assert _retries(result, "extraction_batch") == 0
    assert len(api.requests_to("batches.create")) == 1
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "the API rejected the batch" in str(failure.step_failure_data.error)


_HOLD = """
import sys, time, duckdb
conn = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.close()
"""


@pytest.mark.scenario(
    id="retry-duckdb-lock-held",
    injected=(
        "another process holds the DuckDB file's lock for 8 s while knowledge_graph loads; "
        "lock_wait_seconds=1"
    ),
    checked=(
        "the run log says it is waiting for the lock; the load fails as 'stayed locked' "
        "(retryable), the RetryPolicy retries it until the lock is free, and the partition "
        "succeeds"
    ),
)
def test_load_waiting_for_a_held_duckdb_lock_is_retried_and_says_so(
    sample_data_dir: Path, api: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process holds the lock for 8 s; each attempt waits 1 s for it, so the first
    # attempt fails (transient) and the policy's retries (0.5 s, 1 s, 2 s, ...) outlast the hold.
    monkeypatch.setenv("FANTASY_KG_RETRY_DELAY_SECONDS", "0.5")
    monkeypatch.setenv("FANTASY_KG_RETRY_MAX", "8")
    defs = _defs(sample_data_dir, api, lock_wait_seconds=1.0)
    db = paths.warehouse_path(sample_data_dir)
    with dg.instance_for_test() as instance:
        first = materialize(
            defs,
            instance,
            selection=[dg.AssetKey(k) for k in ("book_sections", "extraction_batch")],
        )
        assert first.success
        first_results = materialize(defs, instance, selection=[dg.AssetKey("extraction_results")])
        assert first_results.success
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD, str(db), "8"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            result = materialize(defs, instance, selection=[dg.AssetKey("knowledge_graph")])
        finally:
            holder.wait(timeout=60)
        assert result.success, result.get_failed_step_keys()
        assert _retries(result, "knowledge_graph") >= 1
        logs = [str(e.message) for e in instance.all_logs(result.run_id) if e.message is not None]
        assert any("waiting for the DuckDB lock held by another process" in m for m in logs)
        retried = [
            str(e.dagster_event.event_specific_data)
            for e in instance.all_logs(result.run_id)
            if e.dagster_event is not None
            and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"
        ]
        assert retried and all("stayed locked by another process" in t for t in retried)
