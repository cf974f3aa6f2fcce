"""Names shared by assets, checks and the sensor: asset keys, pool, tags, owners, code versions.

Kept in one module so the sensor's run requests, the checks' targets and the assets themselves
can never disagree on a key.
"""

import hashlib

import dagster as dg

from fantasy_kg.domain.prompts import INSTRUCTIONS_TEMPLATE, PROMPT_VERSION, SECTION_TEMPLATE
from fantasy_kg.domain.schemas import schema_fingerprint
from fantasy_kg.warehouse.shards import scale_out_selected

BOOK_SECTIONS = dg.AssetKey("book_sections")
EXTRACTION_BATCH = dg.AssetKey("extraction_batch")
EXTRACTION_RESULTS = dg.AssetKey("extraction_results")
KNOWLEDGE_GRAPH = dg.AssetKey("knowledge_graph")
COST_SUMMARY = dg.AssetKey("cost_summary")
GRAPH_VIEW = dg.AssetKey("graph_view")

ALL_ASSET_KEYS = (
    BOOK_SECTIONS,
    EXTRACTION_BATCH,
    EXTRACTION_RESULTS,
    KNOWLEDGE_GRAPH,
    COST_SUMMARY,
    GRAPH_VIEW,
)
"""In lineage order."""

DOWNSTREAM_OF_BATCH = (EXTRACTION_RESULTS, KNOWLEDGE_GRAPH, COST_SUMMARY, GRAPH_VIEW)
"""What the completion sensor materializes once a batch has ended."""

STUCK_CHECK = "batches_not_stuck"
"""Asset check on ``extraction_batch``: no batch of the partition is stuck (the sensor reports it
every time a series' list of stuck batches changes; materializing the asset evaluates it too)."""

DUCKDB_POOL = "duckdb_writer"
"""Concurrency pool of every step that opens the DuckDB file (see :data:`WAREHOUSE_POOL`).

DuckDB allows one read-write process per file, and ``DuckDBResource`` always opens read-write, so
readers (checks, the cost summary) take the lock too. With the pool's limit set to 1 two partitions
materialized at once queue instead of failing with "Could not set lock on file". The scale-out
warehouse (``FANTASY_KG_WAREHOUSE=shards``) has no such lock: each series publishes its own
version and readers open an in-memory catalog, so there the steps run in no pool at all.
"""

WAREHOUSE_POOL: str | None = None if scale_out_selected() else DUCKDB_POOL
"""The pool the warehouse steps declare: :data:`DUCKDB_POOL`, or none in scale-out mode."""

OWNERS = ["team:fantasy-kg"]

BATCH_ID_TAG = "fantasy_kg/batch_id"
"""Run tag: the batch whose end triggered the run (set by the completion sensor)."""
ATTEMPT_TAG = "fantasy_kg/attempt"
"""Run tag: how many times the sensor has requested a results run for that batch."""

SECTIONS_CODE_VERSION = "sections-v1"
"""Bump when sectioning changes what it writes for the same books."""


def _extraction_code_version() -> str:
    """The prompt version without its per-series part (ontology) and per-deployment part (model).

    Any change to the instructions, the section template or the output schema changes it, so the
    UI marks ``extraction_batch`` and everything after it as unsynced. The full per-series prompt
    version (ontology and model included) is in each materialization's metadata.
    """
    blob = "|".join([PROMPT_VERSION, INSTRUCTIONS_TEMPLATE, SECTION_TEMPLATE, schema_fingerprint()])
    return f"{PROMPT_VERSION}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


EXTRACTION_CODE_VERSION = _extraction_code_version()
GRAPH_CODE_VERSION = "graph-v1"
"""Bump when grounding, resolution or the load change what lands in DuckDB for the same results."""
COST_CODE_VERSION = "costs-v2"
"""v2: the planned-vs-actual chart in the metadata."""
VIEW_CODE_VERSION = "view-v1"
"""Bump when the HTML page or its PNG preview change for the same warehouse rows."""
