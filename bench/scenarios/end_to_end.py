"""Scenario 4, end to end on the local backend: books to DuckDB through the CLI and Dagster.

* **CLI**: ``fantasy-kg run --series oz`` when the main-job command exists, otherwise the chain
  ``fantasy-kg sections`` → ``fantasy-kg extract-batch --mode full`` → ``fantasy-kg load``, each a
  fresh process as a user would type them, on a fresh data directory. Baseline: the same three
  pipeline functions called in one Python process (``build_sections``, ``run_full``,
  ``load_series_from_files``), i.e. the CLI minus process start-ups, imports and progress bars.
* **Dagster**: ``dagster asset materialize -m fantasy_kg.definitions --select '*' --partition oz``
  on a fresh ``DAGSTER_HOME`` and data directory. Baseline: a trivial two-asset materialization
  (:mod:`bench.trivial_defs`) run the same way, Dagster's fixed cost.
* **Dagster overhead** (derived): Dagster wall time minus CLI wall time, next to the trivial
  materialization.

Full mode runs all 14 Oz books; quick mode runs the small sample series and says so.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import corpus
from bench.harness import (
    MB,
    REPO_ROOT,
    Case,
    Context,
    Skip,
    Target,
    Variant,
    apply_targets,
    bench_env,
)

NAME = "end_to_end"
TITLE = "End to end"
SAMPLE = "ashen_crown"
CLI_TARGET = Target(metric="wall_s", limit=120.0, text="< 2 min")
POLL_SECONDS = "0.5"


def _source(ctx: Context) -> tuple[str, Path, str]:
    """(series slug, books folder, why) for this mode."""
    oz = corpus.oz_dir()
    if ctx.quick or oz is None:
        why = "quick mode: the sample series" if ctx.quick else "Oz corpus absent: sample series"
        return SAMPLE, REPO_ROOT / "data" / "books" / SAMPLE, why
    return "oz", oz, ""


def prepare(ctx: Context) -> dict[str, Any]:
    """Copy the series' books into one data directory per variant."""
    slug, books, _ = _source(ctx)
    base = ctx.scenario_dir(NAME)
    for variant in ("cli", "api", "dagster", "trivial"):
        corpus.link_series(books, base / variant / "data" / "books" / slug)
    return {"series": slug, "bytes": corpus.folder_bytes(books)}


def cases(ctx: Context) -> list[Case]:
    """CLI (vs in-process API) and Dagster (vs a trivial materialization)."""
    slug, books, why = _source(ctx)
    n_books = len(corpus.book_files(books))
    size = corpus.folder_bytes(books) / MB
    shown = f"{size:.1f} MB" if size >= 1 else f"{size * 1000:.0f} KB"
    desc = f"{slug}: {n_books} books, {shown}"
    common: dict[str, Any] = {
        "scenario": NAME,
        "input_desc": desc,
        "size": size,
        "unit": "MB",
        "note": why,
    }
    return [
        Case(
            name=f"{slug}, CLI",
            targets=[CLI_TARGET] if slug == "oz" else [],
            repeats_full=3,
            repeats_quick=1,
            params={"series": slug, "kind": "cli"},
            subject_label="fantasy-kg CLI",
            baseline_label="same steps in-process",
            **common,
        ),
        Case(
            name=f"{slug}, Dagster",
            repeats_full=3,
            repeats_quick=1,
            params={"series": slug, "kind": "dagster"},
            subject_label="dagster asset materialize",
            baseline_label="trivial 2-asset materialize",
            **common,
        ),
    ]


def _fresh(data: Path) -> None:
    """Remove everything the pipeline wrote, keep the books."""
    for child in data.iterdir():
        if child.name != "books":
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()


def _run(cmd: list[str], data: Path, log: Path, extra_env: dict[str, str] | None = None) -> None:
    env = bench_env(data.parent)
    env["FANTASY_KG_DATA_DIR"] = str(data)
    env.update(extra_env or {})
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, stdout=fh, stderr=fh, check=False)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8").strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd[:3])} exited {proc.returncode}: {' | '.join(tail)}")


def _cli_commands() -> set[str]:
    """Names of the ``fantasy-kg`` commands that exist right now."""
    from fantasy_kg.cli.main import cli

    return set(cli.commands)


def _counts(data: Path) -> dict[str, Any]:
    sections = list((data / "sections").glob("*_section_*.txt"))
    results = list((data / "extracted").glob("*_extracted.json"))
    db = data / "fantasy_kg.duckdb"
    return {
        "sections": len(sections),
        "result_files": len(results),
        "db_mb": round(db.stat().st_size / MB, 1) if db.exists() else 0,
    }


def variants(case: Case, ctx: Context) -> dict[str, Variant]:
    """Subject and baseline of the CLI case or the Dagster case."""
    base = ctx.scenario_dir(NAME)
    slug = case.params["series"]
    exe = Path(sys.executable).parent
    if case.params["kind"] == "cli":
        return _cli_variants(base, slug, exe)
    return _dagster_variants(base, slug, exe)


def _cli_variants(base: Path, slug: str, exe: Path) -> dict[str, Variant]:
    commands = _cli_commands()
    data = base / "cli" / "data"
    log = base / "cli" / "log.txt"
    fkg = str(exe / "fantasy-kg")
    if "run" in commands:
        chain = [[fkg, "run", "--series", slug]]
        label = "fantasy-kg run"
    else:
        if "load" not in commands:
            raise Skip("`fantasy-kg load` has not landed yet (needed to chain the CLI steps)")
        d = str(data)
        chain = [
            [
                fkg,
                "sections",
                "--books-dir",
                f"{d}/books",
                "--output-dir",
                f"{d}/sections",
                "--series",
                slug,
            ],
            [
                fkg,
                "extract-batch",
                "--mode",
                "full",
                "--input-dir",
                f"{d}/sections",
                "--output-dir",
                f"{d}/extracted",
                "--series",
                slug,
                "--backend",
                "local",
                "--poll-interval",
                POLL_SECONDS,
            ],
            [
                fkg,
                "load",
                "--input-dir",
                f"{d}/sections",
                "--extracted-dir",
                f"{d}/extracted",
                "--series",
                slug,
                "--db",
                f"{d}/fantasy_kg.duckdb",
            ],
        ]
        label = "sections → extract-batch --mode full → load"

    def setup() -> None:
        _fresh(data)
        log.write_text("", encoding="utf-8")

    def subject(_: None) -> dict[str, Any]:
        for cmd in chain:
            _run(cmd, data, log)
        return {"commands": label, **_counts(data)}

    api_data = base / "api" / "data"
    # The in-process baseline imports once, untimed, as a long-lived Python process would.
    from fantasy_kg.domain.catalog import default_model
    from fantasy_kg.pipeline.extraction import run_full
    from fantasy_kg.pipeline.graph import load_series_from_files
    from fantasy_kg.pipeline.sections import build_sections

    def api_setup() -> None:
        os.environ["FANTASY_KG_DATA_DIR"] = str(api_data)
        _fresh(api_data)

    def api(_: None) -> dict[str, Any]:
        sections, extracted = api_data / "sections", api_data / "extracted"
        build_sections(api_data / "books", sections, series=slug, model=default_model())
        run_full(
            sections,
            extracted,
            slug,
            default_model(),
            jobs_dir=api_data / "batch_jobs",
            backend="local",
            poll_interval_seconds=float(POLL_SECONDS),
        )
        load_series_from_files(
            sections,
            extracted,
            slug,
            api_data / "fantasy_kg.duckdb",
            jobs_dir=api_data / "batch_jobs",
        )
        return _counts(api_data)

    return {
        "subject": Variant(run=subject, setup=setup, label=label),
        "baseline": Variant(run=api, setup=api_setup, label="in-process"),
    }


def _dagster_variants(base: Path, slug: str, exe: Path) -> dict[str, Variant]:
    dagster = str(exe / "dagster")

    def make(kind: str, module: str) -> Variant:
        root = base / kind
        data, home, log = root / "data", root / "dagster_home", root / "log.txt"
        cmd = [dagster, "asset", "materialize", "-m", module, "--select", "*"]
        cmd += ["--partition", slug]

        def setup() -> None:
            _fresh(data)
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir(parents=True)
            log.write_text("", encoding="utf-8")

        def run(_: None) -> dict[str, Any]:
            _run(cmd, data, log, {"DAGSTER_HOME": str(home)})
            return _counts(data) if kind == "dagster" else {}

        return Variant(run=run, setup=setup, label=module)

    return {
        "subject": make("dagster", "fantasy_kg.definitions"),
        "baseline": make("trivial", "bench.trivial_defs"),
    }


def derived_rows(rows: list[dict[str, Any]], ctx: Context) -> list[dict[str, Any]]:
    """Dagster overhead = Dagster wall − CLI wall, next to the trivial materialization."""
    cli = next((r for r in rows if r["case"].endswith(", CLI")), None)
    dag = next((r for r in rows if r["case"].endswith(", Dagster")), None)
    if not cli or not dag or cli.get("status") != "ok" or dag.get("status") != "ok":
        return []
    base = dag.get("baseline", {})
    overhead = dag["wall_s"] - cli["wall_s"]
    row: dict[str, Any] = {
        "scenario": NAME,
        "case": dag["case"].replace("Dagster", "Dagster overhead"),
        "input": dag["input"],
        "mode": dag["mode"],
        "status": "ok",
        "message": "",
        "subject": "Dagster wall − CLI wall",
        "note": "derived from the two rows above (medians)",
        "wall_s": overhead,
        "peak_rss_mb": dag.get("peak_rss_mb"),
        "baseline": {"name": "trivial 2-asset materialize", "wall_s": base.get("wall_s")},
        "ratio": overhead / base["wall_s"] if base.get("wall_s") else None,
        "details": {"dagster_wall_s": dag["wall_s"], "cli_wall_s": cli["wall_s"]},
    }
    apply_targets(row, [])
    return [row]
