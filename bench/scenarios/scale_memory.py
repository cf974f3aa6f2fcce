"""Scenario scale_memory: peak memory of loading one series next to 1,000 others vs alone.

The sample series is extracted once with the local backend; its load
(``load_series_from_files``: graph build + warehouse write) is then measured in a fresh process
into a warehouse that holds 1,000 other synthetic series (full: 200 entities and 800
relationships each, 200,000 / 800,000 in all; quick: 20 / 80 each) and into an empty one. Both
engines: the one DuckDB file, and the scale-out shards (``FANTASY_KG_WAREHOUSE=shards``).
Target: peak RSS within 1.2x of the empty warehouse's.
"""

import os
import shutil
from pathlib import Path
from typing import Any

from bench.harness import REPO_ROOT, Case, Context, Target, Variant, apply_targets

NAME = "scale_memory"
TITLE = "Load memory next to 1,000 series"
SERIES = "ashen_crown"
OTHERS = 1_000
RSS_TARGET = 1.2


def _per_series(quick: bool) -> tuple[int, int]:
    return (20, 80) if quick else (200, 800)


def _dirs(ctx: Context) -> dict[str, Path]:
    base = ctx.scenario_dir(NAME) / ("quick" if ctx.quick else "full")
    return {
        "data": base / "data",
        "full_db": base / "full" / "fantasy_kg.duckdb",
        "empty_db": base / "empty" / "fantasy_kg.duckdb",
    }


def _shard_others(db: Path) -> None:
    """Publish every series of ``db`` as a shard version beside it (``<stem>_shards``)."""
    import duckdb

    from fantasy_kg.warehouse.schema import TABLE_SPECS

    root = db.parent / f"{db.stem}_shards" / "series"
    tmp = db.parent / "_parts"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    conn = duckdb.connect(str(db), read_only=True)
    try:
        names = [str(r[0]) for r in conn.execute("SELECT DISTINCT series FROM entities").fetchall()]
        version = "v-20260101T000000000000Z-bench000"
        for spec in TABLE_SPECS:
            part = tmp / spec.name
            conn.execute(
                f"COPY (SELECT * FROM {spec.name}) TO '{part}' "
                "(FORMAT parquet, PARTITION_BY (series), WRITE_PARTITION_COLUMNS true)"
            )
            empty = tmp / f"{spec.name}.empty.parquet"
            conn.execute(f"COPY (SELECT * FROM {spec.name} LIMIT 0) TO '{empty}' (FORMAT parquet)")
            for series in names:
                target = root / series / version / f"{spec.name}.parquet"
                target.parent.mkdir(parents=True, exist_ok=True)
                found = sorted((part / f"series={series}").glob("*.parquet"))
                shutil.copyfile(found[0] if found else empty, target)
        for series in names:
            (root / series / "CURRENT").write_text(version + "\n", encoding="utf-8")
    finally:
        conn.close()
        shutil.rmtree(tmp, ignore_errors=True)


def prepare(ctx: Context) -> dict[str, Any]:
    """Extract the sample series once; build the warehouse of 1,000 others in both engines."""
    from bench.scenarios.scale_queries import synth_graph
    from fantasy_kg.pipeline.run import run_series
    from fantasy_kg.warehouse.load import connect

    os.environ.pop("FANTASY_KG_WAREHOUSE", None)  # inputs are built in the one-file engine
    d = _dirs(ctx)
    if not (d["data"] / "extracted").is_dir():
        shutil.rmtree(d["data"], ignore_errors=True)
        shutil.copytree(REPO_ROOT / "data" / "books" / SERIES, d["data"] / "books" / SERIES)
        run_series(SERIES, data_dir=d["data"], backend="local")
    if not d["full_db"].exists():
        entities, relationships = _per_series(ctx.quick)
        d["full_db"].parent.mkdir(parents=True, exist_ok=True)
        tmp = d["full_db"].with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        conn = connect(tmp)
        try:
            synth_graph(conn, entities * OTHERS, relationships * OTHERS, series=OTHERS)
            conn.execute("CHECKPOINT")
        finally:
            conn.close()
        tmp.rename(d["full_db"])
    shards = d["full_db"].parent / f"{d['full_db'].stem}_shards"
    if not (shards / "series" / "s0" / "CURRENT").exists():
        _shard_others(d["full_db"])
    d["empty_db"].parent.mkdir(parents=True, exist_ok=True)
    return {k: str(v) for k, v in d.items()}


def cases(ctx: Context) -> list[Case]:
    """One case per engine: 1,000 other series vs an empty warehouse."""
    entities, relationships = _per_series(ctx.quick)
    others = f"{OTHERS:,} other series of {entities} entities / {relationships} relationships"
    return [
        Case(
            scenario=NAME,
            name=f"load one series, {engine}",
            input_desc=f"sample series; {others} vs none",
            repeats_full=3,
            repeats_quick=1,
            params={"engine": engine},
            subject_label=f"{OTHERS:,} other series in the warehouse",
            baseline_label="empty warehouse",
            note="ratio row below compares peak RSS",
        )
        for engine in ("one DuckDB file", "scale-out shards")
    ]


def _variant(ctx: Context, db: Path, shards: bool, label: str) -> Variant:
    from fantasy_kg.domain import paths
    from fantasy_kg.pipeline.graph import load_series_from_files

    if shards:
        os.environ["FANTASY_KG_WAREHOUSE"] = "shards"
    else:
        os.environ.pop("FANTASY_KG_WAREHOUSE", None)
    data = _dirs(ctx)["data"]

    def setup() -> None:
        shutil.rmtree(db.parent / f"{db.stem}_shards" / "series" / SERIES, ignore_errors=True)

    def run(_: None) -> dict[str, Any]:
        summary = load_series_from_files(
            paths.sections_dir(data),
            paths.extracted_dir(data),
            SERIES,
            db,
            jobs_dir=paths.jobs_dir(data),
        )
        return {"entities": summary.entities, "relationships": summary.relationships}

    return Variant(run=run, setup=setup, label=label)


def variants(case: Case, ctx: Context) -> dict[str, Variant]:
    """Subject: next to 1,000 series; baseline: alone (same engine)."""
    d = _dirs(ctx)
    shards = case.params["engine"] == "scale-out shards"
    return {
        "subject": _variant(ctx, d["full_db"], shards, case.subject_label),
        "baseline": _variant(ctx, d["empty_db"], shards, case.baseline_label),
    }


def derived_rows(rows: list[dict[str, Any]], ctx: Context) -> list[dict[str, Any]]:
    """Peak RSS with 1,000 others / peak RSS alone, per engine (target <= 1.2x)."""
    out = []
    for row in rows:
        base = row.get("baseline", {})
        if row.get("status") != "ok" or not base.get("peak_rss_mb"):
            continue
        ratio = row["peak_rss_mb"] / base["peak_rss_mb"]
        derived: dict[str, Any] = {
            "scenario": NAME,
            "case": row["case"] + ": peak RSS ratio",
            "input": row["input"],
            "mode": row["mode"],
            "status": "ok",
            "message": "",
            "subject": f"{row['peak_rss_mb']:.0f} MB vs {base['peak_rss_mb']:.0f} MB",
            "note": "peak RSS next to 1,000 series / peak RSS alone",
            "value": ratio,
            "value_text": f"{ratio:.2f}x",
            "baseline": {"name": "empty warehouse", "peak_rss_mb": base["peak_rss_mb"]},
            "ratio": ratio,
        }
        apply_targets(derived, [Target("value", RSS_TARGET, f"<= {RSS_TARGET}x")])
        out.append(derived)
    return out
