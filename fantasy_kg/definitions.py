"""The Dagster code location that ``workspace.yaml`` and ``-m fantasy_kg.definitions`` load.

Partitions are the series folders under ``$FANTASY_KG_DATA_DIR/books`` (default ``./data/books``)
at load time; reload the code location after adding a series folder.
"""

from fantasy_kg.defs import build_definitions

defs = build_definitions()
