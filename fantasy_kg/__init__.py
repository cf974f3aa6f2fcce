"""fantasy_kg: book series to knowledge graphs with Claude (Dagster plugin, CLI, Python API).

The package is layered (see docs/architecture.md): ``fantasy_kg.domain`` is pure, the integration
modules (``llm``, ``local_api``, ``warehouse``, ``pipeline``) talk to the outside world, and
``cli``/``defs`` only wire. ``fantasy_kg.schemas`` and ``fantasy_kg.llm`` keep the names of the
batch-extraction guide this project grew from.
"""

__version__ = "0.1.0"
