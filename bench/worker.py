"""Subprocess entry point: prepare a scenario's inputs, or time one variant of one case.

The parent (``python -m bench``) starts one of these per measurement so that peak RSS belongs to
that measurement alone. The result goes to the ``--out`` JSON file, never to stdout, because the
code under test may print.
"""

import argparse
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from bench.harness import Context, Skip, peak_rss_mb, time_variant
from bench.scenarios import get_scenario


def _dispatch(args: argparse.Namespace) -> dict[str, Any]:
    ctx = Context(work_dir=Path(args.work_dir), quick=args.quick)
    scenario = get_scenario(args.scenario)
    if args.action == "prepare":
        details = scenario.prepare(ctx)
        return {"ok": True, "details": details, "peak_rss_mb": peak_rss_mb()}
    if args.action == "rows":
        return {"ok": True, "rows": scenario.rows(ctx)}
    case = scenario.cases(ctx)[args.case]
    variant = scenario.variants(case, ctx)[args.variant]
    return {"ok": True, **time_variant(variant, args.repeats)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("action", choices=["prepare", "measure", "rows"])
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--case", type=int, default=0)
    parser.add_argument("--variant", default="subject")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        payload = _dispatch(args)
    except Skip as exc:
        payload = {"skipped": str(exc)}
    except Exception as exc:  # reported in the row; the traceback goes to stderr
        traceback.print_exc()
        payload = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    Path(args.out).write_text(json.dumps(payload), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
