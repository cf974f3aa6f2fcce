"""The knowledge graph of one series as plain row tables, ready to be bulk-loaded.

Every class here is one warehouse table and its only declaration: each field carries its DuckDB
type and description (``Annotated[T, Col(...)]``), from which the warehouse derives the DDL, the
load casts and the Dagster column schema. Slotted dataclasses, not pydantic models: a large
series has millions of mention rows, and the inputs were validated when the files were parsed.

Every fact row carries its provenance: the section it came from (``section_id`` and
``section_number``), the book (``book_no``, ``book``, ``book_file``) and the request that produced
it (``custom_id``, ``batch_id``, ``prompt_version``, ``backend``, ``model``), so any fact joins
back to its text and to the batch and prompt version that paid for it.
"""

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Annotated, Any, ClassVar

from fantasy_kg.domain.columns import Col
from fantasy_kg.domain.columns import column_names as column_names  # re-exported (callers)

# --- Columns shared by several tables (declared once, reused by name) -------------------------

Series = Annotated[
    str, Col("VARCHAR NOT NULL", "Series slug (the partition key); a load replaces one series.")
]
SectionId = Annotated[str, Col("VARCHAR NOT NULL", "Section number as text ('01'), unique.")]
SectionNumber = Annotated[int, Col("INTEGER", "Section number (order within the series).")]
FileName = Annotated[str, Col("VARCHAR", "Section file name (<series>_section_NN.txt).")]
BookNo = Annotated[int | None, Col("INTEGER", "Book number in story order (1 = first book).")]
Book = Annotated[str | None, Col("VARCHAR", "Book title.")]
BookFile = Annotated[str | None, Col("VARCHAR", "Book file name the text comes from.")]
CharStart = Annotated[
    int | None, Col("BIGINT", "Start offset in the book file (characters); NULL if ungrounded.")
]
CharEnd = Annotated[int | None, Col("BIGINT", "End offset in the book file (exclusive).")]
SectionCharStart = Annotated[int | None, Col("BIGINT", "Start offset in the section text.")]
SectionCharEnd = Annotated[int | None, Col("BIGINT", "End offset in the section text.")]
GroundStatus = Annotated[
    str,
    Col("VARCHAR NOT NULL", "How the text was re-found: exact, normalized, fuzzy, not_found."),
]
Score = Annotated[float, Col("DOUBLE", "Grounding match score, 0 to 1 (1 = exact).")]
CustomId = Annotated[str, Col("VARCHAR", "custom_id of the request that produced the row.")]
BatchId = Annotated[
    str | None, Col("VARCHAR", "Batch id (or real-time run id) that produced the row.")
]
PromptVersion = Annotated[str | None, Col("VARCHAR", "Prompt version the request used.")]
Backend = Annotated[
    str | None, Col("VARCHAR", "anthropic (Claude) or local (the rule-based baseline).")
]
Model = Annotated[str | None, Col("VARCHAR", "Model id that answered.")]
EntityId = Annotated[str, Col("VARCHAR NOT NULL", "Resolved entity id (entities.entity_id).")]
InstanceCount = Annotated[int, Col("INTEGER", "Entity or relationship instances that state it.")]
SectionCount = Annotated[int, Col("INTEGER", "Distinct sections it appears in.")]
FirstBookNo = Annotated[int | None, Col("INTEGER", "Book number of the first appearance.")]
FirstBook = Annotated[str | None, Col("VARCHAR", "Book title of the first appearance.")]
FirstSection = Annotated[str, Col("VARCHAR", "Section id of the first appearance.")]
LastBookNo = Annotated[int | None, Col("INTEGER", "Book number of the last appearance.")]
LastBook = Annotated[str | None, Col("VARCHAR", "Book title of the last appearance.")]
LastSection = Annotated[str, Col("VARCHAR", "Section id of the last appearance.")]
BatchIds = Annotated[list[str], Col("VARCHAR[]", "Batches whose results contributed.")]
PromptVersions = Annotated[list[str], Col("VARCHAR[]", "Prompt versions that contributed.")]
Sections = Annotated[list[str], Col("VARCHAR[]", "Section ids that state it.")]
Processing = Annotated[int, Col("INTEGER", "Requests still processing when last seen.")]
Truncated = Annotated[
    int, Col("INTEGER DEFAULT 0", "Answers cut at max_tokens (a planning miss, split and retried).")
]
Attempt = Annotated[int | None, Col("INTEGER", "1 for the first submission, 2+ for follow-ups.")]


@dataclass(slots=True)
class SectionRow:
    """One section file of the series and how its extraction ended."""

    TABLE: ClassVar[str] = "sections"
    PRIMARY_KEY: ClassVar[tuple[str, ...]] = ("series", "section_id")

    series: Series
    section_id: SectionId
    section_number: Annotated[int, Col("INTEGER NOT NULL", "Section number within the series.")]
    file_name: Annotated[str, Col("VARCHAR NOT NULL", "Section file name.")]
    books: Annotated[list[str], Col("VARCHAR[]", "Titles of the books the section covers.")]
    book_files: Annotated[list[str], Col("VARCHAR[]", "Book files the section covers.")]
    first_book_no: Annotated[int | None, Col("INTEGER", "Book number where the section starts.")]
    chars: Annotated[int, Col("BIGINT", "Length of the section text in characters.")]
    input_tokens: Annotated[int, Col("BIGINT", "Prompt tokens of the section's request.")]
    token_count_method: Annotated[
        str, Col("VARCHAR", "count_tokens (API) or estimate (offline, with a safety margin).")
    ]
    sha256: Annotated[str, Col("VARCHAR", "SHA-256 of the section text (the reuse key).")]
    custom_ids: Annotated[list[str], Col("VARCHAR[]", "Requests made for this section.")]
    batch_id: BatchId
    prompt_version: PromptVersion
    backend: Backend
    model: Model
    status: Annotated[
        str, Col("VARCHAR NOT NULL", "How its extraction ended: extracted, failed or missing.")
    ]
    entity_instances: Annotated[int, Col("INTEGER", "Entity instances extracted from it.")]
    relationship_instances: Annotated[
        int, Col("INTEGER", "Relationship instances extracted from it.")
    ]


@dataclass(slots=True)
class BatchJobRow:
    """One batch (or real-time run) that produced results for the series, from its job file."""

    TABLE: ClassVar[str] = "batch_jobs"
    PRIMARY_KEY: ClassVar[tuple[str, ...]] = ("series", "batch_id")

    series: Series
    batch_id: Annotated[str, Col("VARCHAR NOT NULL", "Message Batches id (or real-time run id).")]
    model: Model
    backend: Backend
    prompt_version: PromptVersion
    processing_status: Annotated[
        str | None, Col("VARCHAR", "in_progress, canceling or ended (ended is not success).")
    ]
    attempt: Attempt
    parent_batch_id: Annotated[
        str | None, Col("VARCHAR", "The batch this one resubmits failed requests of.")
    ]
    created_at: Annotated[str | None, Col("TIMESTAMPTZ", "When the batch was created.")]
    ended_at: Annotated[str | None, Col("TIMESTAMPTZ", "When processing ended (NULL if not).")]
    request_count: Annotated[int, Col("INTEGER", "Requests in the batch.")]
    succeeded: Annotated[int, Col("INTEGER", "Requests that succeeded (the only billed ones).")]
    errored: Annotated[int, Col("INTEGER", "Requests that came back errored.")]
    canceled: Annotated[int, Col("INTEGER", "Requests canceled before processing.")]
    expired: Annotated[int, Col("INTEGER", "Requests expired after 24 hours.")]
    processing: Processing
    custom_ids: Annotated[list[str], Col("VARCHAR[]", "custom_ids of the batch's requests.")]
    failure_count: Annotated[int, Col("INTEGER", "Requests recorded as failures.")]
    job_file: Annotated[str, Col("VARCHAR", "Job file (<jobs_dir>/<batch_id>.json).")]
    truncated: Truncated
    effort: Annotated[str | None, Col("VARCHAR", "Thinking effort the requests asked for.")]
    max_tokens: Annotated[int | None, Col("INTEGER", "max_tokens of the requests.")]


@dataclass(slots=True)
class CostRow:
    """Estimated and actual cost of one batch, with its token usage."""

    TABLE: ClassVar[str] = "costs"
    PRIMARY_KEY: ClassVar[tuple[str, ...]] = ("series", "batch_id")

    series: Series
    batch_id: Annotated[str, Col("VARCHAR NOT NULL", "Batch (or real-time run) the cost is for.")]
    model: Model
    backend: Backend
    mode: Annotated[str, Col("VARCHAR NOT NULL", "batch (50% price) or realtime.")]
    requests: Annotated[int, Col("INTEGER", "Requests sent.")]
    succeeded: Annotated[int, Col("INTEGER", "Requests that succeeded (billed).")]
    input_tokens: Annotated[int, Col("BIGINT", "Uncached input tokens billed.")]
    output_tokens: Annotated[int, Col("BIGINT", "Output tokens billed (thinking included).")]
    cache_creation_input_tokens: Annotated[int, Col("BIGINT", "Tokens written to the cache.")]
    cache_read_input_tokens: Annotated[int, Col("BIGINT", "Tokens read from the cache.")]
    estimated_usd: Annotated[float | None, Col("DOUBLE", "Pre-flight estimate in USD.")]
    actual_usd: Annotated[float | None, Col("DOUBLE", "Cost from the API's usage, in USD.")]
    realtime_equivalent_usd: Annotated[
        float | None, Col("DOUBLE", "What the same usage costs at real-time prices.")
    ]
    savings_usd: Annotated[float | None, Col("DOUBLE", "realtime_equivalent_usd - actual_usd.")]
    thinking_tokens: Annotated[
        int, Col("BIGINT DEFAULT 0", "Output tokens spent on thinking (billed as output).")
    ]
    truncated: Truncated
    attempt: Attempt


@dataclass(slots=True)
class EntityRow:
    """One resolved entity of the series (a cluster of per-section entity instances)."""

    TABLE: ClassVar[str] = "entities"
    PRIMARY_KEY: ClassVar[tuple[str, ...]] = ("series", "entity_id")

    series: Series
    entity_id: Annotated[str, Col("VARCHAR NOT NULL", "Stable id of the resolved entity.")]
    type: Annotated[str, Col("VARCHAR NOT NULL", "Ontology entity type (Character, Location...).")]
    name: Annotated[str, Col("VARCHAR NOT NULL", "Canonical name.")]
    canonical_rule: Annotated[
        str | None, Col("VARCHAR", "Which resolution rule picked the canonical name.")
    ]
    confidence: Annotated[float, Col("DOUBLE", "Mean model confidence over its instances.")]
    confidence_max: Annotated[float, Col("DOUBLE", "Highest confidence of any instance.")]
    instance_count: InstanceCount
    mention_count: Annotated[int, Col("INTEGER", "Occurrences in the text (mentions rows).")]
    grounded_mention_count: Annotated[int, Col("INTEGER", "Mentions re-found in the text.")]
    section_count: SectionCount
    alias_count: Annotated[int, Col("INTEGER", "Distinct surface forms (entity_aliases rows).")]
    first_book_no: FirstBookNo
    first_book: FirstBook
    first_section: FirstSection
    last_book_no: LastBookNo
    last_book: LastBook
    last_section: LastSection
    attributes_json: Annotated[str, Col("JSON", "Merged attributes as a JSON object.")]
    source_ids: Annotated[list[str], Col("VARCHAR[]", "Per-section instance ids merged here.")]
    ambiguous_with: Annotated[
        list[str], Col("VARCHAR[]", "Entities kept apart that share a name with this one.")
    ]
    batch_ids: BatchIds
    prompt_versions: PromptVersions


@dataclass(slots=True)
class AliasRow:
    """One surface form of an entity: how often and where it first appears."""

    TABLE: ClassVar[str] = "entity_aliases"
    PRIMARY_KEY: ClassVar[tuple[str, ...]] = ("series", "entity_id", "alias")

    series: Series
    entity_id: EntityId
    alias: Annotated[str, Col("VARCHAR NOT NULL", "The surface form as written.")]
    alias_norm: Annotated[str, Col("VARCHAR", "Normalized form used for matching.")]
    kinds: Annotated[
        list[str], Col("VARCHAR[]", "Where it came from: canonical, rule, name, alias, mention.")
    ]
    instance_count: InstanceCount
    section_count: SectionCount
    first_book_no: FirstBookNo
    first_book: FirstBook
    first_section: Annotated[str | None, Col("VARCHAR", "Section id of the first appearance.")]


@dataclass(slots=True)
class AttributeRow:
    """One attribute value of an entity with the sections that state it."""

    TABLE: ClassVar[str] = "entity_attributes"
    PRIMARY_KEY: ClassVar[tuple[str, ...]] = ("series", "entity_id", "name", "value")

    series: Series
    entity_id: EntityId
    name: Annotated[str, Col("VARCHAR NOT NULL", "Attribute name (occupation, title...).")]
    value: Annotated[str, Col("VARCHAR NOT NULL", "Attribute value as stated.")]
    instance_count: InstanceCount
    first_book_no: FirstBookNo
    first_section: FirstSection
    sections: Sections


@dataclass(slots=True)
class MergeRow:
    """One resolution decision: two groups of instances joined (or kept apart), and why."""

    TABLE: ClassVar[str] = "entity_merges"
    PRIMARY_KEY: ClassVar[tuple[str, ...]] = ("series", "merge_no")

    series: Series
    merge_no: Annotated[int, Col("INTEGER NOT NULL", "Order of the decision within the series.")]
    decision: Annotated[str, Col("VARCHAR NOT NULL", "merged or kept_apart.")]
    rule: Annotated[str, Col("VARCHAR NOT NULL", "The resolution rule that decided.")]
    key: Annotated[str, Col("VARCHAR", "The normalized key the rule matched on.")]
    entity_id: Annotated[str, Col("VARCHAR NOT NULL", "The resolved entity it produced.")]
    other_entity_id: Annotated[str | None, Col("VARCHAR", "The entity kept apart from it.")]
    left_instance: Annotated[str, Col("VARCHAR", "One side's instance id.")]
    right_instance: Annotated[str, Col("VARCHAR", "The other side's instance id.")]
    detail: Annotated[str, Col("VARCHAR", "Why, in words.")]


@dataclass(slots=True)
class MentionRow:
    """One surface form of one entity instance, grounded in its section and book."""

    TABLE: ClassVar[str] = "mentions"
    PRIMARY_KEY: ClassVar[tuple[str, ...]] = ("series", "mention_id")

    series: Series
    mention_id: Annotated[int, Col("BIGINT NOT NULL", "Row number within the series.")]
    entity_id: EntityId
    raw_entity_id: Annotated[str, Col("VARCHAR", "Entity id as the model gave it.")]
    surface: Annotated[str, Col("VARCHAR", "The text as it stands in the book.")]
    section_id: SectionId
    section_number: SectionNumber
    file_name: FileName
    book_no: BookNo
    book: Book
    book_file: BookFile
    char_start: CharStart
    char_end: CharEnd
    section_char_start: SectionCharStart
    section_char_end: SectionCharEnd
    status: GroundStatus
    score: Score
    custom_id: CustomId
    batch_id: BatchId
    prompt_version: PromptVersion
    backend: Backend
    model: Model


@dataclass(slots=True)
class RelationshipRow:
    """One deduplicated relationship (source, type, target) between resolved entities."""

    TABLE: ClassVar[str] = "relationships"
    PRIMARY_KEY: ClassVar[tuple[str, ...]] = ("series", "relationship_id")

    series: Series
    relationship_id: Annotated[str, Col("VARCHAR NOT NULL", "Stable id of the relationship.")]
    source_id: Annotated[str, Col("VARCHAR NOT NULL", "Source entity (entities.entity_id).")]
    type: Annotated[str, Col("VARCHAR NOT NULL", "Relationship type (ALLY_OF, PARENT_OF...).")]
    target_id: Annotated[str, Col("VARCHAR NOT NULL", "Target entity (entities.entity_id).")]
    directed: Annotated[bool, Col("BOOLEAN", "False for symmetric types (stored once).")]
    in_ontology: Annotated[bool, Col("BOOLEAN", "The type is in the series' ontology.")]
    schema_violation: Annotated[
        str | None, Col("VARCHAR", "Why the endpoint types break the ontology, if they do.")
    ]
    orphan: Annotated[bool, Col("BOOLEAN", "An endpoint is not a resolved entity.")]
    orphan_endpoints: Annotated[list[str], Col("VARCHAR[]", "The endpoints that are missing.")]
    self_loop: Annotated[bool, Col("BOOLEAN", "Source and target are the same entity.")]
    instance_count: InstanceCount
    evidence_count: Annotated[int, Col("INTEGER", "Evidence rows (quotes) behind it.")]
    grounded_evidence_count: Annotated[int, Col("INTEGER", "Quotes re-found in the text.")]
    grounded: Annotated[bool, Col("BOOLEAN", "At least one quote was re-found.")]
    confidence: Annotated[float, Col("DOUBLE", "Highest model confidence of its instances.")]
    description: Annotated[str, Col("VARCHAR", "The model's description of the relationship.")]
    first_book_no: FirstBookNo
    first_book: FirstBook
    first_section: FirstSection
    last_book_no: LastBookNo
    last_book: LastBook
    last_section: LastSection
    batch_ids: BatchIds
    prompt_versions: PromptVersions


@dataclass(slots=True)
class EvidenceRow:
    """One evidence quote of one relationship instance, grounded in its section and book.

    A relationship instance without any quote gets one row with ``status = 'no_quote'`` so that
    every instance stays traceable to its section and batch.
    """

    TABLE: ClassVar[str] = "evidence"
    PRIMARY_KEY: ClassVar[tuple[str, ...]] = ("series", "evidence_id")

    series: Series
    evidence_id: Annotated[int, Col("BIGINT NOT NULL", "Row number within the series.")]
    relationship_id: Annotated[
        str, Col("VARCHAR NOT NULL", "The relationship (relationships.relationship_id).")
    ]
    quote: Annotated[str, Col("VARCHAR", "The quote the model gave as evidence.")]
    raw_source: Annotated[str, Col("VARCHAR", "Source id as the model gave it.")]
    raw_type: Annotated[str, Col("VARCHAR", "Type as the model gave it.")]
    raw_target: Annotated[str, Col("VARCHAR", "Target id as the model gave it.")]
    instance_confidence: Annotated[float, Col("DOUBLE", "Model confidence of this instance.")]
    section_id: SectionId
    section_number: SectionNumber
    file_name: FileName
    book_no: BookNo
    book: Book
    book_file: BookFile
    char_start: CharStart
    char_end: CharEnd
    section_char_start: SectionCharStart
    section_char_end: SectionCharEnd
    status: Annotated[
        str, Col("VARCHAR NOT NULL", "exact, normalized, fuzzy, not_found or no_quote.")
    ]
    score: Score
    custom_id: CustomId
    batch_id: BatchId
    prompt_version: PromptVersion
    backend: Backend
    model: Model


@dataclass(slots=True)
class ProposalRow:
    """An ontology extension proposal aggregated over the series."""

    TABLE: ClassVar[str] = "schema_proposals"
    PRIMARY_KEY: ClassVar[tuple[str, ...]] = ("series", "proposal_type", "name")

    series: Series
    proposal_type: Annotated[str, Col("VARCHAR NOT NULL", "entity_type or relationship_type.")]
    name: Annotated[str, Col("VARCHAR NOT NULL", "Proposed type name.")]
    origin: Annotated[str, Col("VARCHAR", "model, observed or model+observed.")]
    status: Annotated[str, Col("VARCHAR", "pending or in_ontology.")]
    instance_count: InstanceCount
    section_count: SectionCount
    sections: Sections
    description: Annotated[str, Col("VARCHAR", "What the type means, as proposed.")]
    rationale: Annotated[str, Col("VARCHAR", "Why the model proposed it.")]
    source_types: Annotated[list[str], Col("VARCHAR[]", "Allowed source entity types.")]
    target_types: Annotated[list[str], Col("VARCHAR[]", "Allowed target entity types.")]
    examples: Annotated[list[str], Col("VARCHAR[]", "Example quotes or names.")]
    example_sections: Annotated[list[str], Col("VARCHAR[]", "Sections of the examples.")]


@dataclass(slots=True)
class FailureRow:
    """A section or request that did not end as a usable result, with the reason."""

    TABLE: ClassVar[str] = "extraction_failures"
    PRIMARY_KEY: ClassVar[tuple[str, ...]] = ()

    series: Series
    custom_id: Annotated[str, Col("VARCHAR NOT NULL", "The request that failed.")]
    section_id: Annotated[str | None, Col("VARCHAR", "Its section, when known.")]
    file_name: Annotated[str | None, Col("VARCHAR", "Its section file, when known.")]
    stage: Annotated[
        str, Col("VARCHAR NOT NULL", "batch, result_file, unmatched, missing or validation.")
    ]
    failure_type: Annotated[str, Col("VARCHAR", "errored, expired, refusal, invalid_json...")]
    message: Annotated[str, Col("VARCHAR", "The reason, one line.")]
    retryable: Annotated[bool, Col("BOOLEAN", "A resubmission can fix it.")]
    resolved: Annotated[bool, Col("BOOLEAN", "A later attempt produced a result.")]
    batch_id: BatchId


@dataclass(slots=True)
class LoadRunRow:
    """One load of one series (append-only log: when, from where, what it wrote)."""

    TABLE: ClassVar[str] = "load_runs"
    PRIMARY_KEY: ClassVar[tuple[str, ...]] = ("run_id",)

    run_id: Annotated[str, Col("VARCHAR NOT NULL", "Id of the load.")]
    series: Series
    loaded_at: Annotated[datetime, Col("TIMESTAMPTZ NOT NULL", "When the load committed (UTC).")]
    ontology_version: Annotated[str | None, Col("VARCHAR", "Ontology version the graph used.")]
    ontology_fingerprint: Annotated[str | None, Col("VARCHAR", "Hash of that ontology.")]
    input_dir: Annotated[str | None, Col("VARCHAR", "Sections folder read.")]
    extracted_dir: Annotated[str | None, Col("VARCHAR", "Results folder read.")]
    stats_json: Annotated[str, Col("JSON", "Graph statistics (GraphStats) as JSON.")]
    row_counts_json: Annotated[str, Col("JSON", "Rows written per table as JSON.")]
    seconds: Annotated[float, Col("DOUBLE", "How long the load took.")]


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
    LoadRunRow,
)


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
