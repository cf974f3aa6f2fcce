"""The scale-out warehouse (``FANTASY_KG_WAREHOUSE=shards``): real processes, real Parquet files.

The same crafted series are loaded by real ``fantasy-kg load`` processes into a shard root:
two writers of different series are both mid-write at once (each has staged its version and
sits at the publish step, held there by ``FANTASY_KG_TEST_PAUSE_IN_LOAD``), readers during the
writes see the previous state of every series, a writer killed with SIGKILL before publishing
leaves its series as it was, and the one-file and scale-out engines hold the same rows and
answer the views and ``graph_as_of`` identically.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fantasy_kg.domain.errors import ConfigError
from fantasy_kg.pipeline.graph import load_series_from_files, run_sql
from fantasy_kg.pipeline.view import ViewError, write_view
from fantasy_kg.warehouse.load import connect
from fantasy_kg.warehouse.migrations import TABLES, VIEWS
from fantasy_kg.warehouse.shards import PAUSE_ENV, WAREHOUSE_ENV, CatalogCache, scale_out_root
from fantasy_kg_tests.graph_fixtures import (
    SERIES,
    crafted_ontology,
    crafted_results,
    write_job_file,
    write_results,
    write_series_sections,
)

OTHER = "other_tales"
FACTS = [t for t in TABLES if t != "load_runs"]
WAIT_S = 120.0


@pytest.fixture
def two_series(data_dir: Path) -> dict[str, Path]:
    """Sections, results and job files of two crafted series."""
    sections, extracted, jobs = data_dir / "sections", data_dir / "extracted", data_dir / "jobs"
    for series in (SERIES, OTHER):
        write_series_sections(sections, series=series)
        results = crafted_results(series=series)
        write_results(extracted, results)
        write_job_file(jobs, f"msgbatch_{series}", series, [r.custom_id for r in results])
    onto = data_dir / "schemas" / f"{SERIES}_schema.json"
    onto.parent.mkdir(parents=True, exist_ok=True)
    onto.write_text(crafted_ontology().model_dump_json(indent=2), encoding="utf-8")
    return {"sections": sections, "extracted": extracted, "jobs": jobs, "data": data_dir}


def _load(paths: dict[str, Path], series: str, db: Path) -> None:
    load_series_from_files(
        paths["sections"], paths["extracted"], series, db, jobs_dir=paths["jobs"]
    )


def _snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = connect(db, read_only=True)
    try:
        out = {t: conn.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in FACTS}
        for view in VIEWS:
            out[view] = conn.execute(f"SELECT * FROM {view} ORDER BY ALL").fetchall()
        for series in (SERIES, OTHER):
            out[f"as_of/{series}"] = conn.execute(
                "SELECT * FROM graph_as_of(?, 1) ORDER BY ALL", [series]
            ).fetchall()
            out[f"as_of_ch/{series}"] = conn.execute(
                "SELECT * FROM graph_as_of(?, 1, 1) ORDER BY ALL", [series]
            ).fetchall()
        return out
    finally:
        conn.close()


def test_both_engines_hold_the_same_rows_and_answer_the_same(
    two_series: dict[str, Path], monkeypatch: pytest.MonkeyPatch
):
    one_file = two_series["data"] / "one.duckdb"
    for series in (SERIES, OTHER):
        _load(two_series, series, one_file)
    expected = _snapshot(one_file)
    assert expected["entities"] and expected["character_network"] and expected["as_of/" + SERIES]

    monkeypatch.setenv(WAREHOUSE_ENV, "shards")
    sharded = two_series["data"] / "fantasy_kg.duckdb"
    assert _snapshot(sharded)["entities"] == []  # nothing published yet: empty, same schema
    for series in (SERIES, OTHER):
        _load(two_series, series, sharded)
    assert not sharded.exists()  # the one-file warehouse was never created
    assert _snapshot(sharded) == expected
    # Re-loading the same inputs publishes a new version with the very same rows.
    _load(two_series, SERIES, sharded)
    assert _snapshot(sharded) == expected
    runs = run_sql(sharded, "SELECT series, count(*) FROM load_runs GROUP BY ALL ORDER BY 1")[1]
    assert runs == [(OTHER, 1), (SERIES, 2)]


def test_a_series_scoped_catalog_holds_that_series_only_and_the_view_still_names_the_others(
    two_series: dict[str, Path], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(WAREHOUSE_ENV, "shards")
    db = two_series["data"] / "fantasy_kg.duckdb"
    for series in (SERIES, OTHER):
        _load(two_series, series, db)
    whole = connect(db, read_only=True)
    scoped = connect(db, read_only=True, series=SERIES)
    nowhere = connect(db, read_only=True, series="never_loaded")
    try:
        for table in ("entities", "relationships", "mentions", "entity_summary"):
            sql = f"SELECT * FROM {table} WHERE series = ? ORDER BY ALL"
            rows = scoped.execute(sql, [SERIES]).fetchall()
            assert rows and rows == whole.execute(sql, [SERIES]).fetchall()
            assert scoped.execute(f"SELECT DISTINCT series FROM {table}").fetchall() == [(SERIES,)]
            assert nowhere.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    finally:
        for conn in (whole, scoped, nowhere):
            conn.close()
    with pytest.raises(ConfigError, match="not a valid warehouse shard name"):
        connect(db, read_only=True, series="../escape")
    # The page of an unknown series still lists the series that are there.
    with pytest.raises(ViewError, match=f"series there: {OTHER}, {SERIES}"):
        write_view(db, "never_loaded", two_series["data"] / "never.html")


def test_a_run_reuses_a_series_catalog_until_that_series_is_published_again(
    two_series: dict[str, Path], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv(WAREHOUSE_ENV, "shards")
    db = two_series["data"] / "fantasy_kg.duckdb"
    _load(two_series, SERIES, db)
    root = scale_out_root(db)
    assert root is not None
    cache = CatalogCache(root)
    sql = "SELECT entity_id, name FROM entities WHERE series = ? ORDER BY ALL"
    try:
        with cache.connect(SERIES) as first:
            before = first.execute(sql, [SERIES]).fetchall()
        with cache.connect(SERIES) as again, cache.connect(OTHER) as other:
            assert again.execute(sql, [SERIES]).fetchall() == before
            assert other.execute("SELECT count(*) FROM entities").fetchone() == (0,)
        assert before and cache.opened == 2  # one per series, the second read reused it
        with cache.connect(SERIES) as reading:
            # Both series published while a reader is open: it keeps its snapshot, the next
            # connection opens the new versions (OTHER was empty, now it has rows).
            _load(two_series, SERIES, db)
            _load(two_series, OTHER, db)
            assert reading.execute(sql, [SERIES]).fetchall() == before
            with cache.connect(OTHER) as other:
                assert other.execute(sql, [OTHER]).fetchall()
        assert cache.opened == 3
        with cache.connect(SERIES) as fresh:
            assert fresh.execute(sql, [SERIES]).fetchall() == before
        assert cache.opened == 4
    finally:
        cache.close()
    with pytest.raises(ConfigError, match="not a valid warehouse shard name"), cache.connect(".."):
        pass


def _cli(paths: dict[str, Path], series: str, env: dict[str, str]) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "fantasy_kg", "load", "--series", series]
    args += ["--input-dir", str(paths["sections"]), "--extracted-dir", str(paths["extracted"])]
    args += ["--jobs-dir", str(paths["jobs"]), "--db", str(paths["data"] / "fantasy_kg.duckdb")]
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _staged(paths: dict[str, Path], series: str) -> int:
    """Version folders of a series (published or not)."""
    folder = paths["data"] / "fantasy_kg_shards" / f"series={series}"
    return len(list(folder.glob("v-*"))) if folder.exists() else 0


def _wait_until(check: Any, procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"writer ended early: {p.returncode} {p.communicate()[1]}")
        if time.monotonic() > deadline:
            raise AssertionError("writers did not reach the publish step")
        time.sleep(0.1)


def _sections_per_series(db: Path) -> dict[str, int]:
    rows = run_sql(db, "SELECT series, count(*) FROM extraction_failures GROUP BY ALL")[1]
    return {str(s): int(n) for s, n in rows}


@pytest.fixture
def published(two_series: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Both series published once in scale-out mode, then one result file removed from each."""
    monkeypatch.setenv(WAREHOUSE_ENV, "shards")
    db = two_series["data"] / "fantasy_kg.duckdb"
    for series in (SERIES, OTHER):
        _load(two_series, series, db)
        (two_series["extracted"] / f"{series}_section_03_extracted.json").unlink()
    return two_series


def test_two_processes_write_different_series_at_once_while_readers_see_the_old_state(
    published: dict[str, Path],
):
    db = published["data"] / "fantasy_kg.duckdb"
    before = _snapshot(db)
    env = {**os.environ, WAREHOUSE_ENV: "shards", PAUSE_ENV: "30"}
    writers = [_cli(published, s, env) for s in (SERIES, OTHER)]
    try:
        # Both writers have staged a new version and wait at the publish step at the same time:
        # neither holds anything the other needs.
        _wait_until(
            lambda: _staged(published, SERIES) == 2 and _staged(published, OTHER) == 2, writers
        )
        assert all(p.poll() is None for p in writers)
        # A reader in another process, during both writes, sees the previous state of each.
        reader = subprocess.run(
            [
                sys.executable,
                "-m",
                "fantasy_kg",
                "sql",
                "--db",
                str(db),
                "--format",
                "csv",
                "SELECT series, count(*) FROM entity_summary GROUP BY ALL ORDER BY 1",
            ],
            env={**os.environ, WAREHOUSE_ENV: "shards"},
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            check=False,
        )
        assert reader.returncode == 0, reader.stderr
        counts = {
            (r[0], len([x for x in before["entity_summary"] if x[0] == r[0]]))
            for r in before["entity_summary"]
        }
        assert {tuple(line.split(",")) for line in reader.stdout.split()[1:]} == {
            (s, str(n)) for s, n in counts
        }
        assert _snapshot(db) == before
        for p in writers:
            assert p.wait(timeout=WAIT_S) == 0, p.stderr.read() if p.stderr else ""
    finally:
        for p in writers:
            if p.poll() is None:
                p.kill()
    after = _snapshot(db)
    assert after != before
    missing = run_sql(
        db, "SELECT series, section_id FROM extraction_failures WHERE stage = 'missing' ORDER BY 1"
    )[1]
    assert missing == [(OTHER, "03"), (SERIES, "03")]


def test_sigkill_before_publish_keeps_the_previous_state_and_a_rerun_completes(
    published: dict[str, Path],
):
    db = published["data"] / "fantasy_kg.duckdb"
    before = _snapshot(db)
    env = {**os.environ, WAREHOUSE_ENV: "shards", PAUSE_ENV: "600"}
    writer = _cli(published, SERIES, env)
    try:
        _wait_until(lambda: _staged(published, SERIES) == 2, [writer])
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=WAIT_S) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
    assert _snapshot(db) == before  # the staged version is on disk but never published
    env.pop(PAUSE_ENV)
    rerun = _cli(published, SERIES, env)
    assert rerun.wait(timeout=WAIT_S) == 0, rerun.stderr.read() if rerun.stderr else ""
    after = _snapshot(db)
    assert after != before
    others = [t for t in FACTS if t not in ("batch_jobs", "costs")]
    for table in others:  # the other series is untouched
        assert [r for r in after[table] if r[0] == OTHER] == [
            r for r in before[table] if r[0] == OTHER
        ], table


def test_dagster_materializes_into_shards_with_described_columns_and_no_pool(
    sample_data_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    import dagster as dg

    from fantasy_kg.defs.warehouse import WarehouseResource
    from fantasy_kg.domain import paths
    from fantasy_kg_tests.dagster_support import SERIES as SAMPLE
    from fantasy_kg_tests.dagster_support import defs_for, materialize, metadata_of

    monkeypatch.setenv(WAREHOUSE_ENV, "shards")
    db = paths.warehouse_path(sample_data_dir)
    defs = defs_for(sample_data_dir)
    resources = dict(defs.resources or {})
    resources["duckdb"] = WarehouseResource(database=str(db))
    defs = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks, resources=resources)
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(defs, instance)
        assert result.success, result.get_failed_step_keys()
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks and all(checks.values()), checks
        graph = metadata_of(result, "knowledge_graph")
        # The checks and the metadata reuse the series' catalog: one open per publish
        # (knowledge_graph, cost_summary), not one per step.
        opened = [
            int(e.user_message.rsplit(":", 1)[1])
            for e in instance.all_logs(result.run_id)
            if e.user_message.startswith("warehouse catalogs opened by this run:")
        ]
        assert opened and 1 <= opened[0] <= 2, opened
    assert not db.exists()  # everything went to the shard root
    schema = graph["dagster/column_schema"]
    assert schema.columns and all(c.description for c in schema.columns)
    counts = run_sql(db, "SELECT count(*) FROM entity_summary WHERE series = ?", [SAMPLE])[1]
    assert counts[0][0] == graph["entities"]
    # In a code location started with the setting, the warehouse steps declare no pool.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fantasy_kg.defs.keys import WAREHOUSE_POOL; print(WAREHOUSE_POOL)",
        ],
        env={**os.environ, WAREHOUSE_ENV: "shards"},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        check=False,
    )
    assert probe.stdout.strip() == "None", probe.stderr


def test_writers_of_the_same_series_take_turns_and_a_killed_one_frees_the_series(
    published: dict[str, Path],
):
    db = published["data"] / "fantasy_kg.duckdb"
    before = _snapshot(db)
    paused = _cli(published, SERIES, {**os.environ, WAREHOUSE_ENV: "shards", PAUSE_ENV: "600"})
    second: subprocess.Popen[str] | None = None
    try:
        _wait_until(lambda: _staged(published, SERIES) == 2, [paused])
        second = _cli(published, SERIES, {**os.environ, WAREHOUSE_ENV: "shards"})
        # The second writer cannot stage while the first holds the series: it has not written
        # a version of its own, however long it has been running.
        for _ in range(30):
            assert second.poll() is None and _staged(published, SERIES) == 2
            time.sleep(0.1)
        paused.send_signal(signal.SIGKILL)
        assert paused.wait(timeout=WAIT_S) == -signal.SIGKILL
        # The kernel released the dead writer's lock: the second one stages and publishes.
        assert second.wait(timeout=WAIT_S) == 0, second.communicate()[1]
    finally:
        for p in (paused, second):
            if p is not None and p.poll() is None:
                p.kill()
    after = _snapshot(db)
    assert after != before
    missing = run_sql(
        db, "SELECT series, section_id FROM extraction_failures WHERE stage = 'missing'"
    )[1]
    assert missing == [(SERIES, "03")]
