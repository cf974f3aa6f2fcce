"""The knowledge graph of one series as plain row tables, ready to be bulk-loaded.

Every class here is one warehouse table (same name, same columns in the same order). They are
slotted dataclasses rather than pydantic models on purpose: a large series produces millions of
mention and evidence rows, and a slotted dataclass costs a fraction of the memory and none of the
validation time (the inputs were validated when the result files were parsed).

Every fact row carries its provenance: the section it came from (``section_id`` and
``section_number``), the book (``book_no``, ``book``, ``book_file``) and the request that produced
it (``custom_id``, ``batch_id``, ``prompt_version``, ``backend``, ``model``), so any fact joins
back to its text and to the batch and prompt version that paid for it.
"""

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


@dataclass(slots=True)
class SectionRow:
    """One section file of the series and how its extraction ended."""

    TABLE: ClassVar[str] = "sections"

    series: str
    section_id: str
    section_number: int
    file_name: str
    books: list[str]
    book_files: list[str]
    first_book_no: int | None
    chars: int
    input_tokens: int
    token_count_method: str
    sha256: str
    custom_ids: list[str]
    batch_id: str | None
    prompt_version: str | None
    backend: str | None
    model: str | None
    status: str  # extracted | failed | missing
    entity_instances: int
    relationship_instances: int


@dataclass(slots=True)
class BatchJobRow:
    """One batch (or real-time run) that produced results for the series, from its job file."""

    TABLE: ClassVar[str] = "batch_jobs"

    series: str
    batch_id: str
    model: str | None
    backend: str | None
    prompt_version: str | None
    processing_status: str | None
    attempt: int | None
    parent_batch_id: str | None
    created_at: str | None
    ended_at: str | None
    request_count: int
    succeeded: int
    errored: int
    canceled: int
    expired: int
    processing: int
    custom_ids: list[str]
    failure_count: int
    job_file: str
    truncated: int
    effort: str | None
    max_tokens: int | None


@dataclass(slots=True)
class CostRow:
    """Estimated and actual cost of one batch, with its token usage."""

    TABLE: ClassVar[str] = "costs"

    series: str
    batch_id: str
    model: str | None
    backend: str | None
    mode: str  # batch | realtime
    requests: int
    succeeded: int
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    estimated_usd: float | None
    actual_usd: float | None
    realtime_equivalent_usd: float | None
    savings_usd: float | None
    thinking_tokens: int
    truncated: int
    attempt: int | None


@dataclass(slots=True)
class EntityRow:
    """One resolved entity of the series (a cluster of per-section entity instances)."""

    TABLE: ClassVar[str] = "entities"

    series: str
    entity_id: str
    type: str
    name: str
    canonical_rule: str | None
    confidence: float
    confidence_max: float
    instance_count: int
    mention_count: int
    grounded_mention_count: int
    section_count: int
    alias_count: int
    first_book_no: int | None
    first_book: str | None
    first_section: str
    last_book_no: int | None
    last_book: str | None
    last_section: str
    attributes_json: str
    source_ids: list[str]
    ambiguous_with: list[str]
    batch_ids: list[str]
    prompt_versions: list[str]


@dataclass(slots=True)
class AliasRow:
    """One surface form of an entity: how often and where it first appears."""

    TABLE: ClassVar[str] = "entity_aliases"

    series: str
    entity_id: str
    alias: str
    alias_norm: str
    kinds: list[str]  # canonical | rule | name | alias | mention
    instance_count: int
    section_count: int
    first_book_no: int | None
    first_book: str | None
    first_section: str | None


@dataclass(slots=True)
class AttributeRow:
    """One attribute value of an entity with the sections that state it."""

    TABLE: ClassVar[str] = "entity_attributes"

    series: str
    entity_id: str
    name: str
    value: str
    instance_count: int
    first_book_no: int | None
    first_section: str
    sections: list[str]


@dataclass(slots=True)
class MergeRow:
    """One resolution decision: two groups of instances joined (or kept apart), and why."""

    TABLE: ClassVar[str] = "entity_merges"

    series: str
    merge_no: int
    decision: str  # merged | kept_apart
    rule: str
    key: str
    entity_id: str
    other_entity_id: str | None
    left_instance: str
    right_instance: str
    detail: str


@dataclass(slots=True)
class MentionRow:
    """One surface form of one entity instance, grounded in its section and book."""

    TABLE: ClassVar[str] = "mentions"

    series: str
    mention_id: int
    entity_id: str
    raw_entity_id: str
    surface: str
    section_id: str
    section_number: int
    file_name: str
    book_no: int | None
    book: str | None
    book_file: str | None
    char_start: int | None
    char_end: int | None
    section_char_start: int | None
    section_char_end: int | None
    status: str  # exact | normalized | fuzzy | not_found
    score: float
    custom_id: str
    batch_id: str | None
    prompt_version: str | None
    backend: str | None
    model: str | None


@dataclass(slots=True)
class RelationshipRow:
    """One deduplicated relationship (source, type, target) between resolved entities."""

    TABLE: ClassVar[str] = "relationships"

    series: str
    relationship_id: str
    source_id: str
    type: str
    target_id: str
    directed: bool
    in_ontology: bool
    schema_violation: str | None
    orphan: bool
    orphan_endpoints: list[str]
    self_loop: bool
    instance_count: int
    evidence_count: int
    grounded_evidence_count: int
    grounded: bool
    confidence: float
    description: str
    first_book_no: int | None
    first_book: str | None
    first_section: str
    last_book_no: int | None
    last_book: str | None
    last_section: str
    batch_ids: list[str]
    prompt_versions: list[str]


@dataclass(slots=True)
class EvidenceRow:
    """One evidence quote of one relationship instance, grounded in its section and book.

    A relationship instance without any quote gets one row with ``status = 'no_quote'`` so that
    every instance stays traceable to its section and batch.
    """

    TABLE: ClassVar[str] = "evidence"

    series: str
    evidence_id: int
    relationship_id: str
    quote: str
    raw_source: str
    raw_type: str
    raw_target: str
    instance_confidence: float
    section_id: str
    section_number: int
    file_name: str
    book_no: int | None
    book: str | None
    book_file: str | None
    char_start: int | None
    char_end: int | None
    section_char_start: int | None
    section_char_end: int | None
    status: str  # exact | normalized | fuzzy | not_found | no_quote
    score: float
    custom_id: str
    batch_id: str | None
    prompt_version: str | None
    backend: str | None
    model: str | None


@dataclass(slots=True)
class ProposalRow:
    """An ontology extension proposal aggregated over the series."""

    TABLE: ClassVar[str] = "schema_proposals"

    series: str
    proposal_type: str
    name: str
    origin: str  # model | observed | model+observed
    status: str  # pending | in_ontology
    instance_count: int
    section_count: int
    sections: list[str]
    description: str
    rationale: str
    source_types: list[str]
    target_types: list[str]
    examples: list[str]
    example_sections: list[str]


@dataclass(slots=True)
class FailureRow:
    """A section or request that did not end as a usable result, with the reason."""

    TABLE: ClassVar[str] = "extraction_failures"

    series: str
    custom_id: str
    section_id: str | None
    file_name: str | None
    stage: str  # batch | result_file | unmatched | missing | validation
    failure_type: str
    message: str
    retryable: bool
    resolved: bool
    batch_id: str | None


ROW_TYPES: tuple[type[Any], ...] = (
    SectionRow,
    BatchJobRow,
    CostRow,
    EntityRow,
    AliasRow,
    AttributeRow,
    MergeRow,
    MentionRow,
    RelationshipRow,
    EvidenceRow,
    ProposalRow,
    FailureRow,
)


def column_names(row_type: type[Any]) -> list[str]:
    """Column names of a row class, in table order."""
    return [f.name for f in fields(row_type)]


@dataclass(slots=True)
class GraphStats:
    """Headline numbers of a built graph: what the user sees after a load."""

    sections: int = 0
    sections_with_results: int = 0
    result_files: int = 0
    entity_instances: int = 0
    relationship_instances: int = 0
    entities: int = 0
    relationships: int = 0
    mentions: int = 0
    mentions_grounded: int = 0
    evidence: int = 0
    evidence_grounded: int = 0
    evidence_exact: int = 0
    orphan_relationships: int = 0
    ungrounded_relationships: int = 0
    out_of_ontology_relationships: int = 0
    merges: int = 0
    kept_apart: int = 0
    failures: int = 0
    rejected_items: int = 0
    proposals: int = 0

    @property
    def mention_grounding_rate(self) -> float:
        """Share of mention surfaces found in their section text (exact, normalized or fuzzy)."""
        return self.mentions_grounded / self.mentions if self.mentions else 0.0

    @property
    def evidence_grounding_rate(self) -> float:
        """Share of evidence quotes found in their section text."""
        return self.evidence_grounded / self.evidence if self.evidence else 0.0

    @property
    def grounding_rate(self) -> float:
        """Share of all mentions and quotes found in the text: the series' headline number."""
        total = self.mentions + self.evidence
        return (self.mentions_grounded + self.evidence_grounded) / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict including the derived rates (for JSON output and Dagster metadata)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["mention_grounding_rate"] = round(self.mention_grounding_rate, 4)
        out["evidence_grounding_rate"] = round(self.evidence_grounding_rate, 4)
        out["grounding_rate"] = round(self.grounding_rate, 4)
        return out


@dataclass(slots=True)
class KnowledgeGraph:
    """Everything built for one series: one list per warehouse table plus headline stats."""

    series: str
    ontology_version: str
    ontology_fingerprint: str
    sections: list[SectionRow] = field(default_factory=list)
    batch_jobs: list[BatchJobRow] = field(default_factory=list)
    costs: list[CostRow] = field(default_factory=list)
    entities: list[EntityRow] = field(default_factory=list)
    aliases: list[AliasRow] = field(default_factory=list)
    attributes: list[AttributeRow] = field(default_factory=list)
    merges: list[MergeRow] = field(default_factory=list)
    mentions: list[MentionRow] = field(default_factory=list)
    relationships: list[RelationshipRow] = field(default_factory=list)
    evidence: list[EvidenceRow] = field(default_factory=list)
    proposals: list[ProposalRow] = field(default_factory=list)
    failures: list[FailureRow] = field(default_factory=list)
    stats: GraphStats = field(default_factory=GraphStats)

    def tables(self) -> dict[str, list[Any]]:
        """Rows per warehouse table name, in load order."""
        return {
            SectionRow.TABLE: self.sections,
            BatchJobRow.TABLE: self.batch_jobs,
            CostRow.TABLE: self.costs,
            EntityRow.TABLE: self.entities,
            AliasRow.TABLE: self.aliases,
            AttributeRow.TABLE: self.attributes,
            MergeRow.TABLE: self.merges,
            MentionRow.TABLE: self.mentions,
            RelationshipRow.TABLE: self.relationships,
            EvidenceRow.TABLE: self.evidence,
            ProposalRow.TABLE: self.proposals,
            FailureRow.TABLE: self.failures,
        }
