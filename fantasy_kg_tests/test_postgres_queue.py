"""The PostgreSQL instance in ``deploy/postgres``: daemon, run queue and partitions at once.

A real PostgreSQL cluster (``pg_support.postgres_server``), a code server and the real
``dagster-daemon`` on the shipped instance config and workspace, runs submitted with
``dagster job backfill`` and launched by the queue (each run a process of its own, four at a
time), the local backend, tiny synthetic series. The kill test SIGKILLs one run inside its
knowledge_graph load transaction with the project's ``during_load`` failpoint (armed only in
the code server that launches that run).
"""

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import sqlalchemy
import sqlalchemy.exc
import yaml

from fantasy_kg.defs.keys import DUCKDB_POOL
from fantasy_kg.domain import paths
from fantasy_kg_tests.dagster_support import table_snapshot
from fantasy_kg_tests.pg_support import (
    CODE_LOCATION_MODULE,
    CODE_LOCATION_NAME,
    PG_INSTANCE_DIR,
    PG_URL_ENV,
    PostgresServer,
    QueuedDagster,
    failure_report,
    pg_scalar,
    pg_sessions,
    postgres_server,
    shipped_instance_config,
    shipped_workspace_config,
    write_test_home,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_BOOK = REPO_ROOT / "data" / "books" / "ashen_crown" / "01_the_lantern_road.txt"
N_SERIES = 20
MAX_RUNS = 4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh database for this test's Dagster instance."""
    return pg_server.create_database()


def _paragraphs(count: int) -> str:
    text = SAMPLE_BOOK.read_text(encoding="utf-8")
    return "\n\n".join(text.split("\n\n")[:count]) + "\n"


def write_series(data_dir: Path, n: int) -> list[str]:
    """``n`` tiny one-book series (a few paragraphs of the sample each); their slugs."""
    slugs = []
    for i in range(n):
        slug = f"series_{i:02d}"
        folder = paths.books_dir(data_dir) / slug
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "01_book.txt").write_text(f"Book of {slug}\n\n" + _paragraphs(6), "utf-8")
        slugs.append(slug)
    return slugs


def _env(data_dir: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANTASY_KG_")}
    env.update(
        {
            PG_URL_ENV: url,
            "FANTASY_KG_DATA_DIR": str(data_dir),
            # The rule-based extractor alone: the tagger's model load would dominate tiny runs.
            "FANTASY_KG_TAGGER": "off",
            "FANTASY_KG_SENSOR_INTERVAL_SECONDS": "30",
        }
    )
    return env


def _series_in_warehouse(db: Path) -> dict[str, int]:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        rows = conn.execute("SELECT series, count(*) FROM entities GROUP BY series").fetchall()
    finally:
        conn.close()
    return {str(s): int(n) for s, n in rows}


def _batch_jobs(data_dir: Path) -> set[str]:
    return {p.name for p in paths.jobs_dir(data_dir).glob("*.json")}


def _lock_errors(instance: dg.DagsterInstance, runs: list[dg.DagsterRun]) -> list[str]:
    found = []
    for run in runs:
        for record in instance.all_logs(run.run_id):
            text = record.message or ""
            if "Could not set lock" in text or "Conflicting lock" in text:
                found.append(f"{run.tags.get('dagster/partition')}: {text[:200]}")
    return found


COST_TABLES = ("batch_jobs", "costs")
"""Tables the cost_summary step replaces, in its own transaction before knowledge_graph's."""


def _without(rows: list[tuple[object, ...]], series: str) -> list[tuple[object, ...]]:
    """Rows of other series (every table has a ``series`` column)."""
    return [r for r in rows if series not in r]


def _partition_of(run: dg.DagsterRun) -> str:
    return run.tags.get("dagster/partition", "")


def test_shipped_workspace_points_at_one_code_server_of_the_projects_location() -> None:
    """deploy/postgres/workspace.yaml: the services connect to a code server started on its own
    (docs/deploy.md), serving the location the repository's workspace.yaml loads in-process."""
    own = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text(encoding="utf-8"))
    (module,) = [entry["python_module"] for entry in own["load_from"]]
    entries = shipped_workspace_config()["load_from"]
    assert isinstance(entries, list)
    (server,) = [entry["grpc_server"] for entry in entries]
    assert (module["module_name"], module["location_name"]) == (
        CODE_LOCATION_MODULE,
        CODE_LOCATION_NAME,
    )
    assert server == {"host": "localhost", "port": 4000, "location_name": CODE_LOCATION_NAME}
    # The documented command starts exactly that server.
    docs = (REPO_ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert (
        f"dagster code-server start -m {CODE_LOCATION_MODULE} --location-name {CODE_LOCATION_NAME}"
        f" -h 0.0.0.0 -p {server['port']}"
    ) in docs
    assert "dagster-daemon run -w deploy/postgres/workspace.yaml" in docs


def test_shipped_instance_config_is_queued_on_postgres(pg_url: str, tmp_path: Path) -> None:
    config = shipped_instance_config()
    assert config["storage"]["custom"]["module"] == "fantasy_kg.pg_storage"  # type: ignore[index]
    assert config["storage"]["custom"]["config"]["postgres_url"] == {"env": PG_URL_ENV}  # type: ignore[index]
    runs = config["concurrency"]["runs"]  # type: ignore[index]
    assert runs["max_concurrent_runs"] == MAX_RUNS
    assert {
        "key": "dagster/partition",
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 1,
    } in runs["tag_concurrency_limits"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PG_URL_ENV, pg_url)
        instance = dg.DagsterInstance.from_config(str(PG_INSTANCE_DIR))
        try:
            for storage in (
                instance.run_storage,
                instance.event_log_storage,
                instance.schedule_storage,
            ):  # fantasy_kg.pg_storage: a pool per storage, not a connection per query
                assert type(getattr(storage, "_engine").pool).__name__ == "QueuePool"  # noqa: B009
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            # Runs of a backfill are launched in parallel, not one code-location load at a time.
            assert instance.run_coordinator.dequeue_use_threads  # type: ignore[attr-defined]
            assert instance.run_coordinator.dequeue_num_workers >= MAX_RUNS  # type: ignore[attr-defined]
            settings = instance.get_concurrency_config()
            assert settings.run_queue_config is not None
            assert settings.run_queue_config.max_concurrent_runs == MAX_RUNS
            assert settings.run_queue_config.max_user_code_failure_retries == 3
            assert instance.run_coordinator.dequeue_interval_seconds == 1  # type: ignore[attr-defined]
            assert settings.pool_config.default_pool_limit == 1
            assert instance.run_monitoring_enabled
        finally:
            instance.dispose()
    # What Dagster writes next to the config in DAGSTER_HOME stays out of Git.
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(PG_INSTANCE_DIR / "storage" / "run.log")],
        cwd=REPO_ROOT,
        check=False,
    )
    assert ignored.returncode == 0


def test_the_shipped_storage_reuses_connections_and_survives_dropped_ones(pg_url: str) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PG_URL_ENV, pg_url)
        instance = dg.DagsterInstance.from_config(str(PG_INSTANCE_DIR))
        try:
            instance.get_runs_count()
            instance.event_log_storage.get_pool_limits()
            before = pg_sessions(pg_url)
            for _ in range(40):
                instance.get_runs_count()
                instance.event_log_storage.get_pool_limits()
            # 80 queries: each storage reused its one connection (Dagster's own storage opens
            # one per query); the probe itself is one session.
            assert pg_sessions(pg_url) - before <= 3
            # A server restart or a proxy closes idle connections: the next query reconnects.
            killed = pg_scalar(
                pg_url,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            assert isinstance(killed, int) and killed >= 2
            assert instance.get_runs_count() == 0
            assert instance.event_log_storage.get_pool_limits() is not None
        finally:
            instance.dispose()


def test_the_writer_pool_limit_set_beforehand_keeps_runs_out_of_dagsters_creation_race(
    pg_url: str, tmp_path: Path
) -> None:
    """Dagster creates a pool's limit row on a run's first claim of the pool. On PostgreSQL the
    second creator's transaction aborts and its run fails (dagster#33552; it failed runs of
    this file's backfills). Set once with ``dagster instance concurrency set``, as
    docs/deploy.md says, the limit is no longer "from default" and no claim creates it.
    """
    dagster = QueuedDagster(
        write_test_home(tmp_path / "home"), _env(tmp_path / "data", pg_url), tmp_path
    )
    first, second = dagster.instance(), dagster.instance()
    try:
        first.event_log_storage.initialize_concurrency_limit_to_default(DUCKDB_POOL)
        with pytest.raises(sqlalchemy.exc.InternalError, match="InFailedSqlTransaction"):
            second.event_log_storage.initialize_concurrency_limit_to_default(DUCKDB_POOL)

        dagster.set_writer_pool_limit()
        pools = {pool.name: pool for pool in first.event_log_storage.get_pool_limits()}
        assert pools[DUCKDB_POOL].limit == 1
        # What a run's claim checks before creating the row (InstanceConcurrencyContext.claim).
        assert not pools[DUCKDB_POOL].from_default
    finally:
        first.dispose()
        second.dispose()


def test_twenty_partitions_four_at_a_time_then_a_rerun_creates_no_batch(
    pg_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    slugs = write_series(data_dir, N_SERIES)
    dagster = QueuedDagster(write_test_home(tmp_path / "home"), _env(data_dir, pg_url), tmp_path)
    instance = dagster.instance()
    dagster.start()
    try:
        servers = dagster.code_location_servers()
        assert len(servers["code server"]) == 1 and "daemon" not in servers, servers
        dagster.backfill(slugs)
        runs, most = dagster.wait_for_runs(instance, N_SERIES)
        failed = [
            (_partition_of(r), r.status) for r in runs if r.status != dg.DagsterRunStatus.SUCCESS
        ]
        assert not failed, f"{failed}\n{failure_report(instance, runs)}"
        assert sorted(_partition_of(r) for r in runs) == slugs
        # The queue, not the machine, decided how many ran at once.
        assert 1 < most <= MAX_RUNS
        assert not _lock_errors(instance, runs)

        db = paths.warehouse_path(data_dir)
        loaded = _series_in_warehouse(db)
        assert sorted(loaded) == slugs and all(n > 0 for n in loaded.values())
        jobs, before = _batch_jobs(data_dir), table_snapshot(db)
        assert len(jobs) >= N_SERIES

        dagster.backfill(slugs)
        rerun, _ = dagster.wait_for_runs(instance, 2 * N_SERIES)
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in rerun)
        assert _batch_jobs(data_dir) == jobs, "the rerun created a batch"
        assert table_snapshot(db) == before
        # Minutes of daemon refreshes later, the code was still loaded once: the daemon and the
        # backfills used the code server of deploy/postgres/workspace.yaml, and started none.
        assert dagster.code_location_servers() == servers
    finally:
        dagster.stop()
        instance.dispose()


def test_a_run_killed_mid_load_keeps_the_previous_state_and_reruns(
    pg_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    slugs = write_series(data_dir, MAX_RUNS)
    victim = slugs[1]
    home = write_test_home(
        tmp_path / "home", poll_interval_seconds=1, free_slots_after_run_end_seconds=1
    )
    dagster = QueuedDagster(home, _env(data_dir, pg_url), tmp_path)
    instance = dagster.instance()
    try:
        dagster.start()
        dagster.backfill(slugs)
        runs, _ = dagster.wait_for_runs(instance, len(slugs))
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        db = paths.warehouse_path(data_dir)
        before = table_snapshot(db)
        dagster.stop()

        # New text for the victim, so that its next load changes its rows.
        book = paths.books_dir(data_dir) / victim / "01_book.txt"
        book.write_text(book.read_text("utf-8") + "\n" + _paragraphs(12), "utf-8")

        # A code server whose run workers die with SIGKILL inside a load transaction: the failpoint
        # counts replaced tables per process; cost_summary replaces two (batch_jobs, costs) in
        # its own transaction, so the 4th lands inside knowledge_graph's, after its first
        # tables' rows were already deleted and re-inserted.
        known = {r.run_id for r in runs}
        dagster.start({"FANTASY_KG_FAILPOINT": "during_load:4"})
        dagster.backfill([victim])
        killed, step = dagster.wait_for_killed_run(instance, victim, known)
        dagster.stop()
        assert step == "knowledge_graph", step
        killed_state = table_snapshot(db)
        for table, rows in killed_state.items():
            if table in COST_TABLES:
                # cost_summary finished before the kill: its commit stands, for the victim only.
                assert _without(rows, victim) == _without(before[table], victim), table
            else:
                assert rows == before[table], f"a killed load changed {table}"

        # The code server usually marks the run failed when it sees its worker gone; if not,
        # do what an operator does for a run whose process is gone (the UI's force-terminate):
        # mark it failed. Run monitoring frees its pool slot, and the series runs again.
        fresh = instance.get_run_by_id(killed.run_id)
        if fresh is not None and not fresh.is_finished:
            instance.report_run_failed(killed, "run worker killed with SIGKILL by the test")
        known.add(killed.run_id)
        dagster.start()
        dagster.backfill([victim])
        runs, _ = dagster.wait_for_runs(instance, len(known) + 1)
        rerun = [r for r in runs if r.run_id not in known]
        assert [r.status for r in rerun] == [dg.DagsterRunStatus.SUCCESS], dagster.daemon_log()[
            -3000:
        ]
        after = table_snapshot(db)
        for table, rows in after.items():
            assert _without(rows, victim) == _without(before[table], victim), table
        assert _series_in_warehouse(db)[victim] > 0
        assert after != before, "the re-run did not load the victim's new text"
    finally:
        dagster.stop()
        instance.dispose()


def _catalog_snapshot(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table a reader of the scale-out warehouse sees (sorted)."""
    from fantasy_kg.warehouse.load import connect

    conn = connect(db, read_only=True)
    try:
        tables = [
            str(r[0])
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW' "
                "OR table_type = 'BASE TABLE'"
            ).fetchall()
        ]
        return {
            t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr)
            for t in tables
            # load_runs grows with every load; schema_migrations is made at connect (in memory).
            if t not in ("load_runs", "schema_migrations")
        }
    finally:
        conn.close()


def test_scale_out_warehouse_run_killed_mid_load_keeps_the_published_state(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FANTASY_KG_WAREHOUSE=shards: a run SIGKILLed between staging and publishing its series."""
    data_dir = tmp_path / "data"
    slugs = write_series(data_dir, 3)
    victim = slugs[0]
    env = {**_env(data_dir, pg_url), "FANTASY_KG_WAREHOUSE": "shards"}
    monkeypatch.setenv("FANTASY_KG_WAREHOUSE", "shards")
    home = write_test_home(
        tmp_path / "home", poll_interval_seconds=1, free_slots_after_run_end_seconds=1
    )
    dagster = QueuedDagster(home, env, tmp_path)
    instance = dagster.instance()
    db = paths.warehouse_path(data_dir)
    try:
        dagster.start()
        dagster.backfill(slugs)
        runs, _ = dagster.wait_for_runs(instance, len(slugs))
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        before = _catalog_snapshot(db)
        assert before["entities"]
        dagster.stop()

        book = paths.books_dir(data_dir) / victim / "01_book.txt"
        book.write_text(book.read_text("utf-8") + "\n" + _paragraphs(12), "utf-8")
        known = {r.run_id for r in runs}
        # Each warehouse step (cost_summary, knowledge_graph: whichever comes first) sleeps
        # between staging the series and publishing it; the test kills the run worker there
        # with SIGKILL from outside, like an OOM kill.
        dagster.start({"FANTASY_KG_TEST_PAUSE_IN_LOAD": "600"})
        dagster.backfill([victim])
        run = dagster.wait_for_step(instance, victim, known, ("cost_summary", "knowledge_graph"))
        time.sleep(5)  # well inside the 600 s pause
        for pid in dagster.run_workers():
            os.kill(pid, signal.SIGKILL)
        dagster.stop()
        assert _catalog_snapshot(db) == before, "a killed scale-out load changed what readers see"

        fresh = instance.get_run_by_id(run.run_id)
        if fresh is not None and not fresh.is_finished:
            instance.report_run_failed(run, "run worker killed with SIGKILL by the test")
        known.add(run.run_id)
        dagster.start()
        dagster.backfill([victim])
        runs, _ = dagster.wait_for_runs(instance, len(known) + 1)
        rerun = [r for r in runs if r.run_id not in known]
        assert [r.status for r in rerun] == [dg.DagsterRunStatus.SUCCESS]
        after = _catalog_snapshot(db)
        for table, rows in after.items():
            assert _without(rows, victim) == _without(before.get(table, []), victim), table
        assert after != before
    finally:
        dagster.stop()
        instance.dispose()


def test_the_daemons_sensor_completes_claude_batches_on_postgres(
    pg_url: str, tmp_path: Path
) -> None:
    """Real-key flow on the queued instance: runs submit, the daemon's sensor queues the rest.

    A loopback Anthropic API (the project's local API, reached with a fake key as if it were
    Claude) keeps each batch in progress for 30 s, so ``extraction_batch`` returns at once and
    the run ends with its downstream steps skipped. The daemon then ticks the completion sensor
    (its cursor and ticks in PostgreSQL), which queues one results run per ended batch; those
    runs go through the same queue and load every series. No batch is created twice.
    """
    from fantasy_kg.defs.keys import ATTEMPT_TAG, BATCH_ID_TAG
    from fantasy_kg.defs.sensors import SENSOR_NAME
    from fantasy_kg_tests.llm_support import FAKE_KEY, create_bodies, server

    data_dir = tmp_path / "data"
    slugs = write_series(data_dir, 3)
    with server(tmp_path / "api", min_processing_seconds=30) as api:
        env = _env(data_dir, pg_url) | {
            "ANTHROPIC_API_KEY": FAKE_KEY,
            "ANTHROPIC_BASE_URL": api.base_url,
            "FANTASY_KG_SENSOR_INTERVAL_SECONDS": "5",
        }
        dagster = QueuedDagster(write_test_home(tmp_path / "home"), env, tmp_path)
        instance = dagster.instance()
        dagster.start()
        try:
            dagster.backfill(slugs)
            runs, _ = dagster.wait_for_runs(instance, 2 * len(slugs), timeout_s=900)
            failed = [(_partition_of(r), r.status) for r in runs if not r.is_success]
            assert not failed, f"{failed}\n{dagster.daemon_log()[-3000:]}"

            by_sensor = [r for r in runs if BATCH_ID_TAG in r.tags]
            assert sorted(_partition_of(r) for r in by_sensor) == slugs
            assert all(r.tags[ATTEMPT_TAG] == "1" for r in by_sensor)
            assert all(r.tags.get("dagster/sensor_name") == SENSOR_NAME for r in by_sensor)
            batch_ids = {r.tags[BATCH_ID_TAG] for r in by_sensor}
            assert len(batch_ids) == len(slugs) == len(create_bodies(api))

            loaded = _series_in_warehouse(paths.warehouse_path(data_dir))
            assert sorted(loaded) == slugs and all(n > 0 for n in loaded.values())
            state = next(s for s in instance.all_instigator_state() if s.name == SENSOR_NAME)
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
            requested = {run_id for t in ticks for run_id in t.run_ids}
            assert {r.run_id for r in by_sensor} <= requested
        finally:
            dagster.stop()
            instance.dispose()
