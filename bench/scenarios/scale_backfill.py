"""Scale scenario (a): a backfill of many series through Dagster's run queue, vs one by one.

* **Subject**: the scale-out deployment on one host: the Dagster instance shipped in
  ``deploy/postgres`` (PostgreSQL storage, QueuedRunCoordinator launching from threads, 4 runs at
  once, one per series) on a throwaway PostgreSQL server, its services as docs/deploy.md starts
  them (a code server of its own named by ``deploy/postgres/workspace.yaml``, the real
  ``dagster-daemon``), the scale-out warehouse (``FANTASY_KG_WAREHOUSE=shards``: each run
  publishes its own series, no writer pool), and ``dagster job backfill -j __ASSET_JOB
  --partitions <all>``: one run per series, each a process of its own running every asset and
  check of the series (sections, batch, results, graph load, costs, graph view). Timed from the
  backfill command to the last run's end; PostgreSQL, the code server and the daemon are
  started untimed (a deployment has them running). Any failed run fails the row.
* **Baseline**: the same series loaded one by one in one Python process with the pipeline
  functions (``build_sections`` → ``run_full`` on the local backend → ``load_series_from_files``
  into the same scale-out warehouse → ``write_view`` and ``network_png``, the page and preview the
  runs' ``graph_view`` asset makes), the CLI's work without its process start-ups. The two
  variants produce the same files; only the subject's asset checks and Dagster's own work
  (processes, events) are extra.

Full mode: 200 series of three books each, real prose of book length: Oz books with the names
invented anew per series (``bench.corpus.renamed``), extracted by the default local backend (the
LitBank tagger and rules). A series is then ~10 s of CPU, which is still small next to a Claude
batch, and of the order of a queued run's own cost (a process that loads the code location,
then a dozen steps whose events go to PostgreSQL, ~5-10 s on this machine); with series of a few
paragraphs the row would only measure that overhead. ``--quick`` (CI): 4 such tiny series, rules
only, to show the path works; its ratio says nothing. Skipped where PostgreSQL's ``initdb`` is
missing (``apt-get install postgresql``).
"""

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench.corpus import book_files, oz_dir, renamed
from bench.harness import REPO_ROOT, Case, Context, Skip, Target, Variant, bench_env

NAME = "scale_backfill"
TITLE = "Scale: queued backfill"
FULL_SERIES = 200
BOOKS_PER_SERIES = 3
QUICK_SERIES = 4
CONCURRENT_RUNS = 4
TIMEOUT_FULL_S = 4 * 3600.0
"""Per worker at full size: each variant takes 30-60 min on two cores (more under load)."""
SAMPLE_BOOK = REPO_ROOT / "data" / "books" / "ashen_crown" / "01_the_lantern_road.txt"
FASTER = Target(metric="ratio", limit=1.0, text="faster than one by one (ratio < 1)")
WAREHOUSE = "shards"


SERIES_ENV = "BENCH_SCALE_SERIES"
"""Overrides the full mode's series count (a shorter probe while tuning; the row says its size)."""


def _count(ctx: Context) -> int:
    if ctx.quick:
        return QUICK_SERIES
    raw = os.environ.get(SERIES_ENV, "").strip()
    return int(raw) if raw else FULL_SERIES


def _slugs(n: int) -> list[str]:
    return [f"series_{i:03d}" for i in range(n)]


def prepare(ctx: Context) -> dict[str, Any]:
    """Write the series once under ``bench/_work/scale_backfill/books``."""
    books = ctx.scenario_dir(NAME) / "books"
    n = _count(ctx)
    if ctx.quick:
        paragraphs = SAMPLE_BOOK.read_text(encoding="utf-8").split("\n\n")
        text = "\n\n".join(paragraphs[:6]) + "\n"
        for slug in _slugs(n):
            folder = books / slug
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "01_book.txt").write_text(f"Book of {slug}\n\n{text}", encoding="utf-8")
        return {"series": n, "books": n}
    source = oz_dir()
    if source is None:
        raise Skip("the Oz corpus (../shared/corpus/oz) is not there")
    oz = book_files(source)
    for i, slug in enumerate(_slugs(n)):
        folder = books / slug
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(BOOKS_PER_SERIES):
            book = folder / f"{j + 1:02d}_book.txt"
            if not book.exists():
                original = oz[(i * BOOKS_PER_SERIES + j) % len(oz)].read_text(encoding="utf-8")
                book.write_text(renamed(original, i + 1), encoding="utf-8")
    return {"series": n, "books": n * BOOKS_PER_SERIES}


def cases(ctx: Context) -> list[Case]:
    """One row: N series through the queue vs N series one by one."""
    n = _count(ctx)
    return [
        Case(
            scenario=NAME,
            name=f"{n} series, {CONCURRENT_RUNS} runs at once",
            input_desc=(
                f"{n} tiny series (6 paragraphs each), local backend, rules only"
                if ctx.quick
                else f"{n} series of {BOOKS_PER_SERIES} renamed Oz books, local backend"
            ),
            size=float(n),
            unit="series",
            targets=[] if ctx.quick else [FASTER],
            repeats_full=1,
            repeats_quick=1,
            params={"series": n},
            subject_label="dagster-daemon + run queue (PostgreSQL instance)",
            baseline_label="one by one, one process",
            note=(
                "instance: deploy/postgres/dagster.yaml on a throwaway PostgreSQL server; "
                f"warehouse: FANTASY_KG_WAREHOUSE={WAREHOUSE} in both variants"
            ),
        )
    ]


def _fresh_data(base: Path, variant: str, n: int) -> Path:
    """A data dir holding copies of the first ``n`` series' books and nothing else.

    Copies, not links: ingestion refuses a symlink that points outside the books folder.
    """
    data = base / variant / "data"
    shutil.rmtree(data, ignore_errors=True)
    for slug in _slugs(n):
        src = base / "books" / slug
        dest = data / "books" / slug
        dest.mkdir(parents=True)
        for book in src.iterdir():
            shutil.copy2(book, dest / book.name)
    return data


def variants(case: Case, ctx: Context) -> dict[str, Variant]:
    """Subject (queued Dagster) and baseline (in-process, sequential)."""
    base = ctx.scenario_dir(NAME)
    n = int(case.params["series"])
    slugs = _slugs(n)
    stack = contextlib.ExitStack()
    # Give up before the harness kills this worker (300 s per subprocess with --quick, 3600 s
    # otherwise): a killed worker could not stop the daemon and the server it started.
    deadline = 240.0 if ctx.quick else TIMEOUT_FULL_S - 300.0
    tagger = {"FANTASY_KG_TAGGER": "off"} if ctx.quick else {}

    def subject_setup() -> Any:
        from fantasy_kg_tests.pg_support import (
            PG_URL_ENV,
            QueuedDagster,
            pg_tool,
            postgres_server,
            write_test_home,
        )

        if pg_tool("initdb") is None:
            raise Skip("PostgreSQL server binaries (initdb) not found; apt-get install postgresql")
        stack.close()
        data = _fresh_data(base, "queued", n)
        server = stack.enter_context(postgres_server())
        home = base / "queued" / "dagster_home"
        shutil.rmtree(home, ignore_errors=True)
        write_test_home(home)
        env = bench_env(base / "queued")
        env.update(
            {
                PG_URL_ENV: server.create_database(),
                "FANTASY_KG_DATA_DIR": str(data),
                "FANTASY_KG_WAREHOUSE": WAREHOUSE,
                **tagger,
            }
        )
        dagster = QueuedDagster(home, env, base / "queued" / "logs")
        instance = dagster.instance()
        stack.callback(instance.dispose)
        dagster.start()
        stack.callback(dagster.stop)
        return dagster, instance, data

    def subject(state: Any) -> dict[str, Any]:
        import dagster as dg

        dagster, instance, data = state
        os.environ["FANTASY_KG_WAREHOUSE"] = WAREHOUSE  # this process reads the same warehouse
        busy = _CpuBusy()
        try:
            dagster.backfill(slugs)
            runs, most = dagster.wait_for_runs(instance, n, timeout_s=deadline)
        finally:
            stack.close()
        failed = [
            r.tags.get("dagster/partition") for r in runs if r.status != dg.DagsterRunStatus.SUCCESS
        ]
        if failed:
            raise RuntimeError(f"{len(failed)} of {n} runs failed: {failed[:5]}")
        return {
            "runs": len(runs),
            "failed_runs": 0,
            "most_runs_in_progress": most,
            "series_in_warehouse": _series_in_warehouse(data),
            "machine_cpu_busy": busy.share(),
        }

    def baseline_setup() -> Path:
        data = _fresh_data(base, "sequential", n)
        os.environ["FANTASY_KG_DATA_DIR"] = str(data)
        os.environ.update(tagger)
        os.environ["FANTASY_KG_WAREHOUSE"] = WAREHOUSE
        return data

    def baseline(data: Path) -> dict[str, Any]:
        from fantasy_kg.domain.catalog import default_model
        from fantasy_kg.pipeline.extraction import run_full
        from fantasy_kg.pipeline.graph import load_series_from_files
        from fantasy_kg.pipeline.pictures import network_png
        from fantasy_kg.pipeline.sections import build_sections
        from fantasy_kg.pipeline.view import default_output, write_view

        model = default_model()
        busy = _CpuBusy()
        started = time.perf_counter()
        for slug in slugs:
            sections, extracted = data / "sections", data / "extracted"
            build_sections(data / "books", sections, series=slug, model=model)
            run_full(
                sections,
                extracted,
                slug,
                model,
                jobs_dir=data / "batch_jobs",
                backend="local",
                poll_interval_seconds=0.2,
            )
            load_series_from_files(
                sections, extracted, slug, data / "fantasy_kg.duckdb", jobs_dir=data / "batch_jobs"
            )
            _, payload = write_view(data / "fantasy_kg.duckdb", slug, default_output(slug, data))
            (data / "views" / f"{slug}_preview.png").write_bytes(network_png(payload))
        return {
            "series_in_warehouse": _series_in_warehouse(data),
            "seconds_per_series": round((time.perf_counter() - started) / n, 2),
            "machine_cpu_busy": busy.share(),
        }

    return {
        "subject": Variant(run=subject, setup=subject_setup, label=case.subject_label),
        "baseline": Variant(run=baseline, setup=baseline_setup, label=case.baseline_label),
    }


class _CpuBusy:
    """The share of the machine's CPU time that was busy since creation (``/proc/stat``).

    Says whether a variant kept the cores busy: the queued variant can only beat the loop by
    using both cores, so idle time there is time lost to scheduling (queue, launches, polls),
    and busy time is the runs' own cost. ``None`` where ``/proc/stat`` is missing.
    """

    def __init__(self) -> None:
        self._start = self._read()

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            first = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()
        except OSError:
            return None
        ticks = [int(v) for v in first[1:9]]  # user nice system idle iowait irq softirq steal
        return sum(ticks), ticks[3] + ticks[4]

    def share(self) -> float | None:
        end = self._read()
        if self._start is None or end is None or end[0] == self._start[0]:
            return None
        total, idle = end[0] - self._start[0], end[1] - self._start[1]
        return round(1 - idle / total, 3)


def _series_in_warehouse(data: Path) -> int:
    """Series a reader sees in the warehouse (the engine ``FANTASY_KG_WAREHOUSE`` selects)."""
    from fantasy_kg.warehouse.load import connect

    conn = connect(data / "fantasy_kg.duckdb", read_only=True)
    try:
        row = conn.execute("SELECT count(DISTINCT series) FROM entities").fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0
