"""Crash failpoints: kill the current process at a named point, for crash-safety tests.

Why it works this way: docs/architecture.md, "Errors and crash testing".
"""

import os
import signal
from collections import Counter

FAILPOINT_ENV = "FANTASY_KG_FAILPOINT"

FAILPOINTS: frozenset[str] = frozenset(
    {
        "before_intent",
        "before_create",
        "after_create",
        "after_persist",
        "during_results",
        "after_results",
        "before_followup_create",
        "after_release",
        "during_load",
    }
)

_hits: Counter[str] = Counter()


def _armed() -> dict[str, int]:
    """Parse the environment variable into ``{name: hit number that fires}``."""
    raw = os.environ.get(FAILPOINT_ENV, "")
    armed: dict[str, int] = {}
    for entry in raw.split(","):
        entry = entry.strip()
        if not entry:
            continue
        name, _, count = entry.partition(":")
        try:
            armed[name.strip()] = max(1, int(count)) if count else 1
        except ValueError:
            armed[name.strip()] = 1
    return armed


def failpoint(name: str) -> None:
    """Die with SIGKILL if ``name`` is armed in ``$FANTASY_KG_FAILPOINT`` and its count is reached.

    A no-op costing one environment lookup when the variable is unset, so points can sit on hot
    paths such as the per-line results loop.
    """
    if FAILPOINT_ENV not in os.environ:
        return
    armed = _armed()
    if name not in armed:
        return
    _hits[name] += 1
    if _hits[name] >= armed[name]:
        os.kill(os.getpid(), signal.SIGKILL)
