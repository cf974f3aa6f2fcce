"""Score series-wide entity resolution and grounding against the sample series' gold annotations.

Usage::

    python scripts/resolution_quality.py [--series ashen_crown] [--data-dir data]
                                         [--source gold_surfaces|baseline|both]
                                         [--max-section-tokens 2500] [--json]

Prints a table (B-cubed and pairwise precision/recall/F1 over entity instances, grounding rate)
per result source and ontology mode on stdout; ``--json`` prints the full numbers as JSON instead.
Exit code 1 when the F1 with the series ontology is below the 0.9 target, 2 on a user error.
"""

import argparse
import json
import sys
from pathlib import Path

from fantasy_kg.domain.errors import UserError
from fantasy_kg.pipeline.graph_quality import DEFAULT_SECTION_TOKENS, Source, measure

REPO = Path(__file__).resolve().parent.parent
TARGET_F1 = 0.9


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", default="ashen_crown")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data")
    parser.add_argument("--source", choices=["gold_surfaces", "baseline", "both"], default="both")
    parser.add_argument("--max-section-tokens", type=int, default=DEFAULT_SECTION_TOKENS)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    sources: tuple[Source, ...] = (
        ("gold_surfaces", "baseline") if args.source == "both" else (args.source,)
    )
    data: Path = args.data_dir
    try:
        runs = measure(
            data / "books",
            data / "gold" / f"{args.series}.json",
            data / "schemas" / f"{args.series}_schema.json",
            args.series,
            sources=sources,
            max_section_tokens=args.max_section_tokens,
        )
    except UserError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.as_dict() for r in runs], indent=2))
    else:
        header = (
            f"{'results':<14} {'ontology':<10} {'inst':>5} {'B3 P':>6} {'B3 R':>6} "
            f"{'B3 F1':>6} {'pairF1':>6} {'grounding':>9}  evidence by status"
        )
        print(header)
        print("-" * len(header))
        for r in runs:
            s = r.scores
            g = r.grounding
            print(
                f"{r.source:<14} {r.mode:<10} {s.instances:>5} {s.b3_precision:>6.3f} "
                f"{s.b3_recall:>6.3f} {s.b3_f1:>6.3f} {s.pair_f1:>6.3f} "
                f"{g['grounding_rate']:>9.1%}  {g['evidence_by_status']}"
            )
            if "planted_quotes" in g:
                print(f"{'':<26}planted quotes: {g['planted_quotes']}")
    below = [r for r in runs if r.mode == "rules" and r.scores.b3_f1 < TARGET_F1]
    for r in below:
        print(f"below target: {r.source} F1 {r.scores.b3_f1:.3f} < {TARGET_F1}", file=sys.stderr)
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
