"""Crash failpoints: kill the current process at a named point, for crash-safety tests.

Exactly-once submission and "nothing lost" (design invariants 1 and 2) are claims about what
happens when a process dies at the worst moment. Tests prove them by running a real subprocess
with ``FANTASY_KG_FAILPOINT`` set, letting it die with SIGKILL (no ``finally``, no ``atexit``, no
flush: exactly like an OOM kill or a pulled plug), then re-running and checking the state on disk
and on the server.

Usage::

    FANTASY_KG_FAILPOINT=after_create fantasy-kg extract-batch --mode submit ...
    FANTASY_KG_FAILPOINT=during_results:3 fantasy-kg extract-batch --mode retrieve ...

The variable holds one or more comma-separated ``name`` or ``name:N`` entries; ``name:N`` fires on
the N-th time the point is reached in this process (default: the first). Unknown names are
ignored, so a typo never kills a production run by accident; the set of points is
:data:`FAILPOINTS`.

Points placed by the batch client (``fantasy_kg.llm``):

* ``before_intent``: the request payloads are on disk, the intent record is not.
* ``before_create``: the intent record is on disk, the create call has not been made.
* ``after_create``: the server accepted the batch; its id is not yet persisted anywhere.
* ``after_persist``: the job file exists; the intent is not yet marked ``created``.
* ``during_results``: inside the results download, after a result line was handled (use
  ``during_results:N`` to die after the N-th line).
* ``after_results``: all result files written; the job is not yet marked processed.
* ``before_followup_create``: a follow-up batch for retryable failures is about to be created.
* ``after_release``: a provisionally adopted batch proved not ours and is marked released; its
  sections are not yet submitted again.

Points placed by the warehouse loader (``fantasy_kg.warehouse``):

* ``during_load``: inside the load transaction, after a table's rows were replaced (use
  ``during_load:N`` to die after the N-th table); the previous rows must survive.

Other areas may add their own names here (keep them documented in this list).
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
