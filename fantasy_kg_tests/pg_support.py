"""A real PostgreSQL server for tests, and the queued Dagster instance that runs on it.

``postgres_server()`` initializes a throwaway cluster in a temp dir (Debian's ``postgresql``
package: ``initdb`` and ``pg_ctl``), starts it on a free loopback port with its socket in that
dir, creates a database and yields its URL; it stops the server and removes the dir afterwards.
PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user (or
``nobody``) through ``runuser``, owning its temp dir.

Where the binaries are missing the tests skip with the reason, except in CI (``$CI`` set), where
a missing server is a broken setup (``.ci/run`` installs the package) and fails.

``QueuedDagster`` runs the services of ``deploy/postgres`` as docs/deploy.md starts them (a code
server of its own, ``dagster-daemon``) on the instance shipped there, and submits partition runs
through its queue with ``dagster job backfill``, as a user would.
"""

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg
import psutil
import pytest
import yaml

from fantasy_kg.defs.keys import DUCKDB_POOL

REPO_ROOT = Path(__file__).resolve().parent.parent
PG_INSTANCE_DIR = REPO_ROOT / "deploy" / "postgres"
PG_URL_ENV = "FANTASY_KG_DAGSTER_PG_URL"
CODE_LOCATION_MODULE = "fantasy_kg.definitions"
CODE_LOCATION_NAME = "fantasy_kg"
ASSET_JOB = "__ASSET_JOB"
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def pg_tool(name: str) -> str | None:
    """Path of a PostgreSQL server binary: on PATH, else Debian's versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    for folder in PG_BIN_DIRS:
        if (folder / name).is_file():
            return str(folder / name)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user() -> list[str]:
    """Command prefix that drops root to an unprivileged user (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.fail("running as root and runuser is missing: cannot start PostgreSQL")
    for user in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(user)
            return [runuser, "-u", user, "--"]
    pytest.fail("running as root and neither user postgres nor nobody exists")


def require_postgres() -> tuple[str, str]:
    """Paths of ``initdb`` and ``pg_ctl``; skip (fail in CI) when the server is not installed."""
    initdb, pg_ctl = pg_tool("initdb"), pg_tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        why = "PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql"
        if os.environ.get("CI"):
            pytest.fail(why + " (CI must have them: .ci/run installs the package)")
        pytest.skip(why)
    return initdb, pg_ctl


class PostgresServer:
    """A running throwaway cluster: its port, and fresh databases on demand."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._made = 0

    def url(self, db_name: str) -> str:
        """``postgresql+psycopg2://`` URL of a database on this server (trust auth, no password)."""
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; dagster-postgres ships psycopg2.
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{db_name}"

    def create_database(self) -> str:
        """A new empty database (one per test, so runs of one test never show in another)."""
        import psycopg2

        self._made += 1
        name = f"dagster_{self._made}"
        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres"
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL cluster on a free loopback port; stop and remove it after."""
    initdb, pg_ctl = require_postgres()
    prefix = _as_server_user()
    # mkdtemp, not pytest's tmp_path: the server user must be able to reach the folder, and
    # pytest's base temp dir is private to the user running the tests.
    root = Path(tempfile.mkdtemp(prefix="fkg-pg-"))
    if prefix:
        shutil.chown(root, user=prefix[2])
    data, log = root / "data", root / "server.log"
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    try:
        subprocess.run(
            [*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
            check=True,
            capture_output=True,
            env=env,
        )
        # fsync off: a test cluster needs no durability, and two shared cores need the time.
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        opts += " -c max_connections=300"
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "start"],
            check=True,
            capture_output=True,
            env=env,
        )
        try:
            yield PostgresServer(port)
        finally:
            subprocess.run(
                [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                check=False,
                capture_output=True,
                env=env,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def pg_scalar(url: str, sql: str) -> object:
    """One value from a query on a connection of its own (closed at once, nothing pooled)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sqlalchemy.text(sql)).scalar()
    finally:
        engine.dispose()


def pg_sessions(url: str) -> int:
    """Connections the server has accepted into this database so far (PostgreSQL 14+)."""
    value = pg_scalar(
        url, "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
    )
    return int(str(value or 0))


def shipped_instance_config() -> dict[str, object]:
    """The instance config shipped in ``deploy/postgres/dagster.yaml``, parsed."""
    loaded = yaml.safe_load((PG_INSTANCE_DIR / "dagster.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def shipped_workspace_config(*, port: int | None = None) -> dict[str, object]:
    """``deploy/postgres/workspace.yaml``, parsed; ``port`` replaces the code server's port."""
    loaded = yaml.safe_load((PG_INSTANCE_DIR / "workspace.yaml").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    if port is not None:
        for entry in loaded["load_from"]:
            entry["grpc_server"]["port"] = port
    return loaded


def write_test_home(home: Path, **run_monitoring: int) -> Path:
    """A ``DAGSTER_HOME`` holding the shipped config, with faster monitoring for a test.

    Only timing knobs of ``run_monitoring`` are changed (a test cannot wait 30 s for a slot to
    be freed); storage, queue, tag limits and pools are the shipped ones, so the test checks the
    file users get. The copy keeps compute logs out of the tracked folder.
    """
    config = shipped_instance_config()
    monitoring = dict(config.get("run_monitoring") or {})  # type: ignore[call-overload]
    monitoring.update(run_monitoring)
    config["run_monitoring"] = monitoring
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return home


class QueuedDagster:
    """A code server and ``dagster-daemon`` on a queued PostgreSQL instance, and runs queued."""

    def __init__(self, home: Path, env: dict[str, str], log_dir: Path) -> None:
        self.home = home
        self.env = {**env, "DAGSTER_HOME": str(home)}
        self.log_dir = log_dir
        self.workspace = home / "workspace.yaml"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.code_server: subprocess.Popen[bytes] | None = None
        self._logs = 0

    def _log_file(self, what: str) -> Path:
        self._logs += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / f"{self._logs:02d}-{what}.log"

    def instance(self) -> dg.DagsterInstance:
        """A handle on the same instance (reads the config in ``home``, URL from our env)."""
        saved = os.environ.get(PG_URL_ENV)
        os.environ[PG_URL_ENV] = self.env[PG_URL_ENV]
        try:
            return dg.DagsterInstance.from_config(str(self.home))
        finally:
            if saved is None:
                del os.environ[PG_URL_ENV]
            else:
                os.environ[PG_URL_ENV] = saved

    def set_writer_pool_limit(self) -> None:
        """Run the deployment's one-time setup step: ``dagster instance concurrency set``.

        Without it the first runs that claim the ``duckdb_writer`` pool at the same moment each
        try to create its limit row, and on PostgreSQL the loser's run fails (dagster#33552).
        """
        exe = Path(sys.executable).parent / "dagster"
        subprocess.run(
            [str(exe), "instance", "concurrency", "set", DUCKDB_POOL, "1"],
            cwd=REPO_ROOT,
            env=self.env,
            check=True,
            capture_output=True,
        )

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        """Start the deployment's services as docs/deploy.md does: code server, then daemon.

        The writer pool's limit is set first. The code server is ``dagster code-server start``
        on a free port, with ``deploy/postgres/workspace.yaml`` (its port changed) pointing the
        daemon and the backfill command at it. ``extra_env`` goes to both: the code server
        launches the runs (their workers inherit its environment) and evaluates the sensors.
        Each service gets its own process group.
        """
        assert self.daemon is None and self.code_server is None, "services already running"
        self.set_writer_pool_limit()
        env = {**self.env, **(extra_env or {})}
        port = _free_port()
        self.workspace.write_text(
            yaml.safe_dump(shipped_workspace_config(port=port), sort_keys=False), encoding="utf-8"
        )
        self.code_server = self._spawn(
            "code-server",
            [
                str(Path(sys.executable).parent / "dagster"),
                *("code-server", "start", "-m", CODE_LOCATION_MODULE),
                *("--location-name", CODE_LOCATION_NAME, "-h", "127.0.0.1", "-p", str(port)),
            ],
            env,
        )
        _wait_for_port(port, self.code_server, timeout_s=300.0)
        self.daemon = self._spawn(
            "daemon",
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(self.workspace)],
            env,
        )

    def _spawn(self, what: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self._log_file(what), "wb") as fh:
            return subprocess.Popen(
                cmd,
                cwd=REPO_ROOT,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        """Stop the daemon, then the code server and everything it started (run workers)."""
        for proc in (self.daemon, self.code_server):
            if proc is not None:
                _stop_group(proc)
        self.daemon = self.code_server = None

    def backfill(self, partitions: Sequence[str]) -> None:
        """Queue one run per partition of the asset job, the way a user does from the CLI."""
        exe = Path(sys.executable).parent / "dagster"
        log = self._log_file("backfill")
        cmd = [str(exe), "job", "backfill", "-w", str(self.workspace)]
        cmd += ["-j", ASSET_JOB, "--partitions", ",".join(partitions), "--noprompt"]
        with open(log, "wb") as fh:
            proc = subprocess.run(
                cmd, cwd=REPO_ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT, check=False
            )
        assert proc.returncode == 0, log.read_text(encoding="utf-8", errors="replace")[-3000:]

    def wait_for_runs(
        self, instance: dg.DagsterInstance, count: int, timeout_s: float = 1800.0
    ) -> tuple[list[dg.DagsterRun], int]:
        """Wait until ``count`` runs ended; return them and the most seen in progress at once.

        Polls with two ``COUNT`` queries, not by loading every run: with hundreds of runs that
        took a share of the two cores the benchmark measures.
        """
        deadline = time.monotonic() + timeout_s
        most_in_flight = 0
        in_flight = dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
        )
        finished = dg.RunsFilter(
            statuses=[
                dg.DagsterRunStatus.SUCCESS,
                dg.DagsterRunStatus.FAILURE,
                dg.DagsterRunStatus.CANCELED,
            ]
        )
        while True:
            most_in_flight = max(most_in_flight, instance.get_runs_count(filters=in_flight))
            if instance.get_runs_count(filters=finished) >= count:
                return list(instance.get_runs()), most_in_flight
            for name, proc in (("dagster-daemon", self.daemon), ("code server", self.code_server)):
                if proc is not None and proc.poll() is not None:
                    raise AssertionError(f"{name} exited: {self.daemon_log()[-3000:]}")
            if time.monotonic() > deadline:
                states = sorted(str(r.status) for r in instance.get_runs())
                raise AssertionError(f"runs did not end in {timeout_s:.0f} s: {states}")
            time.sleep(0.5)

    def run_workers(self) -> list[int]:
        """Pids of the run workers of the code server (multiprocessing children of its process)."""
        if self.code_server is None:
            return []
        pids = []
        for proc in _descendants(self.code_server.pid):
            with contextlib.suppress(psutil.Error):
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                cmdline = " ".join(proc.cmdline())
                if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
                    pids.append(proc.pid)
        return pids

    def code_location_servers(self) -> dict[str, list[int]]:
        """Pids of the ``dagster api grpc`` servers (the processes that load the code), by owner.

        ``code server`` holds the one ``dagster code-server start`` runs its code in; ``daemon``
        those the daemon started itself, which it does when its workspace names a module instead
        of a server (and then replaces every 60 s).
        """
        found: dict[str, list[int]] = {}
        for owner, proc in (("code server", self.code_server), ("daemon", self.daemon)):
            if proc is None:
                continue
            for child in _descendants(proc.pid):
                with contextlib.suppress(psutil.Error):
                    if "api grpc" in " ".join(child.cmdline()):
                        found.setdefault(owner, []).append(child.pid)
        return found

    def daemon_log(self) -> str:
        """Every daemon and code server log of this test, concatenated in order."""
        return "\n".join(
            p.read_text(encoding="utf-8", errors="replace")
            for p in sorted(self.log_dir.glob("*.log"))
            if p.name.endswith(("-daemon.log", "-code-server.log"))
        )

    def wait_for_step(
        self,
        instance: dg.DagsterInstance,
        partition: str,
        known: set[str],
        steps: tuple[str, ...],
        timeout_s: float = 600.0,
    ) -> dg.DagsterRun:
        """Wait for a new run of ``partition`` to start one of ``steps``; return that run."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for run in instance.get_runs():
                if run.run_id in known or run.tags.get("dagster/partition") != partition:
                    continue
                if run.is_finished:
                    raise AssertionError(f"run {run.run_id} ended ({run.status}) before {steps}")
                if any(
                    rec.step_key in steps
                    and rec.dagster_event_type == dg.DagsterEventType.STEP_START
                    for rec in instance.all_logs(run.run_id)
                ):
                    return run
            time.sleep(0.5)
        raise AssertionError(f"no run of {partition} started {steps} within {timeout_s:.0f} s")

    def wait_for_killed_run(
        self,
        instance: dg.DagsterInstance,
        partition: str,
        known: set[str],
        timeout_s: float = 600.0,
    ) -> tuple[dg.DagsterRun, str]:
        """Wait for a new run of ``partition`` to lose its process mid-step.

        A run worker killed with SIGKILL never reports its end. The code server starts each run
        worker as a multiprocessing child and, when it notices the child gone, marks the run
        FAILURE with an engine event "Run execution process for <id> was terminated by signal 9";
        until then (or if the code server died too) the run stays STARTED. Both are a death: a
        STARTED run with no run worker left in the code server's process tree (call this with
        that run the only one launched), or a FAILURE carrying that engine event and no step
        failure. Any other end is a real failure and fails the test. Returns the run and the
        step it was in (the last one started).
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runs = [
                r
                for r in instance.get_runs()
                if r.run_id not in known and r.tags.get("dagster/partition") == partition
            ]
            for run in runs:
                if run.is_finished:
                    steps = _started_steps(instance, run.run_id)
                    if run.status == dg.DagsterRunStatus.FAILURE and _died(instance, run.run_id):
                        return run, steps[-1] if steps else ""
                    raise AssertionError(f"run {run.run_id} ended ({run.status}) instead of dying")
                if run.status != dg.DagsterRunStatus.STARTED or self.run_workers():
                    continue
                steps = _started_steps(instance, run.run_id)
                # Re-read: the code server may have marked it failed between the two looks.
                fresh = instance.get_run_by_id(run.run_id)
                if steps and fresh is not None:
                    return fresh, steps[-1]
            time.sleep(0.5)
        raise AssertionError(f"no run of {partition} died within {timeout_s:.0f} s")


def failure_report(instance: dg.DagsterInstance, runs: Sequence[dg.DagsterRun]) -> str:
    """Why each failed run failed: its error events with their messages and error text.

    A daemon log's tail rarely holds the failure of an early run; the event log always does.
    """
    lines: list[str] = []
    for run in runs:
        if run.status == dg.DagsterRunStatus.SUCCESS:
            continue
        lines.append(f"run {run.run_id} ({run.tags.get('dagster/partition')}): {run.status}")
        for rec in instance.all_logs(run.run_id):
            event = rec.dagster_event
            data = getattr(event, "event_specific_data", None) if event is not None else None
            error = getattr(data, "error", None)
            level = rec.level if isinstance(rec.level, int) else logging.INFO
            if level < logging.WARNING and error is None:
                continue
            detail = error.to_string()[-1500:] if error is not None else ""
            lines.append(f"  {rec.step_key or '-'} {rec.dagster_event_type}: {rec.message}")
            if detail:
                lines.append("    " + detail.replace("\n", "\n    "))
    return "\n".join(lines)


def _started_steps(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        rec.step_key or ""
        for rec in instance.all_logs(run_id)
        if rec.dagster_event_type == dg.DagsterEventType.STEP_START
    ]


def _died(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether a failed run failed because its process died, not because a step raised."""
    records = instance.all_logs(run_id)
    if any(rec.dagster_event_type == dg.DagsterEventType.STEP_FAILURE for rec in records):
        return False
    return any(
        rec.dagster_event_type == dg.DagsterEventType.ENGINE_EVENT
        and "Run execution process for" in rec.message
        and "signal 9" in rec.message
        for rec in records
    )


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait until the code server accepts connections: it binds its port once the code loaded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the code server exited with {proc.returncode} before serving")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
            return
        time.sleep(0.2)
    raise AssertionError(f"the code server did not serve on port {port} within {timeout_s:.0f} s")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a service's process group (SIGKILL after 30 s), then whatever it left behind.

    Its children (a code server's run workers) may have left the group: they are noted first.
    """
    family = _descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    for child in family:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(family, timeout=10)


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return []
