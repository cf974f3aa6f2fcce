"""Governed ontology evolution: aggregate schema proposals, review them, accept some.

Why it works this way: docs/architecture.md, "Graph build".
"""

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fantasy_kg.domain.errors import UserError
from fantasy_kg.domain.graph.models import ProposalRow
from fantasy_kg.domain.graph.relationships import normalize_rel_type
from fantasy_kg.domain.schemas import EntityTypeDef, Ontology, RelationshipTypeDef

MAX_EXAMPLES = 5
#: Distinct example texts kept per proposal while collecting (the smallest in section order).
_EXAMPLE_POOL = 200
_SNAKE_RE = re.compile(r"[^a-z0-9]+")


def proposal_key(proposal_type: str, name: str) -> str:
    """The aggregation key of a proposal's name (case and spelling variants fold together)."""
    if proposal_type == "new_relationship_type":
        return normalize_rel_type(name)
    return _SNAKE_RE.sub("_", name.strip().lower()).strip("_")


@dataclass(slots=True)
class _Acc:
    proposal_type: str
    names: Counter[str] = field(default_factory=Counter)
    origins: set[str] = field(default_factory=set)
    count: int = 0
    sections: dict[int, str] = field(default_factory=dict)
    descriptions: Counter[str] = field(default_factory=Counter)
    rationales: Counter[str] = field(default_factory=Counter)
    source_types: set[str] = field(default_factory=set)
    target_types: set[str] = field(default_factory=set)
    #: example text -> its first (section_pos, section_id)
    examples: dict[str, tuple[int, str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The display name: the most frequent spelling, whatever order results came in."""
        return _top(self.names)

    def add_example(self, pos: int, sid: str, text: str) -> None:
        """Keep ``text`` at its earliest section; bounded, and independent of the feed order."""
        first = self.examples.get(text)
        if first is None or (pos, sid) < first:
            self.examples[text] = (pos, sid)
        if len(self.examples) > 2 * _EXAMPLE_POOL:
            # Only the examples first in section order are ever shown: drop the rest. A dropped
            # text that turns up again at an earlier section comes back with that position.
            kept = sorted(self.examples.items(), key=lambda kv: (kv[1], kv[0]))[:_EXAMPLE_POOL]
            self.examples = dict(kept)


class ProposalCollector:
    """Accumulates proposals while results are read; :meth:`rows` aggregates them."""

    def __init__(self) -> None:
        self._acc: dict[tuple[str, str], _Acc] = {}

    def add(
        self,
        *,
        proposal_type: str,
        name: str,
        origin: str,
        section_pos: int,
        section_id: str,
        description: str = "",
        rationale: str = "",
        source_types: Iterable[str] = (),
        target_types: Iterable[str] = (),
        examples: Iterable[str] = (),
    ) -> None:
        """Record one proposal (or one observed use of something outside the ontology)."""
        key = (proposal_type, proposal_key(proposal_type, name))
        acc = self._acc.get(key)
        if acc is None:
            acc = self._acc[key] = _Acc(proposal_type=proposal_type)
        acc.names[key[1] if proposal_type == "new_relationship_type" else name.strip()] += 1
        acc.origins.add(origin)
        acc.count += 1
        acc.sections.setdefault(section_pos, section_id)
        if description:
            acc.descriptions[description] += 1
        if rationale:
            acc.rationales[rationale] += 1
        acc.source_types.update(source_types)
        acc.target_types.update(target_types)
        for ex in examples:
            if ex:
                acc.add_example(section_pos, section_id, ex)

    def rows(self, series: str, ontology: Ontology) -> list[ProposalRow]:
        """One row per (kind, name), most frequent first, with status against ``ontology``."""
        out = []
        for acc in self._acc.values():
            first = sorted(acc.examples.items(), key=lambda kv: (kv[1], kv[0]))[:MAX_EXAMPLES]
            examples = [text for text, _ in first]
            example_sections = [sid for _, (_, sid) in first]
            out.append(
                ProposalRow(
                    series=series,
                    proposal_type=acc.proposal_type,
                    name=acc.name,
                    origin="+".join(sorted(acc.origins)),
                    status="in_ontology" if _in_ontology(ontology, acc) else "pending",
                    instance_count=acc.count,
                    section_count=len(acc.sections),
                    sections=[acc.sections[p] for p in sorted(acc.sections)],
                    description=_top(acc.descriptions),
                    rationale=_top(acc.rationales),
                    source_types=sorted(acc.source_types),
                    target_types=sorted(acc.target_types),
                    examples=examples,
                    example_sections=example_sections,
                )
            )
        out.sort(key=lambda r: (-r.instance_count, r.proposal_type, r.name))
        return out


def _top(counter: Counter[str]) -> str:
    if not counter:
        return ""
    best = max(counter.values())
    return min(text for text, n in counter.items() if n == best)


def _in_ontology(ontology: Ontology, acc: _Acc) -> bool:
    key = proposal_key(acc.proposal_type, acc.name)
    if acc.proposal_type == "new_relationship_type":
        return ontology.relationship_type(key) is not None
    if acc.proposal_type == "new_entity_type":
        return any(proposal_key("", t.name) == key for t in ontology.entity_types)
    if acc.proposal_type == "new_attribute":
        wanted = set(acc.source_types) | set(acc.target_types)
        types = [t for t in ontology.entity_types if not wanted or t.name in wanted]
        return bool(types) and all(
            key in {proposal_key("", a) for a in t.attributes} for t in types
        )
    return False


def bump_version(version: str) -> str:
    """Next minor version: ``1.0.0`` -> ``1.1.0``; non-numeric versions get ``.1`` appended."""
    parts = version.strip().split(".")
    if parts and all(p.isdigit() for p in parts):
        while len(parts) < 3:
            parts.append("0")
        parts[1] = str(int(parts[1]) + 1)
        parts[2:] = ["0"] * (len(parts) - 2)
        return ".".join(parts)
    return f"{version.strip() or '0'}.1"


def _find(proposals: Sequence[ProposalRow], name: str) -> ProposalRow:
    wanted = {proposal_key("new_relationship_type", name), proposal_key("", name)}
    hits = [
        p
        for p in proposals
        if proposal_key(p.proposal_type, p.name) in wanted or p.name == name.strip()
    ]
    if not hits:
        known = ", ".join(sorted({p.name for p in proposals})[:20]) or "none"
        raise UserError(f"no schema proposal named {name!r} (pending proposals: {known})")
    kinds = {p.proposal_type for p in hits}
    if len(kinds) > 1:
        raise UserError(
            f"proposal name {name!r} is ambiguous ({', '.join(sorted(kinds))}): "
            "edit the ontology file by hand for this one"
        )
    return hits[0]


def accept_proposals(
    ontology: Ontology, names: Sequence[str], proposals: Sequence[ProposalRow]
) -> Ontology:
    """Apply the named proposals and return a new ontology with a bumped version.

    Entity types are added first, so a relationship type accepted in the same call may use them.
    Endpoint types a proposal names but the ontology does not know are left out (an empty list
    means "any type").

    Args:
        ontology: The current ontology (not modified).
        names: Proposal names to accept (as listed by ``fantasy-kg ontology proposals``).
        proposals: The aggregated proposals of the series.

    Raises:
        UserError: unknown or ambiguous name, a ``modify_type`` proposal (needs a human edit),
            or an attribute proposal that does not say which entity type it belongs to.
    """
    if not names:
        raise UserError("no proposal names given: pass --name NAME (see `ontology proposals`)")
    chosen = [_find(proposals, n) for n in names]
    new = ontology.model_copy(deep=True)
    order = {"new_entity_type": 0, "new_attribute": 1, "new_relationship_type": 2}
    for prop in sorted(chosen, key=lambda p: order.get(p.proposal_type, 3)):
        known = {t.name for t in new.entity_types}
        if prop.proposal_type == "new_entity_type":
            if prop.name not in known:
                new.entity_types.append(EntityTypeDef(name=prop.name, description=prop.description))
        elif prop.proposal_type == "new_relationship_type":
            if new.relationship_type(prop.name) is None:
                new.relationship_types.append(
                    RelationshipTypeDef(
                        name=normalize_rel_type(prop.name),
                        description=prop.description,
                        source_types=[t for t in prop.source_types if t in known],
                        target_types=[t for t in prop.target_types if t in known],
                    )
                )
        elif prop.proposal_type == "new_attribute":
            targets = [t for t in (*prop.source_types, *prop.target_types) if t in known]
            if not targets:
                raise UserError(
                    f"attribute proposal {prop.name!r} names no known entity type: "
                    "add it to a type in the ontology file by hand"
                )
            for etype in new.entity_types:
                if etype.name in targets and prop.name not in etype.attributes:
                    etype.attributes.append(prop.name)
        else:
            raise UserError(
                f"proposal {prop.name!r} is a {prop.proposal_type}: edit the ontology by hand"
            )
    new.version = bump_version(ontology.version)
    return Ontology.model_validate(new.model_dump())
