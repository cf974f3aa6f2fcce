"""Command line of the benchmark: choose scenarios, run them in subprocesses, print, save.

``python -m bench`` runs every scenario at full size; ``--quick`` runs small inputs and fewer
repeats (for CI, well under two minutes on two cores); ``--only NAME`` selects scenarios.
Results go to ``bench/results.json`` (or ``--out``). Rows of scenarios that were not selected
are kept from the previous file, so ``--only`` refreshes part of the table without losing the rest.
"""

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report
from bench.harness import (
    DEFAULT_RESULTS,
    DEFAULT_WORK_DIR,
    Context,
    WorkerResult,
    add_references,
    make_row,
    run_worker,
)
from bench.scenarios import GROUPS, SCENARIOS, get_scenario


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _failed_row(scenario: str, result: WorkerResult, quick: bool) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "case": "(all)",
        "input": "",
        "mode": "quick" if quick else "full",
        "status": "skipped" if result.skipped else "failed",
        "message": result.skipped or result.error,
        "target_met": None,
        "targets": [],
    }


def run_scenario(name: str, ctx: Context, timeout_s: float, verbose: bool) -> list[dict[str, Any]]:
    """Prepare one scenario and measure all its cases; always returns at least one row."""
    module = get_scenario(name)
    # A scenario that needs longer than the default at full size says so (TIMEOUT_FULL_S).
    if not ctx.quick:
        timeout_s = max(timeout_s, float(getattr(module, "TIMEOUT_FULL_S", 0.0)))
    quick_flag = ["--quick"] if ctx.quick else []
    _log(f"[{name}] preparing inputs")
    t0 = time.perf_counter()
    prep = run_worker(
        ["prepare", "--scenario", name, *quick_flag], ctx.work_dir, timeout_s, verbose
    )
    if not prep.ok:
        _log(f"[{name}] {'skipped' if prep.skipped else 'FAILED'}: {prep.skipped or prep.error}")
        return [_failed_row(name, prep, ctx.quick)]
    _log(f"[{name}] inputs ready in {time.perf_counter() - t0:.1f} s")

    if hasattr(module, "rows"):
        res = run_worker(
            ["rows", "--scenario", name, *quick_flag], ctx.work_dir, timeout_s, verbose
        )
        if not res.ok:
            return [_failed_row(name, res, ctx.quick)]
        rows: list[dict[str, Any]] = res.payload["rows"]
        for row in rows:
            row.setdefault("mode", "quick" if ctx.quick else "full")
        return rows

    rows = []
    for index, case in enumerate(module.cases(ctx)):
        repeats = str(case.repeats(ctx.quick))
        measured: dict[str, WorkerResult] = {}
        labels = {"baseline": case.baseline_label, **case.references, "subject": case.subject_label}
        for variant, label in labels.items():
            _log(f"[{name}] {case.name}: {variant} ({label}) x{repeats}")
            args = ["measure", "--scenario", name, "--case", str(index)]
            args += ["--variant", variant, "--repeats", repeats, *quick_flag]
            measured[variant] = run_worker(args, ctx.work_dir, timeout_s, verbose)
            res = measured[variant]
            if res.ok:
                walls = ", ".join(f"{w:.2f}" for w in res.payload["walls"])
                _log(f"    wall [{walls}] s, peak RSS {res.payload['peak_rss_mb']:.0f} MB")
            else:
                _log(f"    {'skipped' if res.skipped else 'FAILED'}: {res.skipped or res.error}")
        row = make_row(case, measured["subject"], measured["baseline"], ctx.quick)
        add_references(row, case, measured)
        rows.append(row)
    if hasattr(module, "derived_rows"):
        rows.extend(module.derived_rows(rows, ctx))
    return rows


def _merge(
    previous: dict[str, Any] | None, new_rows: list[dict[str, Any]], ran: list[str]
) -> list[dict[str, Any]]:
    """Keep rows of scenarios that did not run this time, replace the others, keep table order."""
    kept = [r for r in (previous or {}).get("rows", []) if r.get("scenario") not in ran]
    merged = kept + new_rows
    order = {name: i for i, name in enumerate(SCENARIOS)}
    return sorted(merged, key=lambda r: order.get(r.get("scenario", ""), 99))


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        # Other work on the machine skews wall times; the load average says how much there was.
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 1e9, 1)
    except ImportError:  # psutil is a dependency, but the report should not need it
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit code 0 even when targets are missed (the table says so)."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small inputs, fewer repeats (CI)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=(
            f"scenario(s) to run, repeatable or comma-separated: {', '.join([*SCENARIOS, *GROUPS])}"
        ),
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS, help="results JSON file")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="generated data")
    parser.add_argument("--timeout", type=float, default=None, help="per subprocess, seconds")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables instead")
    parser.add_argument("-v", "--verbose", action="store_true", help="show subprocess output")
    args = parser.parse_args(argv)

    selected = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    selected = [m for n in selected for m in GROUPS.get(n, [n])]
    unknown = [n for n in selected if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    names = selected or list(SCENARIOS)
    work_dir = args.work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(work_dir=work_dir, quick=args.quick)
    timeout = args.timeout or (300.0 if args.quick else 3600.0)

    started = time.perf_counter()
    load_at_start = round(os.getloadavg()[0], 2)
    rows: list[dict[str, Any]] = []
    for name in names:
        rows.extend(run_scenario(name, ctx, timeout, args.verbose))
    elapsed = time.perf_counter() - started

    previous = None
    if args.out.exists():
        try:
            previous = json.loads(args.out.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = None
    results = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "scenarios_run": names,
        "elapsed_s": round(elapsed, 1),
        "machine": {**_machine(), "load_avg_1m_at_start": load_at_start},
        "rows": _merge(previous, rows, names),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    if args.markdown:
        print(report.markdown(results))
    else:
        report.print_tables(results)
    _log(f"done in {elapsed:.1f} s; results in {args.out}")
    return 0
