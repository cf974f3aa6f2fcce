"""The benchmark's quick cost scenario runs end to end and writes every row with its baseline.

No timing asserts: speed is what the benchmark reports, not what tests check. This proves the
harness (subprocess per scenario, results JSON, table) works and that the cost rows are complete,
including the re-run of an unchanged series planning $0.00 (design invariant 3).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fantasy_kg.domain.catalog import catalog
from fantasy_kg_tests.conftest import CORPUS_DIR, REPO_ROOT

GUIDE_SERIES = ["harry_potter", "asoiaf", "wheel_of_time"]


def _expected_models() -> list[str]:
    guide = ["claude-opus-4-5", "claude-sonnet-4-5"]
    current = [min(m.names, key=len) for m in catalog().models if m.status == "current"]
    return guide + [m for m in current if m not in guide]


def test_quick_cost_scenario_writes_every_row_with_baseline(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO_ROOT), env.get("PYTHONPATH")] if p)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "cost",
            "--out",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
            "--markdown",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["mode"] == "quick"
    rows = results["rows"]
    assert rows, "no rows written"
    assert all(r["scenario"] == "cost" for r in rows)
    assert all(r["status"] == "ok" for r in rows), [r.get("message") for r in rows]

    by_case = {r["case"]: r for r in rows}
    series = GUIDE_SERIES + (["oz"] if (CORPUS_DIR / "oz").is_dir() else [])
    models = _expected_models()
    for name in series:
        for model in models:
            row = by_case[f"{name} / {model}"]
            d = row["details"]
            assert row["baseline"]["name"] == "real-time"
            assert row["baseline"]["usd"] == d["realtime_usd"] > 0
            # Batch is half price. A 1-hour cache write costs 2x input and a read 0.1x, so caching
            # the prefix pays off from the third request of a series on.
            assert d["batch_usd"] == pytest.approx(d["realtime_usd"] * 0.5)
            assert d["batch_cached_usd"] > 0
            if d["sections"] >= 3:
                assert d["batch_cached_usd"] <= d["batch_usd"]
    assert by_case["harry_potter / claude-opus-4-5"]["details"]["input_tokens"] == 1_562_150
    assert by_case["asoiaf / claude-opus-4-5"]["details"]["sections"] == 8
    assert by_case["wheel_of_time / claude-opus-4-5"]["details"]["input_tokens"] == 6_717_033

    per_fact = [r for r in rows if "per 1,000 facts" in r["case"]]
    assert sorted(r["details"]["model"] for r in per_fact) == sorted(models)
    for row in per_fact:
        assert row["details"]["facts"] > 0
        assert row["baseline"]["usd"] == row["details"]["realtime_usd"] > 0

    rerun = [r for r in rows if "re-run unchanged" in r["case"]]
    assert len(rerun) == 1
    assert rerun[0]["baseline"]["usd"] > 0, "the first run must have planned some spend"
    assert rerun[0]["details"]["requests_rerun"] == 0
    assert rerun[0]["value"] == 0.0
    assert rerun[0]["target_met"] is True

    # The Markdown table printed on stdout names every row.
    for row in rows:
        assert row["details"]["model"] in proc.stdout
