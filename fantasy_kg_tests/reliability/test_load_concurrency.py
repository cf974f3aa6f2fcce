"""Load and concurrency: a 20,000-section series, 50 series in flight, runs that race each other.

Sizes: the one-series load runs ``$FANTASY_KG_RELIABILITY_LOAD_SECTIONS`` sections (default 1,000
so CI stays within minutes; ``scripts/reliability_report.py`` runs the full 20,000 unless
``--quick``). Wall time and peak RSS of each CLI step are measured on the real subprocess
(``os.wait4`` gives that child's own ``ru_maxrss``) and recorded in the report, never asserted.
"""

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from fantasy_kg.defs import build_definitions
from fantasy_kg.defs.sensors import SENSOR_NAME
from fantasy_kg.domain.sections import SectionMeta, section_file_name, text_sha256
from fantasy_kg.local_api import LocalServer, ResponderAnswer, start_local_server
from fantasy_kg_tests.dagster_support import Clock, resources_for, resources_of
from fantasy_kg_tests.reliability.harness import (
    FAKE_KEY,
    REPO_ROOT,
    accounting,
    run_cli_inprocess,
    server_batches,
    subprocess_env,
    synthetic_book,
    temp_leftovers,
    write_book,
)
from fantasy_kg_tests.reliability.rig import wait_for

SCENARIO_CATEGORY = "Load and concurrency"

LOAD_ENV = "FANTASY_KG_RELIABILITY_LOAD_SECTIONS"
LOAD_SECTIONS = int(os.environ.get(LOAD_ENV, "1000") or "1000")

_FAST_ANSWER = json.dumps(
    {
        "entities": [
            {
                "id": "mira_thorne",
                "type": "Character",
                "name": "Mira Thorne",
                "aliases": ["the Lantern Maid"],
                "attributes": [],
                "mentions": ["Mira Thorne"],
                "confidence": 0.9,
            },
            {
                "id": "aldous_thorne",
                "type": "Character",
                "name": "Aldous Thorne",
                "aliases": [],
                "attributes": [],
                "mentions": ["Aldous Thorne"],
                "confidence": 0.9,
            },
        ],
        "relationships": [
            {
                "source": "aldous_thorne",
                "target": "mira_thorne",
                "type": "ENEMY_OF",
                "description": "",
                "evidence": ["Aldous Thorne was the enemy of Mira Thorne"],
                "confidence": 0.8,
            }
        ],
        "schema_proposals": [],
    }
)


def fast_responder(params: dict[str, Any]) -> ResponderAnswer:
    """A constant valid answer: the load test measures the pipeline, not the baseline model."""
    return ResponderAnswer(text=_FAST_ANSWER)


def measured_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str, float, float]:
    """Run ``python -m fantasy_kg ARGS``; return exit code, stdout, stderr, wall s, peak RSS MB."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fantasy_kg", *args],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: dict[str, str] = {}

    def drain(name: str, stream: Any) -> None:
        out[name] = stream.read()

    readers = [
        threading.Thread(target=drain, args=("out", proc.stdout)),
        threading.Thread(target=drain, args=("err", proc.stderr)),
    ]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    wall = time.perf_counter() - start
    return proc.returncode, out["out"], out["err"], wall, usage.ru_maxrss / 1024


def write_synthetic_sections(folder: Path, series: str, n: int) -> None:
    """``n`` small pre-sectioned files in the documented layout (setup, not measured)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        text = (
            f"Mira Thorne rode to Emberfall on day {i}. Aldous Thorne was the enemy of Mira "
            f"Thorne, and the bells of the Ashen Keep rang {i} times."
        )
        meta = SectionMeta(
            series=series,
            section=i,
            books=["The Long Road"],
            input_tokens=45,
            sha256=text_sha256(text),
            chars=len(text),
        )
        name = section_file_name(series, i)
        (folder / name).write_text(text, encoding="utf-8")
        (folder / name).with_suffix(".meta.json").write_text(meta.model_dump_json(), "utf-8")


@pytest.mark.slow
@pytest.mark.scenario(
    id="load-one-series-many-sections",
    injected=f"one series of {LOAD_SECTIONS:,} synthetic sections (${LOAD_ENV}; the report runs "
    "20,000): pre-flight and request building, one submission to the local server, results "
    "processing, DuckDB load, each a real CLI subprocess",
    checked="every custom_id in exactly one batch and with exactly one result file; no "
    "failures; every section row and mention loaded; wall time and peak RSS recorded",
)
def test_one_series_with_many_sections(
    data_dir: Path, tmp_path: Path, scenario_metrics: dict[str, Any]
) -> None:
    series = "long_road"
    start = time.perf_counter()
    write_synthetic_sections(data_dir / "sections", series, LOAD_SECTIONS)
    scenario_metrics["sections"] = LOAD_SECTIONS
    scenario_metrics["setup: write section files (s)"] = round(time.perf_counter() - start, 1)
    with start_local_server(tmp_path / "api", responder=fast_responder) as server:
        env = subprocess_env(
            data_dir, ANTHROPIC_API_KEY=FAKE_KEY, ANTHROPIC_BASE_URL=server.base_url
        )
        code, out, err, wall, rss = measured_cli("extract-batch", "--mode", "submit", env=env)
        assert code == 0, err[-3000:]
        scenario_metrics["submit: wall (s)"] = round(wall, 1)
        scenario_metrics["submit: peak RSS (MB)"] = round(rss)
        batches = json.loads(out)["batches"]
        assert sum(b["requests"] for b in batches) == LOAD_SECTIONS
        start = time.perf_counter()
        wait_for(
            lambda: all(b.status == "ended" for b in server_batches(tmp_path / "api")),
            "the server to process the batch",
            timeout=1800,
        )
        scenario_metrics["server: processing (s)"] = round(time.perf_counter() - start, 1)
        for batch in batches:
            code, out, err, wall, rss = measured_cli(
                "extract-batch", "--mode", "retrieve", "--batch-id", batch["batch_id"], env=env
            )
            assert code == 0, err[-3000:]
            doc = json.loads(out)
            assert doc["failed"] == 0 and doc["followup_batch_id"] is None
        scenario_metrics["retrieve: wall (s)"] = round(wall, 1)
        scenario_metrics["retrieve: peak RSS (MB)"] = round(rss)
    on_server = [cid for b in server_batches(tmp_path / "api") for cid in b.custom_ids]
    assert len(on_server) == len(set(on_server)) == LOAD_SECTIONS
    states = accounting(data_dir / "extracted", on_server)
    assert set(states.values()) == {"result"}
    code, out, err, wall, rss = measured_cli("load", env=env)
    assert code == 0, err[-3000:]
    scenario_metrics["load into DuckDB: wall (s)"] = round(wall, 1)
    scenario_metrics["load into DuckDB: peak RSS (MB)"] = round(rss)
    with duckdb.connect(str(data_dir / "fantasy_kg.duckdb"), read_only=True) as conn:
        sections = conn.execute("SELECT count(*) FROM sections WHERE series = ?", [series])
        assert sections.fetchone() == (LOAD_SECTIONS,)
        mentions = conn.execute("SELECT count(*) FROM mentions WHERE series = ?", [series])
        # A mention is an occurrence: "Mira Thorne" twice and "Aldous Thorne" once per section.
        assert mentions.fetchone() == (3 * LOAD_SECTIONS,)
    assert temp_leftovers(data_dir) == []


# ------------------------------------------------------------------------------------------
# The completion sensor with 50 series in flight
# ------------------------------------------------------------------------------------------

N_SERIES = 50


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def held_server(tmp_path: Path, clock: Clock) -> Iterator[LocalServer]:
    """A server whose batches stay in progress for an hour of injected time."""
    with start_local_server(
        tmp_path / "api", clock=clock, min_processing_seconds=3600, responder=fast_responder
    ) as server:
        yield server


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> Any:
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


@pytest.mark.scenario(
    id="load-sensor-50-series-in-flight",
    injected=f"{N_SERIES} series partitions, each with a batch in progress on the server; then "
    "every batch ends at once",
    checked="tick while running: no run requested, one observation per batch; tick after the "
    f"end: exactly {N_SERIES} run requests, one per series, unique run keys; next tick: none "
    "(nothing requested twice); tick wall time recorded",
)
def test_sensor_with_50_series_in_flight(
    data_dir: Path,
    held_server: LocalServer,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
    scenario_metrics: dict[str, Any],
) -> None:
    slugs = [f"saga_{i:02d}" for i in range(N_SERIES)]
    for i, slug in enumerate(slugs):
        write_book(data_dir / "books" / slug, "01.txt", synthetic_book(6, seed=i))
    made = run_cli_inprocess(
        "sections",
        "--books-dir",
        str(data_dir / "books"),
        "--output-dir",
        str(data_dir / "sections"),
    )
    assert made.exit_code == 0, made.stderr
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", held_server.base_url)
    sub = run_cli_inprocess("extract-batch", "--mode", "submit")
    assert sub.exit_code == 0, sub.stderr[-2000:]
    assert sorted(b["series"] for b in sub.json()["batches"]) == slugs
    defs = build_definitions(
        data_dir,
        resources=resources_for(
            data_dir,
            backend="anthropic",
            api_key=FAKE_KEY,
            base_url=held_server.base_url,
            wait_inline=False,
        ),
    )
    with dg.instance_for_test() as instance:
        start = time.perf_counter()
        running = _tick(defs, instance, None)
        scenario_metrics["tick with 50 batches in progress (s)"] = round(
            time.perf_counter() - start, 2
        )
        assert not list(running.run_requests or [])
        assert len(running.asset_events) == N_SERIES
        assert str(running.skip_reason.skip_message).startswith(f"{N_SERIES} batch(es) in progress")
        clock.advance(hours=2)
        # The server's worker ends the batches in the background: tick once all have ended
        # (a fast tick could otherwise see one still finishing on a loaded machine).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(
            b.status != "ended" for b in server_batches(held_server.state_dir)
        ):
            time.sleep(0.2)
        start = time.perf_counter()
        ended = _tick(defs, instance, running.cursor)
        scenario_metrics["tick that requests 50 runs (s)"] = round(time.perf_counter() - start, 2)
        requests = list(ended.run_requests or [])
        assert sorted(str(r.partition_key) for r in requests) == slugs
        assert len({r.run_key for r in requests}) == N_SERIES
        again = _tick(defs, instance, ended.cursor)
        assert not list(again.run_requests or [])
    assert len(server_batches(held_server.state_dir)) == N_SERIES


# ------------------------------------------------------------------------------------------
# Two Dagster materializations at once
# ------------------------------------------------------------------------------------------


def _materialize_together(
    data_dir: Path, home: Path, partitions: list[str], select: str = "*"
) -> list[subprocess.CompletedProcess[str]]:
    """Start one ``dagster asset materialize`` per partition at the same moment; wait for all."""
    home.mkdir(parents=True, exist_ok=True)
    env = subprocess_env(data_dir, DAGSTER_HOME=str(home))
    # Dagster creates its SQLite storage on first use and two processes doing that at the same
    # moment race on `CREATE TABLE` ("table secondary_indexes already exists") inside Dagster.
    # A real DAGSTER_HOME is initialized once (by `dagster dev` or a first run), so do that here;
    # the scenario is about our concurrency (batch submission, DuckDB writes), not Dagster's.
    subprocess.run(
        [sys.executable, "-c", "import dagster as dg; dg.DagsterInstance.get().dispose()"],
        env=env,
        cwd=REPO_ROOT,
        check=True,
        timeout=120,
    )
    procs = [
        subprocess.Popen(
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
                partition,
            ],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for partition in partitions
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def _entities_per_series(db: Path) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute("SELECT series, count(*) FROM entities GROUP BY series").fetchall()
    return {str(s): int(n) for s, n in rows}


@pytest.mark.slow
@pytest.mark.scenario(
    id="concurrency-same-partition-twice",
    injected="two `dagster asset materialize --select '*' --partition alpha` processes started "
    "at the same moment (local backend: each run starts its own server on the shared state dir)",
    checked="both runs succeed; exactly one batch for the partition on the server; one job "
    "file; DuckDB holds the series once (no duplicate rows); no temp files",
)
def test_same_partition_materialized_twice_at_once(data_dir: Path, tmp_path: Path) -> None:
    write_book(data_dir / "books" / "alpha", "01.txt", synthetic_book(40, seed=1))
    runs = _materialize_together(data_dir, tmp_path / "dagster_home", ["alpha", "alpha"])
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
        assert "RUN_SUCCESS" in run.stderr
    batches = server_batches(data_dir / "local_api")
    assert len(batches) == 1, [b.id for b in batches]
    assert len(list((data_dir / "batch_jobs").glob("*.json"))) == 1
    db = data_dir / "fantasy_kg.duckdb"
    with duckdb.connect(str(db), read_only=True) as conn:
        dupes = conn.execute(
            "SELECT count(*) FROM (SELECT entity_id FROM entities GROUP BY series, entity_id "
            "HAVING count(*) > 1)"
        ).fetchone()
    assert dupes == (0,)
    assert _entities_per_series(db).get("alpha", 0) > 0
    assert temp_leftovers(data_dir) == []


@pytest.mark.slow
@pytest.mark.scenario(
    id="concurrency-two-partitions-together",
    injected="`dagster asset materialize --select '*'` for partitions alpha and beta started at "
    "the same moment: both runs load the same DuckDB file (one read-write process at a time)",
    checked="both runs succeed (no 'Could not set lock on file'); DuckDB holds both series; "
    "one batch per series; no temp files",
)
def test_two_partitions_materialized_together(data_dir: Path, tmp_path: Path) -> None:
    write_book(data_dir / "books" / "alpha", "01.txt", synthetic_book(40, seed=1))
    write_book(data_dir / "books" / "beta", "01.txt", synthetic_book(40, seed=2))
    runs = _materialize_together(data_dir, tmp_path / "dagster_home", ["alpha", "beta"])
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
        assert "Could not set lock" not in run.stderr
    per_series = _entities_per_series(data_dir / "fantasy_kg.duckdb")
    assert per_series.get("alpha", 0) > 0 and per_series.get("beta", 0) > 0
    batches = server_batches(data_dir / "local_api")
    assert sorted(b.custom_ids[0].split("_section_")[0] for b in batches) == ["alpha", "beta"]
    assert temp_leftovers(data_dir) == []
