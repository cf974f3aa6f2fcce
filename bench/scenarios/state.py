"""Scenario 6, state: work per tick and per partition must not grow with other history on disk.

* Sensor tick: one evaluation of the completion sensor (``build_sensor_context``, the local
  backend on a loopback server) with 10,000 settled batches' job files on disk (2,000 in quick
  mode) plus 3 batches in progress, against the same with 10 settled. Target: within 2x.
* One partition's steps: ``run_series`` of the sample series (sections, submit, wait, retrieve,
  load into DuckDB; local backend) in a data folder that holds 1,000 other series' history
  (200 in quick mode: section files, results, provenance, failure records, job files), against
  the same run in an empty data folder. Target: within 1.5x.

Both subjects and baselines do the same work for their own series; the only difference is what
else is on disk, so the ratio is the cost of other series' history.
"""

import json
import shutil
from pathlib import Path
from typing import Any

from bench.harness import REPO_ROOT, Case, Context, Target, Variant

NAME = "state"
TITLE = "Per-series state"
SERIES = "ashen_crown"
TICK_TARGET = Target(metric="ratio", limit=2.0, text="≤ 2× with 10 settled")
PARTITION_TARGET = Target(metric="ratio", limit=1.5, text="≤ 1.5× with no history")
_OWED = 3


def _sizes(quick: bool) -> tuple[int, int]:
    """(settled job files, other series) for the two cases."""
    return (2_000, 200) if quick else (10_000, 1_000)


def _settled_jobs(jobs_dir: Path, n: int) -> None:
    from fantasy_kg.llm.jobs import JobRecord, JobStore

    store = JobStore(jobs_dir)
    for i in range(n):
        store.save(
            JobRecord(
                id=f"msgbatch_hist{i:06d}",
                output_dir=str(jobs_dir.parent / "extracted"),
                model="claude-haiku-4-5",
                series=f"hist{i % 1000:04d}",
                backend="local",
                processing_status="ended",
                submitted_at=f"2025-01-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
                results_processed_at="2025-01-02T00:00:00Z",
            )
        )


def _owed_jobs(data_dir: Path) -> None:
    """Batches that stay in progress on the loopback server, with their job files."""
    import anthropic

    from fantasy_kg.domain import paths
    from fantasy_kg.domain.catalog import default_model
    from fantasy_kg.llm.backend import LOCAL_API_KEY
    from fantasy_kg.llm.jobs import JobRecord, JobStore
    from fantasy_kg.local_api import start_local_server

    store = JobStore(paths.jobs_dir(data_dir))
    with start_local_server(paths.local_api_dir(data_dir), min_processing_seconds=3.0e8) as srv:
        client = anthropic.Anthropic(api_key=LOCAL_API_KEY, base_url=srv.base_url)
        for i in range(_OWED):
            batch = client.messages.batches.create(
                requests=[
                    {
                        "custom_id": f"{SERIES}_section_{i:02d}",
                        "params": {
                            "model": default_model(),
                            "max_tokens": 64,
                            "messages": [{"role": "user", "content": f"owed {i}"}],
                        },
                    }
                ]
            )
            job = JobRecord(
                id=batch.id,
                output_dir=str(paths.extracted_dir(data_dir)),
                model=default_model(),
                series=SERIES,
                backend="local",
            )
            job.update_from_batch(batch)
            job.submitted_at = job.created_at
            store.save(job)
        client.close()


def _history(data_dir: Path, series_count: int, sections: int = 5) -> None:
    """Other series' files, as a finished extraction leaves them (small but real JSON)."""
    from fantasy_kg.domain import paths
    from fantasy_kg.llm.jobs import FailureRecord, JobRecord, JobStore

    sec = paths.sections_dir(data_dir)
    out = paths.extracted_dir(data_dir)
    for sub in (sec, out / "_provenance", out / "_failures"):
        sub.mkdir(parents=True, exist_ok=True)
    store = JobStore(paths.jobs_dir(data_dir))
    empty = json.dumps({"entities": [], "relationships": [], "schema_proposals": []})
    for s in range(series_count):
        slug = f"hist{s:04d}"
        for n in range(1, sections + 1):
            cid = f"{slug}_section_{n:02d}"
            (sec / f"{cid}.txt").write_text(f"History {s} section {n}.\n", encoding="utf-8")
            meta = {"series": slug, "section": n, "books": [], "input_tokens": 10}
            (sec / f"{cid}.meta.json").write_text(json.dumps(meta), encoding="utf-8")
            (out / f"{cid}_extracted.json").write_text(empty, encoding="utf-8")
            prov = {
                "custom_id": cid,
                "file_name": f"{cid}.txt",
                "chunk_id": cid,
                "series": slug,
                "batch_id": f"msgbatch_h{s:05d}",
                "backend": "local",
            }
            (out / "_provenance" / f"{cid}.json").write_text(json.dumps(prov), encoding="utf-8")
        failure = FailureRecord(
            custom_id=f"{slug}_section_{sections + 1:02d}",
            batch_id=f"msgbatch_h{s:05d}",
            type="refusal",
            series=slug,
        )
        (out / "_failures" / f"{failure.custom_id}.json").write_text(
            failure.model_dump_json(), encoding="utf-8"
        )
        store.save(
            JobRecord(
                id=f"msgbatch_h{s:05d}",
                output_dir=str(out),
                model="claude-haiku-4-5",
                series=slug,
                backend="local",
                processing_status="ended",
                results_processed_at="2025-01-02T00:00:00Z",
            )
        )


def _books(data_dir: Path) -> None:
    shutil.copytree(REPO_ROOT / "data" / "books" / SERIES, data_dir / "books" / SERIES)


def prepare(ctx: Context) -> dict[str, Any]:
    """Four data folders: tick with many/few settled jobs, partition with/without history."""
    base = ctx.scenario_dir(NAME)
    settled, others = _sizes(ctx.quick)
    info = {"settled": settled, "others": others}
    marker = base / "prepared.json"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == info:
        return info
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    for name, count in (("tick_many", settled), ("tick_few", 10)):
        d = base / name
        _books(d)
        _settled_jobs(d / "batch_jobs", count)
        _owed_jobs(d)
    for name, count in (("partition_history", others), ("partition_empty", 0)):
        d = base / name
        _books(d)
        _history(d, count)
    marker.write_text(json.dumps(info), encoding="utf-8")
    return info


def cases(ctx: Context) -> list[Case]:
    """The sensor tick, then one partition's steps."""
    settled, others = _sizes(ctx.quick)
    return [
        Case(
            scenario=NAME,
            name="sensor tick",
            input_desc=f"{settled:,} settled + {_OWED} in-progress batches",
            targets=[TICK_TARGET],
            repeats_full=5,
            repeats_quick=3,
            params={"subject": "tick_many", "baseline": "tick_few"},
            subject_label=f"tick, {settled:,} settled job files",
            baseline_label="tick, 10 settled job files",
        ),
        Case(
            scenario=NAME,
            name="one partition's steps",
            input_desc=f"sample series with {others:,} other series' history on disk",
            targets=[PARTITION_TARGET],
            repeats_full=3,
            repeats_quick=1,
            params={"subject": "partition_history", "baseline": "partition_empty"},
            subject_label=f"run_series, {others:,} other series on disk",
            baseline_label="run_series, no other series",
        ),
    ]


def _tick_variant(data_dir: Path, label: str) -> Variant:
    import dagster as dg
    from dagster_duckdb import DuckDBResource

    from fantasy_kg.defs import build_definitions
    from fantasy_kg.defs.resources import AnthropicBatchResource
    from fantasy_kg.defs.sensors import build_completion_sensor
    from fantasy_kg.domain import paths
    from fantasy_kg.llm.jobs import job_files_parsed
    from fantasy_kg.local_api import start_local_server

    server = start_local_server(paths.local_api_dir(data_dir), min_processing_seconds=3.0e8)
    resources: dict[str, object] = {
        "anthropic_batches": AnthropicBatchResource(
            data_dir=str(data_dir), backend="local", base_url=server.base_url, wait_inline=False
        ),
        "duckdb": DuckDBResource(database=str(paths.warehouse_path(data_dir))),
    }
    defs = build_definitions(data_dir, resources=resources)
    sensor = build_completion_sensor(partition_keys=[SERIES])
    instance = dg.DagsterInstance.ephemeral()
    state: dict[str, Any] = {"cursor": None}

    def run(_: None) -> dict[str, Any]:
        before = job_files_parsed()
        with dg.build_sensor_context(
            instance=instance, cursor=state["cursor"], resources=resources, definitions=defs
        ) as context:
            result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        state["cursor"] = result.cursor
        return {"job_files_parsed": job_files_parsed() - before}

    run(None)  # a first tick indexes nothing new but warms the process like a daemon's
    return Variant(run=run, label=label)


def _partition_variant(data_dir: Path, label: str) -> Variant:
    from fantasy_kg.domain import paths
    from fantasy_kg.llm.jobs import JobStore
    from fantasy_kg.pipeline.run import run_series

    def setup() -> None:
        """Forget the sample series' own outputs, so every repeat does the whole work."""
        store = JobStore(paths.jobs_dir(data_dir))
        for job in store.all_jobs(SERIES):
            store.job_path(job.id).unlink(missing_ok=True)
        intents = paths.jobs_dir(data_dir) / "intents"
        for path in intents.glob("*.json") if intents.is_dir() else []:
            if json.loads(path.read_text(encoding="utf-8")).get("series") == SERIES:
                path.unlink()
        for folder in (
            paths.sections_dir(data_dir),
            paths.extracted_dir(data_dir),
            paths.extracted_dir(data_dir) / "_provenance",
            paths.extracted_dir(data_dir) / "_failures",
        ):
            for path in folder.glob(f"{SERIES}_*") if folder.is_dir() else []:
                path.unlink()
        paths.warehouse_path(data_dir).unlink(missing_ok=True)
        shutil.rmtree(paths.local_api_dir(data_dir), ignore_errors=True)

    def run(_: None) -> dict[str, Any]:
        result = run_series(SERIES, data_dir=data_dir, backend="local")
        return {"series": result.series, "loads": len(result.loads)}

    return Variant(run=run, setup=setup, label=label)


def variants(case: Case, ctx: Context) -> dict[str, Variant]:
    """Subject: with the history on disk; baseline: without."""
    base = ctx.scenario_dir(NAME)
    make = _tick_variant if case.name == "sensor tick" else _partition_variant
    return {
        "subject": make(base / case.params["subject"], case.subject_label),
        "baseline": make(base / case.params["baseline"], case.baseline_label),
    }
