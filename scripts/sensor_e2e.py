"""End to end through the Dagster daemon: submit, return at once, sensor, downstream run.

The Anthropic backend is pointed at a loopback Anthropic-compatible server (the project's local
API, started here with ``min_processing_seconds`` so its batches stay in progress like real ones)
through ``ANTHROPIC_API_KEY`` + ``ANTHROPIC_BASE_URL``: exactly the production code path, with
nothing billed. Then:

1. ``dagster asset materialize --select '*'`` submits the batch and returns without waiting;
   ``extraction_results`` and everything after it are skipped (the batch is still running);
2. ``dagster dev`` starts the daemon; the completion sensor polls the batch from its job file
   and, once it has ended, requests ``extraction_results → knowledge_graph → cost_summary``;
3. the script waits for that run to succeed, checks the graph landed in DuckDB, and searches
   every file left behind for the API key (there must be none).

Usage::

    python scripts/sensor_e2e.py [--processing-seconds 20] [--timeout 240]

Prints a JSON report; exits 1 if the downstream run did not succeed in time.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dagster_sandbox as sandbox

SERIES = "ashen_crown"
FAKE_KEY = "sk-ant-loopback-not-a-real-key"


def run(processing_seconds: float, timeout: float) -> dict[str, Any]:
    """Run the scenario in a temp dir and report what happened."""
    import dagster as dg
    import duckdb

    from fantasy_kg.local_api import start_local_server

    report: dict[str, Any] = {"ok": False}
    with tempfile.TemporaryDirectory(prefix="fantasy_kg_sensor_") as tmp:
        root = Path(tmp)
        with start_local_server(
            root / "loopback_api", min_processing_seconds=processing_seconds
        ) as api:
            env = sandbox.prepare(
                root,
                SERIES,
                FANTASY_KG_BACKEND="auto",
                ANTHROPIC_API_KEY=FAKE_KEY,
                ANTHROPIC_BASE_URL=api.base_url,
                FANTASY_KG_SENSOR_INTERVAL_SECONDS="5",
            )
            report["submit_run_seconds"] = round(sandbox.materialize(env, SERIES), 2)
            jobs = list((root / "data" / "batch_jobs").glob("*.json"))
            job = json.loads(jobs[0].read_text())
            batch_id = job["id"]
            report.update(
                batch_id=batch_id,
                backend=job["backend"],
                status_after_submit=job["processing_status"],
            )

            port = sandbox.free_port()
            started = time.monotonic()
            proc = sandbox.start_dev(env, port, root / "dagster_dev.log")
            try:
                sandbox.wait_for_server(f"http://127.0.0.1:{port}", proc)
                os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]
                with dg.DagsterInstance.get() as instance:
                    run_record = None
                    while time.monotonic() - started < timeout:
                        runs = instance.get_runs(
                            filters=dg.RunsFilter(tags={"fantasy_kg/batch_id": batch_id})
                        )
                        if runs and runs[0].is_finished:
                            run_record = runs[0]
                            break
                        time.sleep(2)
                    if run_record is not None:
                        report.update(
                            run_status=run_record.status.value,
                            run_key=run_record.tags.get("dagster/run_key"),
                            run_finished_after_seconds=round(time.monotonic() - started, 1),
                        )
            finally:
                sandbox.stop(proc)
        # Design invariant 5: the key must not be in any file the run left behind (data, job
        # files, DuckDB, DAGSTER_HOME's run storage and compute logs, the dagster dev log).
        secret = FAKE_KEY.encode()
        report["files_checked_for_key"] = sum(1 for p in root.rglob("*") if p.is_file())
        report["key_found_in"] = [
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and secret in p.read_bytes()
        ]
        db = root / "data" / "fantasy_kg.duckdb"
        if db.exists():
            with duckdb.connect(str(db), read_only=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM entities WHERE series = ?", [SERIES]
                ).fetchone()
                report["entities"] = int(row[0]) if row else 0
    report["ok"] = (
        report.get("status_after_submit") == "in_progress"
        and report.get("run_status") == "SUCCESS"
        and report.get("entities", 0) > 0
        and not report.get("key_found_in")
    )
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processing-seconds", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=240.0)
    args = parser.parse_args(argv)
    report = run(args.processing_seconds, args.timeout)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
