"""Relationships: endpoints mapped to resolved entities, deduplicated, flagged, never dropped.

Why it works this way: docs/architecture.md, "Graph build".
"""

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from fantasy_kg.domain.graph.models import EvidenceRow, RelationshipRow
from fantasy_kg.domain.graph.names import id_key
from fantasy_kg.domain.graph.resolution import Resolution
from fantasy_kg.domain.schemas import Ontology, RelationshipTypeDef

_NON_WORD_RE = re.compile(r"[^A-Za-z0-9]+")

# How much an instance without any grounded quote counts towards a relationship's confidence.
UNGROUNDED_WEIGHT = 0.5


@lru_cache(maxsize=4096)
def normalize_rel_type(name: str) -> str:
    """``parent of`` / ``Parent-Of`` / ``PARENT_OF`` -> ``PARENT_OF``."""
    return _NON_WORD_RE.sub("_", name.strip()).strip("_").upper() or "UNKNOWN"


def relationship_id(source: str, rel_type: str, target: str) -> str:
    """Stable id of a deduplicated relationship (same triple, same id, in every load)."""
    blob = f"{source}\x1f{rel_type}\x1f{target}".encode()
    return hashlib.sha1(blob, usedforsecurity=False).hexdigest()[:16]


@dataclass(slots=True)
class RelationshipRecord:
    """One relationship instance from one section's answer, in story order."""

    index: int
    section_pos: int
    section_id: str
    custom_id: str
    raw_source: str
    raw_target: str
    raw_type: str
    description: str
    confidence: float
    source_record: int | None
    target_record: int | None
    evidence: list[int] = field(default_factory=list)
    grounded: bool = False


@dataclass(frozen=True, slots=True)
class Appearance:
    """Where something appears: section id and book."""

    section_pos: int
    section_id: str
    book_no: int | None
    book: str | None


def noisy_or(scores: Sequence[float]) -> float:
    """Combine independent confidences: ``1 - prod(1 - s)``, rounded for stable output."""
    remaining = 1.0
    for s in scores:
        remaining *= 1.0 - min(max(s, 0.0), 1.0)
    return round(1.0 - remaining, 6)


def _allowed(etype: str | None, allowed: list[str], parents: Mapping[str, str | None]) -> bool:
    if not allowed or etype is None:
        return True
    node: str | None = etype
    seen: set[str] = set()
    while node is not None and node not in seen:
        if node in allowed:
            return True
        seen.add(node)
        node = parents.get(node)
    return False


def _violation(
    typedef: RelationshipTypeDef,
    source_type: str | None,
    target_type: str | None,
    parents: Mapping[str, str | None],
) -> str | None:
    problems = []
    if not _allowed(source_type, typedef.source_types, parents):
        problems.append(f"source type {source_type} not in {', '.join(typedef.source_types)}")
    if not _allowed(target_type, typedef.target_types, parents):
        problems.append(f"target type {target_type} not in {', '.join(typedef.target_types)}")
    return "; ".join(problems) or None


def build_relationships(
    series: str,
    records: Sequence[RelationshipRecord],
    evidence: list[EvidenceRow],
    resolution: Resolution,
    entity_types: Mapping[str, str],
    ontology: Ontology,
    appearance: Callable[[RelationshipRecord], tuple[Appearance, Appearance]],
    provenance: Callable[[str], tuple[str | None, str | None]],
) -> list[RelationshipRow]:
    """Deduplicate relationship instances into rows and stamp their evidence with the row id.

    Args:
        series: Series slug.
        records: All instances in story order.
        evidence: Evidence rows (by index from ``RelationshipRecord.evidence``); their
            ``relationship_id`` is filled in here.
        resolution: The entity resolution (instance -> canonical entity).
        entity_types: Canonical entity id -> type, for domain/range checks.
        ontology: Direction and allowed endpoint types per relationship type.
        appearance: First and last appearance (section, book) of an instance.
        provenance: custom_id -> (batch_id, prompt_version).

    Returns:
        One row per distinct (source, type, target), in order of first appearance.
    """
    parents = {t.name: t.parent for t in ontology.entity_types}
    typedefs = {r.name.upper(): r for r in ontology.relationship_types}
    groups: dict[tuple[str, str, str], list[RelationshipRecord]] = {}
    orphans_of: dict[tuple[str, str, str], set[str]] = {}
    for rec in records:
        rtype = normalize_rel_type(rec.raw_type)
        ends: list[str] = []
        missing: set[str] = set()
        for raw, idx in ((rec.raw_source, rec.source_record), (rec.raw_target, rec.target_record)):
            if idx is not None:
                ends.append(resolution.entity_id_of(idx))
                continue
            found = resolution.lookup(raw)
            if found is None:
                orphan_id = id_key(raw).replace(" ", "_") or raw
                missing.add(orphan_id)
                ends.append(orphan_id)
            else:
                ends.append(found)
        source, target = ends
        typedef = typedefs.get(rtype)
        if typedef is not None and not typedef.directed and target < source:
            source, target = target, source
        key = (source, rtype, target)
        groups.setdefault(key, []).append(rec)
        if missing:
            orphans_of.setdefault(key, set()).update(missing)

    rows: list[RelationshipRow] = []
    for (source, rtype, target), instances in groups.items():
        typedef = typedefs.get(rtype)
        rid = relationship_id(source, rtype, target)
        ev_count = 0
        grounded_count = 0
        for rec in instances:
            for ei in rec.evidence:
                row = evidence[ei]
                row.relationship_id = rid
                if row.status != "no_quote":
                    ev_count += 1
                    if row.status in ("exact", "normalized", "fuzzy"):
                        grounded_count += 1
        orphan_ends = sorted(orphans_of.get((source, rtype, target), ()))
        violation = None
        if typedef is not None and not orphan_ends:
            violation = _violation(
                typedef, entity_types.get(source), entity_types.get(target), parents
            )
        description = _most_common_description(instances)
        first, _ = appearance(instances[0])
        last = max((appearance(r)[1] for r in instances), key=lambda a: a.section_pos)
        batch_ids: set[str] = set()
        versions: set[str] = set()
        for rec in instances:
            batch_id, version = provenance(rec.custom_id)
            if batch_id:
                batch_ids.add(batch_id)
            if version:
                versions.add(version)
        rows.append(
            RelationshipRow(
                series=series,
                relationship_id=rid,
                source_id=source,
                type=rtype,
                target_id=target,
                directed=typedef.directed if typedef is not None else True,
                in_ontology=typedef is not None,
                schema_violation=violation,
                orphan=bool(orphan_ends),
                orphan_endpoints=orphan_ends,
                self_loop=source == target,
                instance_count=len(instances),
                evidence_count=ev_count,
                grounded_evidence_count=grounded_count,
                grounded=grounded_count > 0,
                confidence=noisy_or(
                    [r.confidence * (1.0 if r.grounded else UNGROUNDED_WEIGHT) for r in instances]
                ),
                description=description,
                first_book_no=first.book_no,
                first_book=first.book,
                first_section=first.section_id,
                last_book_no=last.book_no,
                last_book=last.book,
                last_section=last.section_id,
                batch_ids=sorted(batch_ids),
                prompt_versions=sorted(versions),
            )
        )
    return rows


def _most_common_description(instances: Sequence[RelationshipRecord]) -> str:
    """The description most instances give (the earliest one on a tie)."""
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for i, rec in enumerate(instances):
        if rec.description:
            counts[rec.description] += 1
            first.setdefault(rec.description, i)
    if not counts:
        return ""
    return max(counts, key=lambda d: (counts[d], -first[d]))
