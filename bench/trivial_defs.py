"""Two trivial partitioned assets: what a Dagster materialization costs when the assets do nothing.

The end-to-end scenario materializes this code location the same way as ``fantasy_kg.definitions``
(``dagster asset materialize``, fresh ``DAGSTER_HOME``), so the difference between the two is the
work of the pipeline and the wall time of this one is Dagster's own fixed cost.
"""

import dagster as dg

PARTITIONS = dg.StaticPartitionsDefinition(["oz", "ashen_crown"])


@dg.asset(partitions_def=PARTITIONS)
def trivial_first() -> int:
    """A constant."""
    return 1


@dg.asset(partitions_def=PARTITIONS)
def trivial_second(trivial_first: int) -> int:
    """The constant plus one."""
    return trivial_first + 1


# Same executor as fantasy_kg.definitions, so the comparison is like for like.
defs = dg.Definitions(assets=[trivial_first, trivial_second], executor=dg.in_process_executor)
