"""The six scenarios of the benchmark, in the order the table shows them.

Each scenario module exposes ``NAME``, ``TITLE``, ``prepare(ctx)`` (build inputs under
``bench/_work/<name>``, cached between runs) and either ``cases(ctx)`` + ``variants(case, ctx)``
(timed rows: a subject and its baseline) or ``rows(ctx)`` (computed rows, e.g. dollars). Modules
import ``fantasy_kg`` lazily, inside functions, so the parent process stays small.
"""

import importlib
from types import ModuleType

SCENARIOS = [
    "sectioning",
    "requests",
    "ingestion",
    "end_to_end",
    "cost",
    "state",
    "view",
    "scale_backfill",
    "scale_queries",
    "scale_memory",
]
GROUPS = {"scale": [name for name in SCENARIOS if name.startswith("scale_")]}
"""Names ``--only`` accepts for several scenarios at once (``--only scale``)."""


def get_scenario(name: str) -> ModuleType:
    """Import a scenario module by name."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    return importlib.import_module(f"bench.scenarios.{name}")
