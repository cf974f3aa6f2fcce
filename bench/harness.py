"""The measuring machinery: cases, variants, subprocess isolation, medians and peak memory.

Every measured variant (a scenario's subject or its baseline) runs in a fresh Python subprocess,
so its peak RSS is its own and not the high-water mark of whatever ran before it in the same
process. Inside that subprocess the variant runs ``repeats`` times; each repeat has an untimed
``setup`` (fresh output folder, fresh database) and a timed ``run``. The parent collects wall
times, takes the median, and compares subject with baseline measured in the same invocation.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_WORK_DIR = BENCH_DIR / "_work"
DEFAULT_RESULTS = BENCH_DIR / "results.json"
MB = 1_000_000
MIB = 1024 * 1024


class Skip(Exception):
    """Raised by a scenario that cannot run here (missing corpus, function not landed yet)."""


@dataclass(frozen=True)
class Target:
    """A target a row must meet: a comparison of one of the row's numbers against a limit.

    ``metric`` names a row field: ``throughput`` (higher is better), ``ratio``, ``wall_s`` and
    ``peak_rss_mb`` (lower is better), or ``value`` for rows that measure something else.
    """

    metric: str
    limit: float
    text: str
    higher_is_better: bool = False

    def met(self, row: dict[str, Any]) -> bool | None:
        """Whether ``row`` meets the target; ``None`` when the row lacks the number."""
        value = row.get(self.metric)
        if not isinstance(value, int | float):
            return None
        return value >= self.limit if self.higher_is_better else value <= self.limit


@dataclass
class Case:
    """One row of the table: what is measured, on what input, against which target."""

    scenario: str
    name: str
    input_desc: str
    size: float = 0.0
    unit: str = ""
    targets: list[Target] = field(default_factory=list)
    repeats_full: int = 5
    repeats_quick: int = 2
    params: dict[str, Any] = field(default_factory=dict)
    subject_label: str = ""
    baseline_label: str = ""
    note: str = ""
    references: dict[str, str] = field(default_factory=dict)
    """Extra variants measured like the baseline (name → label), shown beside the row."""

    def repeats(self, quick: bool) -> int:
        """How many times each variant runs in this mode."""
        return self.repeats_quick if quick else self.repeats_full


@dataclass
class Variant:
    """Something to time: ``setup`` (untimed, every repeat) then ``run`` (timed).

    ``run`` gets what ``setup`` returned and may return a dict of details (counts, sizes) that
    end up in the row; the details of the last repeat are kept.
    """

    run: Callable[[Any], dict[str, Any] | None]
    setup: Callable[[], Any] = lambda: None
    label: str = ""


@dataclass
class Context:
    """Where a scenario keeps its generated inputs and outputs, and the mode it runs in."""

    work_dir: Path
    quick: bool

    def scenario_dir(self, scenario: str) -> Path:
        """A scenario's own folder under the work dir (created)."""
        path = self.work_dir / scenario
        path.mkdir(parents=True, exist_ok=True)
        return path


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its reaped children, in MB (10^6 bytes).

    Linux reports ``ru_maxrss`` in KiB. Children count because a variant may run the CLI or
    Dagster in a subprocess; their peak is what the user would see.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) * 1024 / MB


def _reset_peak_rss() -> bool:
    """Reset this process's high-water mark (Linux ``clear_refs`` 5), so setup does not count.

    Returns False where the kernel does not allow it; the peak then includes setup.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _own_hwm_mb() -> float:
    """``VmHWM`` of this process in MB (the peak since the last reset)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def time_variant(variant: Variant, repeats: int) -> dict[str, Any]:
    """Run a variant ``repeats`` times in this process; return wall times, RSS and details.

    Peak RSS is measured over the timed ``run`` only (the high-water mark is reset after each
    ``setup``), but memory that setup allocated and still holds counts, as it would for a user.
    Children (CLI or Dagster subprocesses) count with their own peak.
    """
    walls: list[float] = []
    peaks: list[float] = []
    details: dict[str, Any] = {}
    reset_ok = True
    for _ in range(repeats):
        state = variant.setup()
        reset_ok = _reset_peak_rss() and reset_ok
        start = time.perf_counter()
        out = variant.run(state)
        walls.append(time.perf_counter() - start)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / MB
        peaks.append(max(_own_hwm_mb(), kids))
        del state
        if out:
            details = out
    return {
        "walls": walls,
        "peak_rss_mb": max(peaks) if peaks else peak_rss_mb(),
        "peak_rss_scope": "timed run" if reset_ok else "whole process",
        "details": details,
    }


def bench_env(work_dir: Path) -> dict[str, str]:
    """Environment for every subprocess: no API key (local backend), data dir under _work."""
    env = dict(os.environ)
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        env.pop(var, None)
    env["FANTASY_KG_DATA_DIR"] = str(work_dir / "data")
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p)
    # Rich progress bars and colors go to stderr, which the harness discards unless verbose.
    env.setdefault("TERM", "dumb")
    return env


@dataclass
class WorkerResult:
    """What a worker subprocess reported, or why it did not."""

    ok: bool
    payload: dict[str, Any] = field(default_factory=dict)
    skipped: str = ""
    error: str = ""


def run_worker(
    args: list[str], work_dir: Path, timeout_s: float, verbose: bool = False
) -> WorkerResult:
    """Run ``python -m bench.worker ARGS`` and read the JSON it writes to its ``--out`` file."""
    out_file = work_dir / f".worker-{os.getpid()}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "bench.worker", *args, "--work-dir", str(work_dir)]
    cmd += ["--out", str(out_file)]
    try:
        proc = subprocess.run(
            cmd,
            cwd=REPO_ROOT,
            env=bench_env(work_dir),
            stdout=None if verbose else subprocess.DEVNULL,
            stderr=None if verbose else subprocess.PIPE,
            timeout=timeout_s,
            text=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return WorkerResult(ok=False, error=f"timed out after {timeout_s:.0f} s")
    try:
        if not out_file.exists():
            tail = (proc.stderr or "").strip().splitlines()[-5:] if proc.stderr else []
            return WorkerResult(
                ok=False, error=f"worker exited {proc.returncode}: " + " | ".join(tail)
            )
        payload = json.loads(out_file.read_text(encoding="utf-8"))
    finally:
        out_file.unlink(missing_ok=True)
    if payload.get("skipped"):
        return WorkerResult(ok=False, skipped=str(payload["skipped"]))
    if payload.get("error"):
        return WorkerResult(ok=False, error=str(payload["error"]))
    return WorkerResult(ok=True, payload=payload)


def median(values: list[float]) -> float:
    """Median wall time (robust to one slow repeat from a cold page cache)."""
    return statistics.median(values) if values else float("nan")


def make_row(
    case: Case,
    subject: WorkerResult,
    baseline: WorkerResult,
    quick: bool,
) -> dict[str, Any]:
    """Combine the subject's and the baseline's measurements into one table row."""
    row: dict[str, Any] = {
        "scenario": case.scenario,
        "case": case.name,
        "input": case.input_desc,
        "input_size": case.size,
        "input_unit": case.unit,
        "mode": "quick" if quick else "full",
        "subject": case.subject_label,
        "note": case.note,
        "targets": [asdict(t) for t in case.targets],
    }
    if not subject.ok:
        row["status"] = "skipped" if subject.skipped else "failed"
        row["message"] = subject.skipped or subject.error
        row["target_met"] = None
        if baseline.ok:
            row["baseline"] = {
                "name": case.baseline_label,
                "wall_s": median(baseline.payload["walls"]),
                "peak_rss_mb": baseline.payload["peak_rss_mb"],
            }
        return row
    walls = subject.payload["walls"]
    row.update(
        status="ok",
        message="",
        runs=len(walls),
        wall_s=median(walls),
        wall_s_runs=walls,
        peak_rss_mb=subject.payload["peak_rss_mb"],
        details=subject.payload.get("details", {}),
    )
    if case.size and row["wall_s"] > 0:
        row["throughput"] = case.size / row["wall_s"]
        row["throughput_unit"] = f"{case.unit}/s"
    if baseline.ok:
        b_walls = baseline.payload["walls"]
        b_row: dict[str, Any] = {
            "name": case.baseline_label,
            "runs": len(b_walls),
            "wall_s": median(b_walls),
            "wall_s_runs": b_walls,
            "peak_rss_mb": baseline.payload["peak_rss_mb"],
            "details": baseline.payload.get("details", {}),
        }
        if case.size and b_row["wall_s"] > 0:
            b_row["throughput"] = case.size / b_row["wall_s"]
        row["baseline"] = b_row
        row["ratio"] = row["wall_s"] / b_row["wall_s"] if b_row["wall_s"] > 0 else None
    else:
        row["baseline"] = {
            "name": case.baseline_label,
            "status": "skipped" if baseline.skipped else "failed",
            "message": baseline.skipped or baseline.error,
        }
        row["ratio"] = None
    apply_targets(row, case.targets)
    return row


def add_references(row: dict[str, Any], case: Case, measured: dict[str, "WorkerResult"]) -> None:
    """Record extra reference measurements (median wall, RSS, ratio of the subject to each)."""
    refs = []
    for name, label in case.references.items():
        res = measured.get(name)
        if res is None or not res.ok:
            why = "not run" if res is None else (res.skipped or res.error)
            refs.append({"name": label, "status": "failed", "message": why})
            continue
        wall = median(res.payload["walls"])
        ref: dict[str, Any] = {
            "name": label,
            "wall_s": wall,
            "wall_s_runs": res.payload["walls"],
            "peak_rss_mb": res.payload["peak_rss_mb"],
            "details": res.payload.get("details", {}),
        }
        if isinstance(row.get("wall_s"), float) and wall > 0:
            ref["subject_ratio"] = row["wall_s"] / wall
        base = row.get("baseline", {}).get("wall_s")
        if isinstance(base, float) and base > 0:
            ref["baseline_ratio"] = wall / base
        refs.append(ref)
    if refs:
        row["references"] = refs


def apply_targets(row: dict[str, Any], targets: list[Target]) -> None:
    """Fill ``targets[*].met`` and the overall ``target_met`` of a row."""
    verdicts = []
    row["targets"] = []
    for t in targets:
        met = t.met(row)
        row["targets"].append({**asdict(t), "met": met})
        verdicts.append(met)
    if not targets:
        row["target_met"] = None
    elif any(v is False for v in verdicts):
        row["target_met"] = False
    elif all(v is True for v in verdicts):
        row["target_met"] = True
    else:
        row["target_met"] = None
