"""The Dagster UI in a real browser, and the completion sensor under a real daemon.

Both run the scripts in ``scripts/`` as a user would (subprocesses, ``dagster dev`` on loopback,
temporary DAGSTER_HOME and data copy) and check their JSON reports:

* ``ui_screenshot.py``: headless Chromium sees the six assets, every lineage edge, and the
  materialized partition's metadata. Skips cleanly when ``/usr/bin/chromium`` is missing.
* ``sensor_e2e.py``: with a loopback Anthropic-compatible server, ``extraction_batch`` returns while
  the batch is in progress, and the daemon's sensor requests the downstream run, which succeeds.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _run_script(name: str, *args: str, timeout: float) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    report: dict[str, object] = json.loads(proc.stdout)
    return report


@pytest.mark.browser
@pytest.mark.slow
def test_lineage_and_partition_metadata_in_chromium(tmp_path: Path) -> None:
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium not installed (apt-get install -y chromium)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed")
    report = _run_script("ui_screenshot.py", "--out-dir", str(tmp_path), timeout=170)
    assert report["ok"] is True
    assert report["edges_drawn"] == report["edges_expected"] == 6
    assert sorted(str(a) for a in report["assets_drawn"]) == sorted(  # type: ignore[attr-defined]
        [
            "book_sections",
            "extraction_batch",
            "extraction_results",
            "knowledge_graph",
            "cost_summary",
            "graph_view",
        ]
    )
    # graph_view's metadata shows the main characters' network as a decoded PNG.
    preview_px = report["view_preview_px"]
    assert isinstance(preview_px, list) and min(int(v) for v in preview_px) > 100
    for name in ("dagster_lineage.png", "dagster_asset_metadata.png", "dagster_graph_view.png"):
        png = tmp_path / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 50_000  # a drawn page, not a blank one


@pytest.mark.slow
def test_daemon_sensor_requests_the_downstream_run_when_the_batch_ends() -> None:
    report = _run_script(
        "sensor_e2e.py", "--processing-seconds", "15", "--timeout", "150", timeout=178
    )
    assert report["ok"] is True
    assert report["backend"] == "anthropic"  # the production code path, against loopback
    assert report["status_after_submit"] == "in_progress"  # the batch asset did not wait
    assert report["run_status"] == "SUCCESS"
    assert str(report["run_key"]).endswith(":1")
    assert int(report["entities"]) > 10  # type: ignore[call-overload]
    assert report["key_found_in"] == []  # not in job files, DuckDB, run storage or logs
    assert int(report["files_checked_for_key"]) > 20  # type: ignore[call-overload]
