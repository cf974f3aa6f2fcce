"""The guide's ``schemas`` module: extraction and ontology models under their original names.

Kept as a thin re-export of :mod:`fantasy_kg.domain.schemas` so code written against the
batch-extraction guide (``src.knowledge_graph.schemas``) runs with only the import changed.
"""

from fantasy_kg.domain.schemas import (
    CanonicalRule,
    Confidence,
    DoNotMergeRule,
    EntityInstance,
    EntityTypeDef,
    Evidence,
    ExtractionResult,
    Mention,
    Ontology,
    ParsedExtraction,
    RejectedItem,
    RelationshipInstance,
    RelationshipTypeDef,
    SchemaUpdateProposal,
    WireExtractionResult,
    load_ontology,
    parse_extraction,
)

__all__ = [
    "CanonicalRule",
    "Confidence",
    "DoNotMergeRule",
    "EntityInstance",
    "EntityTypeDef",
    "Evidence",
    "ExtractionResult",
    "Mention",
    "Ontology",
    "ParsedExtraction",
    "RejectedItem",
    "RelationshipInstance",
    "RelationshipTypeDef",
    "SchemaUpdateProposal",
    "WireExtractionResult",
    "load_ontology",
    "parse_extraction",
]
