"""Extraction and ontology models: what Claude answers and what the rest of the pipeline stores.

There are two families of models here, on purpose:

Why it works this way: docs/architecture.md, "Text, sections and answer sizing".
"""

import json
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fantasy_kg.domain.errors import InputFileError

# Limits on untrusted model output. Generous for real answers, tight enough that a hostile or
# runaway answer cannot blow up memory, SQL or the file system.
MAX_ID_CHARS = 200
MAX_NAME_CHARS = 500
MAX_TEXT_CHARS = 4000
MAX_ENTITIES = 5000
MAX_RELATIONSHIPS = 10000
MAX_LIST_ITEMS = 500

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean_label(value: str, what: str, limit: int) -> str:
    """Validate a short label (id, name, type): stripped, non-empty, bounded, no control chars."""
    value = value.strip()
    if not value:
        raise ValueError(f"{what} is empty")
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value)} characters long (limit {limit})")
    if _CONTROL_RE.search(value):
        raise ValueError(f"{what} contains control characters")
    return value


# --------------------------------------------------------------------------------------------
# Stored models (the guide's names)
# --------------------------------------------------------------------------------------------


class Confidence(BaseModel):
    """How sure the extractor is, kept as an object so more fields can join the score later."""

    model_config = ConfigDict(extra="forbid")

    score: float = Field(ge=0.0, le=1.0, description="Confidence between 0.0 and 1.0.")


class Mention(BaseModel):
    """Where an entity is mentioned: the section file and its chunk id, plus the surface text."""

    model_config = ConfigDict(extra="forbid")

    file_name: str = Field(description="Section file the mention comes from.")
    chunk_id: str = Field(description="Section id within the series (e.g. '01').")
    text: str = Field(default="", description="The mention exactly as written in the text.")


class Evidence(BaseModel):
    """A verbatim quote that supports a relationship, with the section it should be found in."""

    model_config = ConfigDict(extra="forbid")

    quote: str = Field(description="Verbatim quote from the section text.")
    file_name: str = Field(default="", description="Section file the quote comes from.")
    chunk_id: str = Field(default="", description="Section id within the series.")


class EntityInstance(BaseModel):
    """One entity as extracted from one section (before series-wide resolution)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Stable snake_case id, canonical when a renaming rule applies.")
    type: str = Field(description="Entity type from the ontology (e.g. Character, Location).")
    name: str = Field(description="Canonical display name.")
    aliases: list[str] = Field(default_factory=list, description="Other names used in the text.")
    attributes: dict[str, Any] = Field(default_factory=dict, description="Attribute name → value.")
    mentions: list[Mention] = Field(default_factory=list, description="Where it is mentioned.")
    confidence: Confidence = Field(default_factory=lambda: Confidence(score=1.0))

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        return _clean_label(value, "entity id", MAX_ID_CHARS)

    @field_validator("type")
    @classmethod
    def _check_type(cls, value: str) -> str:
        return _clean_label(value, "entity type", MAX_ID_CHARS)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _clean_label(value, "entity name", MAX_NAME_CHARS)


class RelationshipInstance(BaseModel):
    """A typed edge between two entity ids of the same result, with its evidence quotes."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Entity id of the source (subject) of the relationship.")
    target: str = Field(description="Entity id of the target (object) of the relationship.")
    type: str = Field(description="Relationship type from the ontology (e.g. PARENT_OF).")
    description: str = Field(default="", description="Short statement of the fact.")
    evidence: list[Evidence] = Field(default_factory=list, description="Supporting quotes.")
    attributes: dict[str, Any] = Field(default_factory=dict, description="Qualifiers of the fact.")
    confidence: Confidence = Field(default_factory=lambda: Confidence(score=1.0))

    @field_validator("source", "target")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        return _clean_label(value, "relationship endpoint", MAX_ID_CHARS)

    @field_validator("type")
    @classmethod
    def _check_type(cls, value: str) -> str:
        return _clean_label(value, "relationship type", MAX_ID_CHARS)

    @model_validator(mode="after")
    def _no_self_loop(self) -> "RelationshipInstance":
        if self.source == self.target:
            raise ValueError(f"relationship {self.type} points from {self.source!r} to itself")
        return self


ProposalType = Literal["new_entity_type", "new_relationship_type", "new_attribute", "modify_type"]


class SchemaUpdateProposal(BaseModel):
    """A suggestion to extend the ontology, raised when the text does not fit existing types."""

    model_config = ConfigDict(extra="forbid")

    proposal_type: ProposalType = Field(description="What kind of change is proposed.")
    name: str = Field(description="Name of the proposed type or attribute.")
    description: str = Field(default="", description="What it means.")
    rationale: str = Field(default="", description="Why the existing ontology does not fit.")
    source_types: list[str] = Field(default_factory=list, description="For relationship types.")
    target_types: list[str] = Field(default_factory=list, description="For relationship types.")
    examples: list[str] = Field(default_factory=list, description="Verbatim example quotes.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return _clean_label(value, "proposal name", MAX_NAME_CHARS)


class ExtractionResult(BaseModel):
    """Validated output of extraction for one section: the content of ``*_extracted.json``."""

    model_config = ConfigDict(extra="forbid")

    entities: list[EntityInstance] = Field(default_factory=list)
    relationships: list[RelationshipInstance] = Field(default_factory=list)
    schema_proposals: list[SchemaUpdateProposal] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Wire models (what Claude is constrained to produce)
# --------------------------------------------------------------------------------------------


class WireAttribute(BaseModel):
    """One attribute as a name/value pair (strict schemas cannot carry free-form objects)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Attribute name, preferably one the ontology lists for the type.")
    value: str = Field(description="Attribute value as stated or clearly implied by the text.")


class WireEntity(BaseModel):
    """An entity in Claude's answer."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        description="snake_case id. Use the canonical_id of a canonical renaming rule when one "
        "matches; otherwise derive it from the full name (e.g. 'mira_thorne')."
    )
    type: str = Field(description="One of the ontology's entity type names.")
    name: str = Field(description="Canonical full name (the canonical_name of a matching rule).")
    aliases: list[str] = Field(
        description="Every other name, title, nickname or epithet the text uses for this entity, "
        "spelled exactly as in the text."
    )
    attributes: list[WireAttribute] = Field(
        description="Attributes stated in the text (e.g. title, occupation). Empty if none."
    )
    mentions: list[str] = Field(
        description="Surface forms of this entity exactly as they appear in the text (verbatim, "
        "one per distinct form)."
    )
    confidence: float = Field(description="Confidence between 0.0 and 1.0.")


class WireRelationship(BaseModel):
    """A relationship in Claude's answer."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="id of the source entity; must be one of the entities above.")
    target: str = Field(description="id of the target entity; must be one of the entities above.")
    type: str = Field(
        description="One of the ontology's relationship type names, respecting its direction "
        "and allowed source/target types."
    )
    description: str = Field(description="One short sentence stating the fact.")
    evidence: list[str] = Field(
        description="One or more verbatim quotes from the text that state this relationship. "
        "Copy them exactly, character for character; do not paraphrase."
    )
    confidence: float = Field(description="Confidence between 0.0 and 1.0.")


class WireSchemaProposal(BaseModel):
    """An ontology extension proposal in Claude's answer."""

    model_config = ConfigDict(extra="forbid")

    proposal_type: ProposalType = Field(description="What kind of change is proposed.")
    name: str = Field(description="Name of the proposed type or attribute (UPPER_SNAKE for edges).")
    description: str = Field(description="What the proposed type or attribute means.")
    rationale: str = Field(description="Why no existing ontology type fits.")
    source_types: list[str] = Field(description="Allowed source entity types (edges only).")
    target_types: list[str] = Field(description="Allowed target entity types (edges only).")
    examples: list[str] = Field(description="Verbatim quotes from the text that need it.")


class WireExtractionResult(BaseModel):
    """The whole answer for one section."""

    model_config = ConfigDict(extra="forbid")

    entities: list[WireEntity] = Field(
        description="All significant entities in the text: characters, locations, organizations, "
        "artifacts, events and others the ontology defines."
    )
    relationships: list[WireRelationship] = Field(
        description="All relationships between the entities above that the text states."
    )
    schema_proposals: list[WireSchemaProposal] = Field(
        description="Proposed ontology extensions; empty when the ontology fits the text."
    )


def wire_json_schema() -> dict[str, Any]:
    """Return the plain JSON schema of :class:`WireExtractionResult` (before ``transform_schema``).

    The integration layer passes it through ``anthropic.transform_schema``; keeping the pydantic
    model here lets the domain and tests reason about the schema without the SDK.
    """
    return WireExtractionResult.model_json_schema()


@cache
def schema_fingerprint() -> str:
    """A short stable hash of the wire schema: part of every cache key and prompt version.

    Cached: the wire models are fixed at import time, and generating their JSON schema costs
    about 7 ms, which ``prompt_version`` would otherwise pay once per request (70 s for 10,000).
    """
    import hashlib

    blob = json.dumps(wire_json_schema(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Wire → stored conversion
# --------------------------------------------------------------------------------------------


class RejectedItem(BaseModel):
    """A part of a model answer that failed validation; recorded, never silently dropped."""

    kind: Literal["entity", "relationship", "schema_proposal", "result"]
    index: int = Field(description="Position in the answer's list (-1 for the whole result).")
    reason: str
    excerpt: str = Field(default="", description="First characters of the offending item.")


class ParsedExtraction(BaseModel):
    """What :func:`parse_extraction` returns: the valid result plus everything it rejected."""

    result: ExtractionResult
    rejected: list[RejectedItem] = Field(default_factory=list)


def _excerpt(item: Any) -> str:
    try:
        text = json.dumps(item, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(item)
    return text[:200]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid"))
    return f"{loc}: {msg}" if loc else msg


def _bounded_strings(values: Any, limit: int = MAX_TEXT_CHARS) -> list[str]:
    if not isinstance(values, list):
        raise ValueError("expected a list of strings")
    out: list[str] = []
    for value in values[:MAX_LIST_ITEMS]:
        if not isinstance(value, str):
            raise ValueError("expected a list of strings")
        value = value.replace("\x00", "").strip()
        if value:
            out.append(value[:limit])
    return out


def _convert_entity(raw: Any, file_name: str, chunk_id: str) -> EntityInstance:
    wire = WireEntity.model_validate(raw)
    if not 0.0 <= wire.confidence <= 1.0:
        raise ValueError(f"confidence {wire.confidence} is outside [0, 1]")
    attributes: dict[str, Any] = {}
    for attr in wire.attributes[:MAX_LIST_ITEMS]:
        key = _clean_label(attr.name, "attribute name", MAX_NAME_CHARS)
        attributes[key] = attr.value[:MAX_TEXT_CHARS]
    surfaces = _bounded_strings(wire.mentions, MAX_NAME_CHARS)
    return EntityInstance(
        id=wire.id,
        type=wire.type,
        name=wire.name,
        aliases=[a for a in _bounded_strings(wire.aliases, MAX_NAME_CHARS) if a != wire.name],
        attributes=attributes,
        mentions=[Mention(file_name=file_name, chunk_id=chunk_id, text=s) for s in surfaces]
        or [Mention(file_name=file_name, chunk_id=chunk_id, text=wire.name.strip())],
        confidence=Confidence(score=wire.confidence),
    )


def _convert_relationship(raw: Any, file_name: str, chunk_id: str) -> RelationshipInstance:
    wire = WireRelationship.model_validate(raw)
    if not 0.0 <= wire.confidence <= 1.0:
        raise ValueError(f"confidence {wire.confidence} is outside [0, 1]")
    quotes = _bounded_strings(wire.evidence)
    return RelationshipInstance(
        source=wire.source,
        target=wire.target,
        type=wire.type,
        description=wire.description[:MAX_TEXT_CHARS],
        evidence=[Evidence(quote=q, file_name=file_name, chunk_id=chunk_id) for q in quotes],
        confidence=Confidence(score=wire.confidence),
    )


def _convert_proposal(raw: Any) -> SchemaUpdateProposal:
    wire = WireSchemaProposal.model_validate(raw)
    return SchemaUpdateProposal(
        proposal_type=wire.proposal_type,
        name=wire.name,
        description=wire.description[:MAX_TEXT_CHARS],
        rationale=wire.rationale[:MAX_TEXT_CHARS],
        source_types=_bounded_strings(wire.source_types, MAX_ID_CHARS),
        target_types=_bounded_strings(wire.target_types, MAX_ID_CHARS),
        examples=_bounded_strings(wire.examples),
    )


def _without_lone_surrogates(data: Any) -> Any:
    """Replace lone surrogates (from JSON escapes such as backslash-u-D800) with ``?``.

    They decode into Python strings that no UTF-8 encoder accepts, so a result holding one could
    be validated but never written to its file or to DuckDB.
    """
    try:
        text = json.dumps(data, ensure_ascii=False)
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.loads(text.encode("utf-8", "replace").decode("utf-8"))
    except RecursionError:
        raise ValueError("answer is nested too deeply to decode") from None
    except (TypeError, ValueError):
        pass  # not JSON-shaped at all: the checks below reject it with a reason
    return data


def parse_extraction(
    payload: str | dict[str, Any], *, file_name: str, chunk_id: str
) -> ParsedExtraction:
    """Turn Claude's JSON answer into an :class:`ExtractionResult`, keeping what is valid.

    Args:
        payload: The text block of the answer (JSON) or an already-decoded dict.
        file_name: The section file the answer is about; stamped on mentions and evidence.
        chunk_id: The section id; stamped on mentions and evidence.

    Returns:
        The valid result and a list of rejected items with reasons. Duplicate entity ids keep
        the first occurrence; relationships whose endpoints are not entities of the answer are
        kept (series-wide resolution may still find them) and flagged later as orphans.

    Raises:
        ValueError: if the payload is not JSON or not an object with the three lists; the caller
            records that as a failed request with this message.
    """
    if isinstance(payload, str):
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise ValueError(f"answer is not valid JSON: {exc.msg} at char {exc.pos}") from exc
        except RecursionError:
            raise ValueError("answer is nested too deeply to decode") from None
    else:
        data = payload
    data = _without_lone_surrogates(data)
    if not isinstance(data, dict):
        raise ValueError("answer is not a JSON object")
    missing = [k for k in ("entities", "relationships") if not isinstance(data.get(k), list)]
    if missing:
        raise ValueError(f"answer lacks the list(s) {', '.join(missing)}")
    proposals_raw = data.get("schema_proposals", [])
    if not isinstance(proposals_raw, list):
        raise ValueError("answer field schema_proposals is not a list")

    rejected: list[RejectedItem] = []
    entities: list[EntityInstance] = []
    seen_ids: set[str] = set()
    raw_entities: list[Any] = data["entities"]
    if len(raw_entities) > MAX_ENTITIES:
        rejected.append(
            RejectedItem(
                kind="entity",
                index=MAX_ENTITIES,
                reason=f"{len(raw_entities) - MAX_ENTITIES} entities beyond the {MAX_ENTITIES} cap",
            )
        )
    for i, raw in enumerate(raw_entities[:MAX_ENTITIES]):
        try:
            entity = _convert_entity(raw, file_name, chunk_id)
        except (ValidationError, ValueError) as exc:
            reason = _first_error(exc) if isinstance(exc, ValidationError) else str(exc)
            rejected.append(
                RejectedItem(kind="entity", index=i, reason=reason, excerpt=_excerpt(raw))
            )
            continue
        if entity.id in seen_ids:
            rejected.append(
                RejectedItem(
                    kind="entity",
                    index=i,
                    reason=f"duplicate entity id {entity.id!r} (first occurrence kept)",
                    excerpt=_excerpt(raw),
                )
            )
            continue
        seen_ids.add(entity.id)
        entities.append(entity)

    relationships: list[RelationshipInstance] = []
    raw_rels: list[Any] = data["relationships"]
    if len(raw_rels) > MAX_RELATIONSHIPS:
        rejected.append(
            RejectedItem(
                kind="relationship",
                index=MAX_RELATIONSHIPS,
                reason=f"{len(raw_rels) - MAX_RELATIONSHIPS} relationships beyond the cap",
            )
        )
    for i, raw in enumerate(raw_rels[:MAX_RELATIONSHIPS]):
        try:
            relationships.append(_convert_relationship(raw, file_name, chunk_id))
        except (ValidationError, ValueError) as exc:
            reason = _first_error(exc) if isinstance(exc, ValidationError) else str(exc)
            rejected.append(
                RejectedItem(kind="relationship", index=i, reason=reason, excerpt=_excerpt(raw))
            )

    proposals: list[SchemaUpdateProposal] = []
    for i, raw in enumerate(proposals_raw[:MAX_LIST_ITEMS]):
        try:
            proposals.append(_convert_proposal(raw))
        except (ValidationError, ValueError) as exc:
            reason = _first_error(exc) if isinstance(exc, ValidationError) else str(exc)
            rejected.append(
                RejectedItem(kind="schema_proposal", index=i, reason=reason, excerpt=_excerpt(raw))
            )

    result = ExtractionResult(
        entities=entities, relationships=relationships, schema_proposals=proposals
    )
    return ParsedExtraction(result=result, rejected=rejected)


def result_to_wire(result: ExtractionResult) -> dict[str, Any]:
    """Render a stored result back into wire shape (used by the local backend and tests)."""
    return WireExtractionResult(
        entities=[
            WireEntity(
                id=e.id,
                type=e.type,
                name=e.name,
                aliases=list(e.aliases),
                attributes=[WireAttribute(name=k, value=str(v)) for k, v in e.attributes.items()],
                mentions=[m.text for m in e.mentions if m.text],
                confidence=e.confidence.score,
            )
            for e in result.entities
        ],
        relationships=[
            WireRelationship(
                source=r.source,
                target=r.target,
                type=r.type,
                description=r.description,
                evidence=[ev.quote for ev in r.evidence],
                confidence=r.confidence.score,
            )
            for r in result.relationships
        ],
        schema_proposals=[
            WireSchemaProposal(
                proposal_type=p.proposal_type,
                name=p.name,
                description=p.description,
                rationale=p.rationale,
                source_types=list(p.source_types),
                target_types=list(p.target_types),
                examples=list(p.examples),
            )
            for p in result.schema_proposals
        ],
    ).model_dump(mode="json")


# --------------------------------------------------------------------------------------------
# Ontology
# --------------------------------------------------------------------------------------------


class EntityTypeDef(BaseModel):
    """An entity type of the ontology."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Type name, e.g. Character.")
    description: str = Field(default="", description="What belongs to this type.")
    attributes: list[str] = Field(default_factory=list, description="Expected attribute names.")
    parent: str | None = Field(default=None, description="Optional super-type (no cycles).")


class RelationshipTypeDef(BaseModel):
    """A relationship type of the ontology, with its allowed endpoint types and direction."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Type name, e.g. PARENT_OF.")
    description: str = Field(default="", description="What the edge means.")
    source_types: list[str] = Field(default_factory=list, description="Allowed source types.")
    target_types: list[str] = Field(default_factory=list, description="Allowed target types.")
    directed: bool = Field(default=True, description="False for symmetric edges (SIBLING_OF).")


class CanonicalRule(BaseModel):
    """A canonical renaming rule: every alias maps to one canonical id and name."""

    model_config = ConfigDict(extra="forbid")

    canonical_id: str = Field(pattern=r"^[a-z0-9_]+$", description="snake_case canonical id.")
    canonical_name: str = Field(description="Display name.")
    entity_type: str = Field(description="Entity type the rule applies to.")
    aliases: list[str] = Field(default_factory=list, description="Names that map to this entity.")


class DoNotMergeRule(BaseModel):
    """Entities that must stay apart even though names overlap (e.g. two men named Tomas)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(min_length=2, description="Canonical ids that must not be merged.")
    reason: str = Field(default="", description="Why they are different entities.")


class Ontology(BaseModel):
    """The ontology of one series: types, canonical renaming rules and do-not-merge rules.

    Stored as ``data/schemas/<series>_schema.json``; accepted proposals produce a new version.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="", description="Series title.")
    series: str = Field(default="", description="Series slug.")
    version: str = Field(default="1.0.0", description="Bumped when proposals are accepted.")
    entity_types: list[EntityTypeDef] = Field(default_factory=list)
    relationship_types: list[RelationshipTypeDef] = Field(default_factory=list)
    canonical_rules: list[CanonicalRule] = Field(default_factory=list)
    do_not_merge: list[DoNotMergeRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "Ontology":
        etypes = [t.name for t in self.entity_types]
        dup = _first_duplicate(etypes)
        if dup:
            raise ValueError(f"entity type {dup!r} is defined twice")
        dup = _first_duplicate(r.name for r in self.relationship_types)
        if dup:
            raise ValueError(f"relationship type {dup!r} is defined twice")
        known = set(etypes)
        for t in self.entity_types:
            if t.parent is not None and t.parent not in known:
                raise ValueError(f"entity type {t.name!r} has unknown parent {t.parent!r}")
        _check_no_cycles({t.name: t.parent for t in self.entity_types})
        for r in self.relationship_types:
            for end in (*r.source_types, *r.target_types):
                if end not in known:
                    raise ValueError(
                        f"relationship type {r.name!r} allows unknown entity type {end!r}"
                    )
        dup = _first_duplicate(rule.canonical_id for rule in self.canonical_rules)
        if dup:
            raise ValueError(f"canonical rule {dup!r} is defined twice")
        for rule in self.canonical_rules:
            if known and rule.entity_type not in known:
                raise ValueError(
                    f"canonical rule {rule.canonical_id!r} uses unknown type {rule.entity_type!r}"
                )
        return self

    def entity_type_names(self) -> list[str]:
        """Names of the entity types, in file order."""
        return [t.name for t in self.entity_types]

    def relationship_type(self, name: str) -> RelationshipTypeDef | None:
        """Look up a relationship type by name (case-insensitive, as enum casing is not kept)."""
        wanted = name.upper()
        return next((r for r in self.relationship_types if r.name.upper() == wanted), None)

    def fingerprint(self) -> str:
        """Stable hash of the ontology content; part of the idempotency key of every request."""
        import hashlib

        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _first_duplicate(names: Iterable[str]) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def _check_no_cycles(parents: dict[str, str | None]) -> None:
    for start in parents:
        seen = {start}
        node = parents.get(start)
        while node is not None:
            if node in seen:
                raise ValueError(f"entity type hierarchy has a cycle through {node!r}")
            seen.add(node)
            node = parents.get(node)


def load_ontology(path: Path) -> Ontology:
    """Read and validate an ontology file.

    Raises:
        InputFileError: one line naming the file and the JSON line/column or the field at fault.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputFileError(f"ontology file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise InputFileError(f"ontology file {path} is not UTF-8 text") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFileError(
            f"malformed ontology {path}: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    try:
        return Ontology.model_validate(data)
    except ValidationError as exc:
        raise InputFileError(f"invalid ontology {path}: {_first_error(exc)}") from exc


def default_ontology(series: str = "") -> Ontology:
    """A generic fantasy ontology used when a series has no ontology file of its own."""
    people = ["Character"]
    return Ontology(
        name=series,
        series=series,
        version="0.0.0",
        entity_types=[
            EntityTypeDef(
                name="Character",
                description="A person or sentient being who acts in the story.",
                attributes=["title", "occupation", "species"],
            ),
            EntityTypeDef(name="Location", description="A place.", attributes=["kind"]),
            EntityTypeDef(name="Organization", description="A group or institution."),
            EntityTypeDef(name="Artifact", description="A named object of significance."),
            EntityTypeDef(name="Event", description="A named happening."),
        ],
        relationship_types=[
            RelationshipTypeDef(name="PARENT_OF", source_types=people, target_types=people),
            RelationshipTypeDef(
                name="SIBLING_OF", source_types=people, target_types=people, directed=False
            ),
            RelationshipTypeDef(
                name="SPOUSE_OF", source_types=people, target_types=people, directed=False
            ),
            RelationshipTypeDef(name="LOYAL_TO", source_types=people),
            RelationshipTypeDef(name="ENEMY_OF", directed=False),
            RelationshipTypeDef(
                name="MEMBER_OF", source_types=people, target_types=["Organization"]
            ),
            RelationshipTypeDef(name="LEADS", source_types=people),
            RelationshipTypeDef(name="LIVES_IN", source_types=people, target_types=["Location"]),
            RelationshipTypeDef(
                name="LOCATED_IN", source_types=["Location"], target_types=["Location"]
            ),
            RelationshipTypeDef(name="POSSESSES", target_types=["Artifact"]),
            RelationshipTypeDef(name="PARTICIPATED_IN", target_types=["Event"]),
        ],
    )
