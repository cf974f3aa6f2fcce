"""Crash matrix: SIGKILL the real CLI at every failpoint where state changes, then run it again.

Exactly-once spend and "nothing lost" (design invariants 1 and 2) are claims about the worst
moment to die. Each scenario runs ``python -m fantasy_kg extract-batch`` as a subprocess with
``FANTASY_KG_FAILPOINT`` armed, so it dies with SIGKILL (no ``finally``, no flush) at that point;
then runs the command again without the failpoint and checks:

* the server holds exactly one batch per manifest (every custom_id is in exactly one batch; a
  follow-up batch holds only the requests that failed retryably),
* every custom_id is accounted for: a result file or a recorded failure, never both, never none,
* the result files are byte-identical to those of an uninterrupted run,
* job files name exactly the batches on the server,
* no temp file (``.<name>.<pid>.tmp``) is left anywhere in the data directory.

The API is a local server running in the test process (its state survives the client's death, as
the real API's does); the CLI reaches it through the ``anthropic`` backend with a fake key.
"""

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import dagster as dg
import pytest

from fantasy_kg.defs import build_definitions
from fantasy_kg.defs.sensors import SENSOR_NAME
from fantasy_kg.local_api import FaultPlan, ResultOverride
from fantasy_kg_tests.dagster_support import Clock, materialize, resources_for, resources_of
from fantasy_kg_tests.reliability.harness import (
    FAKE_KEY,
    REPO_ROOT,
    accounting,
    dump_duckdb,
    killed_by_sigkill,
    result_files,
    run_cli,
    section_custom_ids,
    server_batches,
    subprocess_env,
    synthetic_book,
    temp_leftovers,
    write_book,
)
from fantasy_kg_tests.reliability.rig import POLL, SERIES, Rig, make_sections, open_rig

SCENARIO_CATEGORY = "Crash matrix"


@pytest.fixture
def rig(data_dir: Path, tmp_path: Path) -> Iterator[Rig]:
    with open_rig(data_dir, tmp_path / "api") as rig:
        yield rig


@pytest.fixture(scope="module")
def reference_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Result files of an uninterrupted full run over the same sections (run in this process)."""
    root = tmp_path_factory.mktemp("reference")
    data_dir = root / "data"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FANTASY_KG_DATA_DIR", str(data_dir))
        with open_rig(data_dir, root / "api") as rig:
            res = rig.cli_here(mp, "extract-batch", "--mode", "full", "--poll-interval", POLL)
            assert res.exit_code == 0, res.stderr
            files = result_files(rig.out)
    assert len(files) >= 4
    return files


def assert_recovered(
    rig: Rig, reference: dict[str, str], retried: frozenset[str] = frozenset()
) -> None:
    """The invariants every crash scenario must end with."""
    batches = server_batches(rig.state_dir)
    seen = Counter(cid for b in batches for cid in b.custom_ids)
    assert set(seen) == set(rig.custom_ids)
    for cid in rig.custom_ids:
        expected = 2 if cid in retried else 1
        assert seen[cid] == expected, f"{cid} was sent in {seen[cid]} batches, expected {expected}"
    assert len(batches) == (2 if retried else 1), [b.id for b in batches]
    if retried:
        assert set(batches[-1].custom_ids) == retried
    states = accounting(rig.out, rig.custom_ids)
    assert set(states.values()) == {"result"}, states
    assert result_files(rig.out) == reference
    job_ids = {p.stem for p in (rig.data_dir / "batch_jobs").glob("*.json")}
    assert job_ids == {b.id for b in batches}
    assert temp_leftovers(rig.data_dir) == []


class CliResultLike(NamedTuple):
    exit_code: int
    stdout: str
    stderr: str


SUBMIT_POINTS = [
    ("before_intent", "submit", 0, "request payloads on disk, intent record not yet written"),
    ("before_create", "submit", 0, "intent record on disk, create call not made"),
    ("after_create", "submit", 1, "server created the batch, its id persisted nowhere"),
    ("after_persist", "submit", 1, "job file written, intent not yet marked created"),
    ("after_create", "full", 1, "same as after_create, inside --mode full"),
]


@pytest.mark.scenario(
    id="crash-{mode}-{failpoint}",
    injected="SIGKILL in `extract-batch --mode {mode}` at failpoint {failpoint} ({state})",
    checked="state at death as expected ({batches_at_death} batch(es) on server); re-run with "
    "--mode full: no create call if the batch exists, exactly one batch on the server, every "
    "custom_id has a result, results identical to an uninterrupted run, job files = server "
    "batches, no temp files",
)
@pytest.mark.parametrize(
    ("failpoint", "mode", "batches_at_death", "state"),
    SUBMIT_POINTS,
    ids=[f"{m}-{f}" for f, m, _, _ in SUBMIT_POINTS],
)
def test_crash_during_submission(
    rig: Rig,
    reference_results: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    failpoint: str,
    mode: str,
    batches_at_death: int,
    state: str,
) -> None:
    args = ["--mode", mode] + (["--poll-interval", POLL] if mode == "full" else [])
    killed = rig.cli(*args, failpoint=failpoint)
    assert killed_by_sigkill(killed), (killed.exit_code, killed.stderr[-2000:])
    assert len(server_batches(rig.state_dir)) == batches_at_death
    creates_before = len(rig.server.requests_to("batches.create"))
    recovered = rig.cli_here(
        monkeypatch, "extract-batch", "--mode", "full", "--poll-interval", POLL
    )
    assert recovered.exit_code == 0, recovered.stderr[-3000:]
    doc = recovered.json()
    assert doc["sections"] == doc["written"] == len(rig.custom_ids)
    creates_after = len(rig.server.requests_to("batches.create"))
    # A batch that exists is adopted or reused: the re-run makes no create call at all.
    assert creates_after - creates_before == (0 if batches_at_death else 1)
    assert_recovered(rig, reference_results)


RESULT_POINTS = [
    ("during_results:1", "after the first result line was handled"),
    ("during_results:3", "between result files (after the third)"),
    ("after_results", "all result files written, job not yet marked processed"),
]


@pytest.mark.scenario(
    id="crash-retrieve-{failpoint}",
    injected="SIGKILL in `extract-batch --mode retrieve` at {failpoint} ({state})",
    checked="re-run retrieve: exit 0, every custom_id has exactly one result file, results "
    "identical to an uninterrupted run, no second batch, no temp files",
)
@pytest.mark.parametrize(
    ("failpoint", "state"), RESULT_POINTS, ids=[f.replace(":", "-") for f, _ in RESULT_POINTS]
)
def test_crash_during_results(
    rig: Rig,
    reference_results: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    failpoint: str,
    state: str,
) -> None:
    batch_id = rig.submit_in_process(monkeypatch)
    killed = rig.cli("--mode", "retrieve", "--batch-id", batch_id, failpoint=failpoint)
    assert killed_by_sigkill(killed), (killed.exit_code, killed.stderr[-2000:])
    partial = accounting(rig.out, rig.custom_ids)
    assert "both" not in partial.values()
    again = rig.cli_here(monkeypatch, "extract-batch", "--mode", "retrieve", "--batch-id", batch_id)
    assert again.exit_code == 0, again.stderr[-3000:]
    doc = again.json()
    assert doc["submitted"] == len(rig.custom_ids)
    assert doc["followup_batch_id"] is None
    assert_recovered(rig, reference_results)


@pytest.fixture
def flaky_rig(data_dir: Path, tmp_path: Path) -> Iterator[Rig]:
    """A rig whose server answers one custom_id with overloaded_error in the first batch only."""
    victim = f"{SERIES}_section_02"
    plan = FaultPlan(results={victim: ResultOverride.errored("overloaded_error", times=1)})
    with open_rig(data_dir, tmp_path / "api", plan) as rig:
        assert rig.custom_ids[1] == victim
        yield rig


@pytest.mark.scenario(
    id="crash-retrieve-before_followup_create",
    injected="one request errored (overloaded_error) in the first batch; SIGKILL in retrieve "
    "right before the follow-up batch for it is created",
    checked="re-run --mode full: exactly one follow-up batch holding only the failed custom_id; "
    "every custom_id ends with a result; results identical to an uninterrupted run; no temp files",
)
def test_crash_before_followup(
    flaky_rig: Rig, reference_results: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = flaky_rig
    batch_id = rig.submit_in_process(monkeypatch)
    killed = rig.cli(
        "--mode", "retrieve", "--batch-id", batch_id, failpoint="before_followup_create"
    )
    assert killed_by_sigkill(killed), (killed.exit_code, killed.stderr[-2000:])
    assert len(server_batches(rig.state_dir)) == 1
    failures = accounting(rig.out, rig.custom_ids)
    assert failures[rig.custom_ids[1]] == "failure"  # recorded before dying, with its reason
    recovered = rig.cli_here(
        monkeypatch, "extract-batch", "--mode", "full", "--poll-interval", POLL
    )
    assert recovered.exit_code == 0, recovered.stderr[-3000:]
    assert_recovered(rig, reference_results, retried=frozenset({rig.custom_ids[1]}))


@pytest.mark.scenario(
    id="crash-local-backend-mid-processing",
    injected="`extract-batch --mode full --backend local` (server inside the CLI process) "
    "SIGKILLed after the 2nd result line: client and server die together, batch half-processed "
    "on disk",
    checked="re-run: the new process's server resumes the same batch from disk; exactly one "
    "batch; every custom_id has a result; results identical to the anthropic-backend run; no "
    "temp files",
)
def test_crash_with_the_embedded_local_backend(
    data_dir: Path, reference_results: dict[str, str]
) -> None:
    cids = make_sections(data_dir)
    env = subprocess_env(data_dir)
    args = ["extract-batch", "--mode", "full", "--backend", "local", "--poll-interval", POLL]
    killed = run_cli(*args, env={**env, "FANTASY_KG_FAILPOINT": "during_results:2"})
    assert killed_by_sigkill(killed), (killed.exit_code, killed.stderr[-2000:])
    again = run_cli(*args, env=env)
    assert again.exit_code == 0, again.stderr[-3000:]
    state_dir = data_dir / "local_api"
    batches = server_batches(state_dir)
    assert len(batches) == 1 and sorted(batches[0].custom_ids) == sorted(cids)
    assert set(accounting(data_dir / "extracted", cids).values()) == {"result"}
    assert result_files(data_dir / "extracted") == reference_results
    assert temp_leftovers(data_dir) == []


@pytest.mark.scenario(
    id="crash-load-during_load",
    injected="two series loaded into DuckDB; one result file of series A removed; `fantasy-kg "
    "load --series A` SIGKILLed inside its transaction after the 3rd table was replaced",
    checked="DuckDB holds exactly the old state of both series (every table compared row by row); "
    "re-run: series A equals a clean load into a fresh file, series B untouched, no temp files",
)
def test_crash_during_duckdb_load(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    other = make_sections(rig.data_dir, series="second_series", paragraphs=30)
    done = rig.cli_here(monkeypatch, "extract-batch", "--mode", "full", "--poll-interval", POLL)
    assert done.exit_code == 0, done.stderr[-3000:]
    assert rig.cli_here(monkeypatch, "load").exit_code == 0
    db = rig.data_dir / "fantasy_kg.duckdb"
    old = dump_duckdb(db)
    assert {r[0] for r in old["entities"]} == {SERIES, "second_series"}
    (rig.out / f"{rig.custom_ids[0]}_extracted.json").unlink()
    killed = run_cli("load", "--series", SERIES, env=rig.env(failpoint="during_load:3"))
    assert killed_by_sigkill(killed), (killed.exit_code, killed.stderr[-2000:])
    assert dump_duckdb(db) == old, "a killed load left a mix of old and new rows"
    again = rig.cli_here(monkeypatch, "load", "--series", SERIES)
    assert again.exit_code == 0, again.stderr[-2000:]
    new = dump_duckdb(db)
    fresh_db = rig.data_dir / "fresh.duckdb"
    fresh = rig.cli_here(monkeypatch, "load", "--series", SERIES, "--db", str(fresh_db))
    assert fresh.exit_code == 0, fresh.stderr[-2000:]
    clean = dump_duckdb(fresh_db)
    for table, rows in new.items():
        mine = [r for r in rows if r[0] == SERIES]
        assert mine == [r for r in clean.get(table, []) if r[0] == SERIES], table
        assert [r for r in rows if r[0] != SERIES] == [r for r in old[table] if r[0] != SERIES]
    assert new != old
    assert any(r[0] == SERIES for r in new["entities"])
    assert len(other) >= 2
    assert temp_leftovers(rig.data_dir) == []


def _dagster_materialize(
    rig: Rig, home: Path, select: str, failpoint: str | None = None
) -> CliResultLike:
    env = rig.env(failpoint, DAGSTER_HOME=str(home))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "fantasy_kg.definitions",
            "--select",
            select,
            "--partition",
            SERIES,
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return CliResultLike(proc.returncode, proc.stdout, proc.stderr)


def _book_only(data_dir: Path) -> list[str]:
    """The series' book, unsectioned: the materialization's book_sections asset sections it."""
    write_book(data_dir / "books" / SERIES, "01_book.txt", synthetic_book(70, seed=7))
    return []


def _dagster_defs(rig: Rig) -> dg.Definitions:
    return build_definitions(
        rig.data_dir,
        resources=resources_for(
            rig.data_dir,
            backend="anthropic",
            api_key=FAKE_KEY,
            base_url=rig.base_url,
            wait_inline=False,
        ),
    )


def _kill_and_rerun_materialization(rig: Rig, home: Path, clock: Clock) -> None:
    """SIGKILL a whole-graph materialization at after_create, re-run it, let the batch end."""
    killed = _dagster_materialize(rig, home, "*", failpoint="after_create")
    assert killed.exit_code == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(server_batches(rig.state_dir)) == 1
    creates = len(rig.server.requests_to("batches.create"))
    again = _dagster_materialize(rig, home, "*")
    assert again.exit_code == 0, again.stderr[-3000:]
    assert len(rig.server.requests_to("batches.create")) == creates  # adopted, not re-created
    clock.advance(hours=2)  # the batch ends while no run is watching it
    rig.wait_all_ended()


@pytest.mark.slow
@pytest.mark.scenario(
    id="crash-dagster-materialization-after_create",
    injected="`dagster asset materialize --select '*'` (anthropic backend, fake key, batches "
    "take an hour) SIGKILLed at after_create inside extraction_batch",
    checked="re-running the materialization adopts the orphaned batch (no create call); once it "
    "ends, materializing extraction_results* loads DuckDB: exactly one batch, every custom_id "
    "with a result, job files = server batches, no temp files",
)
def test_crash_in_a_dagster_materialization(data_dir: Path, tmp_path: Path) -> None:
    clock = Clock()
    with open_rig(
        data_dir, tmp_path / "api", clock=clock, min_processing_seconds=3600, sections=_book_only
    ) as rig:
        home = tmp_path / "dagster_home"
        home.mkdir()
        _kill_and_rerun_materialization(rig, home, clock)
        defs = _dagster_defs(rig)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            run = materialize(
                defs,
                instance,
                selection=dg.AssetSelection.assets("extraction_results").downstream(),
                partition=SERIES,
            )
            assert run.success, run.get_failed_step_keys()
        rig.custom_ids = section_custom_ids(data_dir / "sections")
        batches = server_batches(rig.state_dir)
        assert len(batches) == 1 and sorted(batches[0].custom_ids) == sorted(rig.custom_ids)
        assert set(accounting(rig.out, rig.custom_ids).values()) == {"result"}
        assert {p.stem for p in rig.jobs.glob("*.json")} == {batches[0].id}
        assert temp_leftovers(data_dir) == []
        assert dump_duckdb(data_dir / "fantasy_kg.duckdb")["entities"]


@pytest.mark.slow
@pytest.mark.scenario(
    id="crash-dagster-orphaned-run-vs-sensor",
    injected="as crash-dagster-materialization-after_create; then the completion sensor ticks "
    "once the batch has ended (the SIGKILLed run is still 'STARTED' in the instance)",
    checked="the sensor requests the results run for the partition",
)
def test_sensor_after_a_killed_dagster_run(data_dir: Path, tmp_path: Path) -> None:
    clock = Clock()
    with open_rig(
        data_dir, tmp_path / "api", clock=clock, min_processing_seconds=3600, sections=_book_only
    ) as rig:
        home = tmp_path / "dagster_home"
        home.mkdir()
        _kill_and_rerun_materialization(rig, home, clock)
        defs = _dagster_defs(rig)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            sensor = defs.resolve_sensor_def(SENSOR_NAME)
            with dg.build_sensor_context(
                instance=instance,
                resources=resources_of(defs),
                definitions=defs,
                sensor_name=SENSOR_NAME,
            ) as context:
                tick = sensor(context)
            assert isinstance(tick, dg.SensorResult)
            requests = list(tick.run_requests or [])
            assert [r.partition_key for r in requests] == [SERIES], tick.skip_reason
