"""Scale scenario (a): a backfill of many series through Dagster's run queue, vs one by one.

* **Subject**: the Dagster instance shipped in ``deploy/postgres`` (PostgreSQL storage,
  QueuedRunCoordinator, 4 runs at once, one per series, the ``duckdb_writer`` pool) on a
  throwaway PostgreSQL server, the real ``dagster-daemon``, and
  ``dagster job backfill -j __ASSET_JOB --partitions <all>``: one run per series, each a process of
  its own running every asset and check of the series (sections, batch, results, graph load into
  the one-file DuckDB warehouse, costs, graph view). Timed from the backfill command to the last
  run's end; the server and the daemon are started untimed (a deployment has them running).
  Any failed run fails the row.
* **Baseline**: the same series loaded one by one in one Python process with the pipeline
  functions (``build_sections`` → ``run_full`` on the local backend → ``load_series_from_files``),
  the CLI's work without its process start-ups.

Both use the local backend with ``FANTASY_KG_TAGGER=off`` (rules only), on tiny synthetic series
(a few paragraphs of the sample series each), so the row measures orchestration and concurrency,
not extraction. Full mode: 200 series; ``--quick``: 6. Skipped where PostgreSQL's ``initdb`` is
missing (``apt-get install postgresql``).
"""

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench.harness import REPO_ROOT, Case, Context, Skip, Target, Variant, bench_env

NAME = "scale_backfill"
TITLE = "Scale: queued backfill"
FULL_SERIES = 200
QUICK_SERIES = 6
CONCURRENT_RUNS = 4
SAMPLE_BOOK = REPO_ROOT / "data" / "books" / "ashen_crown" / "01_the_lantern_road.txt"
FASTER = Target(metric="ratio", limit=1.0, text="faster than one by one (ratio < 1)")


def _count(ctx: Context) -> int:
    return QUICK_SERIES if ctx.quick else FULL_SERIES


def _slugs(n: int) -> list[str]:
    return [f"series_{i:03d}" for i in range(n)]


def prepare(ctx: Context) -> dict[str, Any]:
    """Write the tiny series once under ``bench/_work/scale_backfill/books``."""
    base = ctx.scenario_dir(NAME)
    books = base / "books"
    paragraphs = SAMPLE_BOOK.read_text(encoding="utf-8").split("\n\n")
    text = "\n\n".join(paragraphs[:6]) + "\n"
    for slug in _slugs(_count(ctx)):
        folder = books / slug
        folder.mkdir(parents=True, exist_ok=True)
        book = folder / "01_book.txt"
        if not book.exists():
            book.write_text(f"Book of {slug}\n\n{text}", encoding="utf-8")
    return {"series": _count(ctx)}


def cases(ctx: Context) -> list[Case]:
    """One row: N series through the queue vs N series one by one."""
    n = _count(ctx)
    return [
        Case(
            scenario=NAME,
            name=f"{n} series, {CONCURRENT_RUNS} runs at once",
            input_desc=f"{n} tiny series (6 paragraphs each), local backend, rules only",
            size=float(n),
            unit="series",
            targets=[FASTER],
            repeats_full=1,
            repeats_quick=1,
            params={"series": n},
            subject_label="dagster-daemon + run queue (PostgreSQL instance)",
            baseline_label="one by one, one process",
            note="instance: deploy/postgres/dagster.yaml on a throwaway PostgreSQL server",
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
    deadline = 240.0 if ctx.quick else 3300.0

    def subject_setup() -> Any:
        from fantasy_kg_tests.pg_support import (
            PG_URL_ENV,
            QueuedDagster,
            _pg_tool,
            postgres_server,
            write_test_home,
        )

        if _pg_tool("initdb") is None:
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
                "FANTASY_KG_TAGGER": "off",
            }
        )
        dagster = QueuedDagster(home, env, base / "queued" / "logs")
        instance = dagster.instance()
        stack.callback(instance.dispose)
        dagster.start_daemon()
        stack.callback(dagster.stop_daemon)
        return dagster, instance, data

    def subject(state: Any) -> dict[str, Any]:
        import dagster as dg

        dagster, instance, data = state
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
        }

    def baseline_setup() -> Path:
        data = _fresh_data(base, "sequential", n)
        os.environ["FANTASY_KG_DATA_DIR"] = str(data)
        os.environ["FANTASY_KG_TAGGER"] = "off"
        return data

    def baseline(data: Path) -> dict[str, Any]:
        from fantasy_kg.domain.catalog import default_model
        from fantasy_kg.pipeline.extraction import run_full
        from fantasy_kg.pipeline.graph import load_series_from_files
        from fantasy_kg.pipeline.sections import build_sections

        model = default_model()
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
        return {
            "series_in_warehouse": _series_in_warehouse(data),
            "seconds_per_series": round((time.perf_counter() - started) / n, 2),
        }

    return {
        "subject": Variant(run=subject, setup=subject_setup, label=case.subject_label),
        "baseline": Variant(run=baseline, setup=baseline_setup, label=case.baseline_label),
    }


def _series_in_warehouse(data: Path) -> int:
    import duckdb

    conn = duckdb.connect(str(data / "fantasy_kg.duckdb"), read_only=True)
    try:
        row = conn.execute("SELECT count(DISTINCT series) FROM entities").fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0
