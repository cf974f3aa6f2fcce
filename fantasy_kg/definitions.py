"""The Dagster code location: ``dg dev``, ``dg launch``, ``workspace.yaml`` and ``-m`` load it.

``defs`` is a ``@dg.definitions`` function, so importing this module builds nothing; Dagster calls
it when the code location loads. Partitions are the series folders under
``$FANTASY_KG_DATA_DIR/books`` (default ``./data/books``) at that moment: reload the code location
after adding a series folder. Call ``defs()`` to get the ``dg.Definitions`` object.
"""

import dagster as dg

from fantasy_kg.defs import build_definitions


@dg.definitions
def defs() -> dg.Definitions:
    """The fantasy_kg assets, checks, sensor and resources for ``$FANTASY_KG_DATA_DIR``."""
    return build_definitions()
