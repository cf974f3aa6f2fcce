"""Wall time of the README's full materialization of the sample partition (target: 60 s).

Runs ``dagster asset materialize -m fantasy_kg.definitions --select '*' --partition ashen_crown``
as a newcomer would (fresh ``DAGSTER_HOME``, fresh copy of the sample data, local backend, no API
key), then once more on the unchanged partition (no batch, identical DuckDB), and prints both
times as JSON. Measured here rather than asserted in a test: timings belong to a benchmark.

Usage::

    python scripts/time_dagster_materialize.py [--series ashen_crown] [--repeat 3]
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import dagster_sandbox as sandbox


def main(argv: list[str] | None = None) -> int:
    """Time cold and unchanged materializations; print the result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", default="ashen_crown")
    parser.add_argument("--repeat", type=int, default=3, help="fresh setups to time")
    args = parser.parse_args(argv)
    cold: list[float] = []
    unchanged: list[float] = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="fantasy_kg_time_") as tmp:
            env = sandbox.prepare(Path(tmp), args.series)
            cold.append(sandbox.materialize(env, args.series))
            unchanged.append(sandbox.materialize(env, args.series))
    print(
        json.dumps(
            {
                "series": args.series,
                "command": "dagster asset materialize -m fantasy_kg.definitions --select '*' "
                f"--partition {args.series}",
                "cold_seconds": [round(t, 2) for t in cold],
                "cold_median_seconds": round(statistics.median(cold), 2),
                "unchanged_seconds": [round(t, 2) for t in unchanged],
                "unchanged_median_seconds": round(statistics.median(unchanged), 2),
                "target_seconds": 60,
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
