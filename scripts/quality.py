"""Score the local backend (the rule-based baseline) against the sample series' gold annotations.

Usage::

    python scripts/quality.py [--series ashen_crown] [--data-dir data] [--mode end_to_end|direct]
                              [--ontology series|default|both] [--json report.json]

Prints one table per ontology setting on stdout (progress and the local-backend banner go to
stderr). ``--json`` also writes the full reports, including missed and wrong facts.
"""

import argparse
import json
import sys
from pathlib import Path

from fantasy_kg.domain.baseline.quality import format_table
from fantasy_kg.domain.errors import UserError
from fantasy_kg.pipeline.baseline_quality import OntologyChoice, measure

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, print; exit code 2 on a user error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", default="ashen_crown")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data")
    parser.add_argument("--mode", choices=["end_to_end", "direct"], default="end_to_end")
    parser.add_argument("--ontology", choices=["series", "default", "both"], default="both")
    parser.add_argument(
        "--max-section-tokens",
        type=int,
        default=None,
        help="cut the series into sections of at most this many tokens (default: model budget)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the reports here")
    args = parser.parse_args(argv)
    choices: list[OntologyChoice] = (
        ["series", "default"] if args.ontology == "both" else [args.ontology]
    )
    reports = {}
    try:
        for choice in choices:
            report = measure(
                args.series,
                data_dir=args.data_dir,
                mode=args.mode,
                ontology=choice,
                max_section_tokens=args.max_section_tokens,
            )
            reports[choice] = report.to_dict()
            sizing = (
                f", sections <= {args.max_section_tokens} tokens" if args.max_section_tokens else ""
            )
            print(format_table(report, title=f"[{args.mode}, {choice} ontology{sizing}]"))
            print()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json is not None:
        args.json.write_text(json.dumps(reports, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
