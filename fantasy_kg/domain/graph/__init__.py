"""The knowledge graph of a series: grounding, entity resolution, relationships, proposals.

Pure functions over section files and extraction results (no DuckDB, no Dagster): the pipeline
reads files, calls :func:`build_graph`, and hands the row tables to the warehouse loader.
"""

from fantasy_kg.domain.graph.build import GraphConfig, InputFailure, ResultInput, build_graph
from fantasy_kg.domain.graph.grounding import Grounding, GroundingConfig, SectionText
from fantasy_kg.domain.graph.models import GraphStats, KnowledgeGraph
from fantasy_kg.domain.graph.proposals import accept_proposals, bump_version
from fantasy_kg.domain.graph.provenance import JobInfo, Provenance, parse_job
from fantasy_kg.domain.graph.resolution import EntityRecord, Resolution, resolve_entities

__all__ = [
    "EntityRecord",
    "GraphConfig",
    "GraphStats",
    "Grounding",
    "GroundingConfig",
    "InputFailure",
    "JobInfo",
    "KnowledgeGraph",
    "Provenance",
    "Resolution",
    "ResultInput",
    "SectionText",
    "accept_proposals",
    "build_graph",
    "bump_version",
    "parse_job",
    "resolve_entities",
]
