"""Pytest plugin that records each reliability scenario's outcome for ``docs/reliability.md``.

Loaded explicitly (``-p fantasy_kg_tests.reliability.plugin``) by ``scripts/reliability_report.py``
so it runs in the xdist controller as well as in the workers. The scenario metadata travels on the
test report's ``user_properties`` (set by the folder's conftest), because under xdist the controller
sees reports, not items. When ``FANTASY_KG_RELIABILITY_REPORT`` names a file, the controller
writes one JSON document there at the end of the session; otherwise the plugin does nothing.
"""

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

REPORT_ENV = "FANTASY_KG_RELIABILITY_REPORT"
"""Path of the JSON file that receives every scenario's outcome (unset = record nothing)."""

SCENARIO_PROPERTY = "reliability_scenario"
METRICS_PROPERTY = "reliability_metrics"


class ScenarioRecorder:
    """Accumulates per-test outcomes from reports (setup, call and teardown phases)."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.started = time.time()
        self.records: dict[str, dict[str, Any]] = {}

    def add(self, report: pytest.TestReport) -> None:
        """Fold one phase's report into the test's record."""
        props = dict(report.user_properties)
        scenario = props.get(SCENARIO_PROPERTY)
        if not isinstance(scenario, dict):
            return
        rec = self.records.setdefault(
            report.nodeid,
            {**scenario, "nodeid": report.nodeid, "outcome": "passed", "duration_s": 0.0},
        )
        rec["duration_s"] += float(report.duration)
        metrics = props.get(METRICS_PROPERTY)
        if isinstance(metrics, dict) and metrics:
            rec.setdefault("metrics", {}).update(metrics)
        if hasattr(report, "wasxfail") and report.skipped:
            # A scenario that proves a known, reported bug: shown as such, never as a pass.
            rec["outcome"] = "known bug"
            rec["detail"] = str(report.wasxfail)[:400]
        elif report.failed:
            rec["outcome"] = "failed" if report.when == "call" else f"error ({report.when})"
            rec["detail"] = _first_line(report.longreprtext)
            if hasattr(report, "wasxfail"):
                rec["detail"] = "fixed? a known-bug scenario passed: " + rec["detail"]
        elif report.skipped and rec["outcome"] == "passed":
            rec["outcome"] = "skipped"
            rec["detail"] = _skip_reason(report)

    def write(self) -> None:
        """Write every record, sorted by category and scenario id, as one JSON document."""
        doc = {
            "started": self.started,
            "wall_s": round(time.time() - self.started, 2),
            # Timings mean little without the machine's load (CI runners and shared hosts vary).
            "load_average_1m": round(os.getloadavg()[0], 2),
            "scenarios": sorted(
                self.records.values(), key=lambda r: (r.get("category", ""), r.get("id", ""))
            ),
        }
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.target.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")


def _first_line(text: str) -> str:
    """The most telling line of a failure (the ``E`` line pytest prints), shortened."""
    for line in text.splitlines():
        if line.startswith("E "):
            return line[2:].strip()[:300]
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])[:300]
    return str(longrepr)[:300]


_recorder: ScenarioRecorder | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Start recording when the environment variable asks for it (controller only under xdist)."""
    global _recorder
    target = os.environ.get(REPORT_ENV, "").strip()
    if target and not hasattr(config, "workerinput"):
        _recorder = ScenarioRecorder(Path(target))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Fold each phase's report into the scenario record."""
    if _recorder is not None:
        _recorder.add(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the JSON document once every report has arrived."""
    if _recorder is not None:
        _recorder.write()
