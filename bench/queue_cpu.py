"""Where a queued backfill's CPU goes: per kind of process, and connections to PostgreSQL.

``python -m bench.queue_cpu [--series N]`` queues N series (default 8) of the scale_backfill
scenario's books (run ``python -m bench --only scale_backfill`` once first, or any size with
``BENCH_SCALE_SERIES``, to write them) through the same deployment as that scenario: the
instance of ``deploy/postgres`` on a throwaway PostgreSQL server, the real daemon, 4 runs at once,
the scale-out warehouse. It prints the CPU seconds per series of each kind of process (run
workers, code server, daemon, the backfill command, PostgreSQL with the connection backends it
reaped) and the connections PostgreSQL accepted per series (``pg_stat_database.sessions``).

Processes are sampled every 0.2 s (psutil), so the processes that live shorter than that are
counted only through their parent: PostgreSQL's backends through the postmaster's reaped-children
time. Sampling costs a little CPU of its own, printed as ``this probe``. docs/deploy.md cites it.
"""

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.harness import DEFAULT_WORK_DIR, bench_env
from fantasy_kg_tests.pg_support import (
    PG_URL_ENV,
    QueuedDagster,
    pg_sessions,
    pg_tool,
    postgres_server,
    write_test_home,
)

BOOKS = DEFAULT_WORK_DIR / "scale_backfill" / "books"


def _kind(proc: psutil.Process) -> str | None:
    """What a process is in the deployment, from its command line (None: not ours)."""
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return None
    if proc.pid == os.getpid():
        return "this probe"
    if "spawn_main" in cmd:
        return "run workers"
    if "api grpc" in cmd or "code-server start" in cmd:
        return "code servers"
    if "dagster-daemon" in cmd:
        return "daemon"
    if "job backfill" in cmd:
        return "backfill command"
    if cmd.split(" ")[0].rsplit("/", 1)[-1].startswith("postgres"):
        return "postgres (live processes)"
    return None


class _Sampler(threading.Thread):
    """CPU time of every process of the deployment since the sampler started, until stopped.

    Processes already running at the start (the daemon, the code server: a deployment has them
    running before a backfill) count only what they spend from then on.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[int, tuple[str, float]] = {}
        self.done = threading.Event()
        self._before: dict[int, float] = {}
        for proc in psutil.process_iter():
            kind = _kind(proc)
            with contextlib.suppress(psutil.Error, OSError):
                if kind is not None:
                    times = proc.cpu_times()
                    self._before[proc.pid] = times.user + times.system

    def run(self) -> None:
        while not self.done.is_set():
            for proc in psutil.process_iter():
                known = self.seen.get(proc.pid)
                kind = known[0] if known else _kind(proc)
                if kind is None:
                    continue
                try:
                    times = proc.cpu_times()
                except (psutil.Error, OSError):
                    continue
                self.seen[proc.pid] = (kind, times.user + times.system)
            self.done.wait(0.2)

    def totals(self) -> list[tuple[str, float]]:
        out: dict[str, float] = {}
        for pid, (kind, cpu) in self.seen.items():
            out[kind] = out.get(kind, 0.0) + cpu - self._before.get(pid, 0.0)
        return sorted(out.items(), key=lambda item: -item[1])


def _postmaster() -> psutil.Process:
    """The PostgreSQL server's parent process (its children are the connection backends)."""
    for proc in psutil.process_iter():
        if _kind(proc) == "postgres (live processes)":
            try:
                parent = proc.parent()
            except psutil.Error:
                continue
            if parent is None or _kind(parent) != "postgres (live processes)":
                return proc
    raise RuntimeError("no PostgreSQL server process found")


def _reaped_cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def main(argv: list[str] | None = None) -> int:
    """Queue the series, wait for their runs, print where the CPU went."""
    parser = argparse.ArgumentParser(prog="python -m bench.queue_cpu", description=__doc__)
    parser.add_argument("--series", type=int, default=8, help="series to queue (default 8)")
    args = parser.parse_args(argv)
    slugs = [f"series_{i:03d}" for i in range(args.series)]
    missing = [s for s in slugs if not (BOOKS / s).is_dir()]
    if missing:
        print(
            f"no books for {missing[0]} under {BOOKS}: run "
            f"`BENCH_SCALE_SERIES={args.series} python -m bench --only scale_backfill` first",
            file=sys.stderr,
        )
        return 2
    if pg_tool("initdb") is None:
        print("PostgreSQL's initdb not found: apt-get install postgresql", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="queue_cpu_") as tmp, postgres_server() as server:
        base = Path(tmp)
        for slug in slugs:
            shutil.copytree(BOOKS / slug, base / "data" / "books" / slug)
        url = server.create_database()
        env = bench_env(base)
        env.update(
            {
                PG_URL_ENV: url,
                "FANTASY_KG_DATA_DIR": str(base / "data"),
                "FANTASY_KG_WAREHOUSE": "shards",
            }
        )
        dagster = QueuedDagster(write_test_home(base / "home"), env, base / "logs")
        instance = dagster.instance()
        dagster.start()
        try:
            postmaster = _postmaster()
            sampler = _Sampler()
            sampler.start()
            pg_before, sessions_before = _reaped_cpu(postmaster), pg_sessions(url)
            started = time.perf_counter()
            dagster.backfill(slugs)
            runs, _ = dagster.wait_for_runs(instance, len(slugs), timeout_s=3600.0)
            wall = time.perf_counter() - started
            sampler.done.set()
            sampler.join()
            pg_cpu = _reaped_cpu(postmaster) - pg_before
            sessions = pg_sessions(url) - sessions_before - 1
        finally:
            dagster.stop()
            instance.dispose()
    n = len(slugs)
    failed = sum(1 for r in runs if r.status.value != "SUCCESS")
    print(f"{n} series queued, 4 runs at once: {wall:.1f} s wall, {failed} failed runs")
    for kind, cpu in sampler.totals():
        if not kind.startswith("postgres"):
            print(f"  {kind:<28} {cpu:8.1f} s CPU  {cpu / n:6.2f} s per series")
    label = "postgres (all, with backends)"
    print(f"  {label:<28} {pg_cpu:8.1f} s CPU  {pg_cpu / n:6.2f} s per series")
    print(f"  connections accepted by PostgreSQL: {sessions} ({sessions / n:.0f} per series)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
