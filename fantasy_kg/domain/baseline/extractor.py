"""The baseline extractor: one section of text + an ontology → a wire extraction result.

This is the "model" behind the embedded local backend. It is deterministic (same input, same
bytes out) and linear in the text, and it is a baseline: it finds what explicit patterns state and
nothing a reader would infer. See :mod:`.names`, :mod:`.entities` and :mod:`.patterns` for the
three stages; this module wires them to an ontology and renders the answer.
"""

import re
from collections import Counter
from dataclasses import dataclass, field

from fantasy_kg.domain.baseline import patterns
from fantasy_kg.domain.baseline.entities import (
    Entity,
    alias_forms,
    attributes_of,
    build_entities,
    snake_id,
    surface_forms,
)
from fantasy_kg.domain.baseline.names import (
    ARTIFACT,
    EVENT,
    ORG,
    PERSON,
    PLACE,
    Gazetteer,
    Occurrence,
    find_occurrences,
    normalize,
)
from fantasy_kg.domain.baseline.tagged import apply_tags
from fantasy_kg.domain.baseline.tagging import Tagger
from fantasy_kg.domain.baseline.text import (
    Sentences,
    initial_positions,
    lowercase_vocabulary,
    mask_headings,
    split_sentences,
)
from fantasy_kg.domain.schemas import (
    Ontology,
    WireAttribute,
    WireEntity,
    WireExtractionResult,
    WireRelationship,
    WireSchemaProposal,
    default_ontology,
)

# Confidence by strength of evidence.
CONF_GAZETTEER = 0.95
CONF_CUE = 0.85
CONF_CONTEXT = 0.7
CONF_BARE = 0.5

# Two mentions farther apart than this (characters, or mentions) are never related by a cue.
MAX_GAP_CHARS = 240
MAX_GAP_MENTIONS = 6
# A sentence longer than this is cut down to the clause between the two mentions for evidence.
MAX_QUOTE_CHARS = 320
MAX_EVIDENCE = 3
MAX_EXAMPLES = 3

_KIND_WORDS: dict[str, tuple[str, ...]] = {
    PERSON: ("character", "person", "people", "being", "creature", "individual", "figure"),
    PLACE: ("location", "place", "region", "realm", "area", "site", "geography", "setting"),
    ORG: ("organization", "organisation", "faction", "group", "institution", "guild", "order"),
    ARTIFACT: ("artifact", "artefact", "item", "object", "relic", "weapon", "treasure"),
    EVENT: ("event", "battle", "happening", "incident", "occasion", "war"),
}
_DEFAULT_TYPE_NAME: dict[str, str] = {
    PERSON: "Character",
    PLACE: "Location",
    ORG: "Organization",
    ARTIFACT: "Artifact",
    EVENT: "Event",
}


@dataclass
class OntologyView:
    """The parts of an ontology the extractor needs, precomputed once per ontology."""

    ontology: Ontology
    gazetteer: Gazetteer
    type_kind: dict[str, str] = field(default_factory=dict)
    kind_type: dict[str, str] = field(default_factory=dict)
    ancestors: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, ontology: Ontology) -> "OntologyView":
        """Map ontology type names onto the extractor's kinds, by name first, then description."""
        view = cls(ontology=ontology, gazetteer=Gazetteer(ontology))
        parents = {t.name: t.parent for t in ontology.entity_types}
        for t in ontology.entity_types:
            kind = _kind_by_words(t.name.lower())
            if kind:
                view.type_kind[t.name] = kind
        for t in ontology.entity_types:
            if t.name not in view.type_kind:
                kind = _kind_by_words(t.description.lower())
                if kind:
                    view.type_kind[t.name] = kind
        for t in ontology.entity_types:
            lineage = [t.name]  # the type, then its parents upwards (ordered: deterministic)
            parent = parents.get(t.name)
            while parent is not None and parent not in lineage:
                lineage.append(parent)
                parent = parents.get(parent)
            view.ancestors[t.name] = set(lineage)
            if t.name not in view.type_kind:
                inherited = next((view.type_kind[a] for a in lineage if a in view.type_kind), "")
                if inherited:
                    view.type_kind[t.name] = inherited
        for t in ontology.entity_types:
            mapped = view.type_kind.get(t.name)
            if not mapped:
                continue
            # Prefer the root type of a kind (Character over a sub-type such as Wizard).
            current = view.kind_type.get(mapped)
            if current is None or (parents.get(current) and not t.parent):
                view.kind_type[mapped] = t.name
        return view

    def relationship(self, name: str) -> str | None:
        """The ontology's spelling of a relationship type (or a known synonym), if it has one."""
        for candidate in patterns.TYPE_SYNONYMS.get(name, (name,)):
            found = self.ontology.relationship_type(candidate)
            if found is not None:
                return found.name
        return None

    def allows(self, rel: str, source_type: str, target_type: str) -> bool:
        """Whether the ontology allows these endpoint types (sub-types count as their parents)."""
        found = self.ontology.relationship_type(rel)
        if found is None:
            return False
        ok_source = not found.source_types or bool(
            self.ancestors.get(source_type, {source_type}) & set(found.source_types)
        )
        ok_target = not found.target_types or bool(
            self.ancestors.get(target_type, {target_type}) & set(found.target_types)
        )
        return ok_source and ok_target

    def directed(self, rel: str) -> bool:
        """Whether the relationship type has a direction (SIBLING_OF does not)."""
        found = self.ontology.relationship_type(rel)
        return found.directed if found is not None else rel not in patterns.UNDIRECTED


def _kind_by_words(text: str) -> str:
    words = set(re.findall(r"[a-z]+", text))
    for kind, names in _KIND_WORDS.items():
        if words & set(names):
            return kind
    return ""


_VIEWS: dict[str, OntologyView] = {}


def _view(ontology: Ontology) -> OntologyView:
    """Cache views by ontology fingerprint: a series' sections share one ontology."""
    key = ontology.fingerprint()
    view = _VIEWS.get(key)
    if view is None:
        if len(_VIEWS) > 32:
            _VIEWS.clear()
        view = OntologyView.of(ontology)
        _VIEWS[key] = view
    return view


@dataclass
class _Rel:
    type: str
    source: Entity
    target: Entity
    confidence: float
    quotes: list[str] = field(default_factory=list)


@dataclass
class _ProposalCue:
    count: int = 0
    quotes: list[str] = field(default_factory=list)
    source_kinds: Counter[str] = field(default_factory=Counter)
    target_kinds: Counter[str] = field(default_factory=Counter)


def _find_names(
    text: str, ontology: Ontology | None, tagger: Tagger | None
) -> tuple[OntologyView, Sentences, frozenset[str], list[Occurrence]]:
    """The name occurrences of a section, as :func:`extract` and :func:`rule_spans` both see them.

    Returns the ontology view, the sentences, the lowercase vocabulary and the occurrences.
    """
    view = _view(ontology if ontology is not None else default_ontology())
    sentences = split_sentences(text)
    initials = initial_positions(text, sentences)
    vocabulary = lowercase_vocabulary(text)
    # Names are looked for outside headings; quotes and cues still read the real text.
    scan = mask_headings(text)
    occs = find_occurrences(scan, sentences, initials, vocabulary, view.gazetteer)
    if tagger is not None:
        occs = apply_tags(scan, occs, tagger.tag(scan), initials, vocabulary)
    return view, sentences, vocabulary, occs


def extract(
    text: str,
    ontology: Ontology | None = None,
    *,
    file_name: str = "",
    section_id: str = "",
    tagger: Tagger | None = None,
) -> WireExtractionResult:
    """Extract entities, relationships and schema proposals from one section.

    Args:
        text: The section text.
        ontology: The series ontology; the generic default when ``None``.
        file_name: Section file name, quoted in proposal rationales.
        section_id: Section id, quoted in proposal rationales.
        tagger: The learned entity tagger (spans and types of names); ``None`` runs the rules
            alone.

    Returns:
        A :class:`WireExtractionResult` in which every evidence quote is a verbatim substring of
        ``text`` and every relationship endpoint is the id of an entity of the result.
    """
    view, sentences, vocabulary, occs = _find_names(text, ontology, tagger)
    sent_of = [sentences.index_of(o.start) for o in occs]

    alias_links: list[tuple[int, int]] = []
    pairs = _pairs(text, occs, sent_of)
    for i, j, variants in pairs:
        if not any(_ANY_ALIAS.match(v) for v in variants):
            continue
        if patterns.INDEFINITE_BEFORE_RE.search(text, max(0, occs[i].lead - 8), occs[i].lead):
            continue
        for cue in patterns.ALIAS_CUES:
            if _cue_matches(cue, text, occs[i], occs[j], variants):
                alias_links.append((j, i) if cue.reverse else (i, j))
                break

    entities, per_occ = build_entities(
        text,
        occs,
        view.gazetteer,
        alias_links,
        view.type_kind,
        vocabulary,
        tagged=tagger is not None,
    )

    typed: dict[str, str] = {}
    missing_kinds: dict[str, list[Entity]] = {}
    for ent in entities:
        etype = ent.gazetteer_type or view.kind_type.get(ent.kind, "")
        if etype:
            typed[ent.key] = etype
        else:
            missing_kinds.setdefault(ent.kind, []).append(ent)

    rels: dict[tuple[str, str, str], _Rel] = {}
    proposal_cues: dict[str, _ProposalCue] = {}
    for i, j, variants in pairs:
        a, b = per_occ[i], per_occ[j]
        if a is None or b is None or a is b or a.key not in typed or b.key not in typed:
            continue
        if not any(_ANY_RELATION.match(v) for v in variants):
            continue  # one combined regex rules out most pairs before the cue-by-cue pass
        for cue in patterns.RELATION_CUES:
            if not _cue_matches(cue, text, occs[i], occs[j], variants):
                continue
            if _unstated(cue, text, sentences.spans[sent_of[i]][0], occs[i], occs[j], b):
                break  # the words match, but the sentence does not state it
            src, tgt = (b, a) if cue.reverse else (a, b)
            quote = _quote(text, sentences, sent_of[i], occs[i], occs[j])
            if _apply_cue(cue, view, typed, src, tgt, quote, rels, proposal_cues):
                break

    return _render(
        text,
        view,
        entities,
        typed,
        rels,
        proposal_cues,
        missing_kinds,
        sentences,
        file_name=file_name,
        section_id=section_id,
    )


_ANY_RELATION = re.compile("|".join(f"(?:{c.gap.pattern})" for c in patterns.RELATION_CUES))
_ANY_ALIAS = re.compile("|".join(f"(?:{c.gap.pattern})" for c in patterns.ALIAS_CUES))


def _pairs(
    text: str, occs: list[Occurrence], sent_of: list[int]
) -> list[tuple[int, int, list[str]]]:
    """Nearby mention pairs of one sentence with the variants of their normalized gap text."""
    out: list[tuple[int, int, list[str]]] = []
    n = len(occs)
    for i in range(n):
        a = occs[i]
        for j in range(i + 1, min(n, i + 1 + MAX_GAP_MENTIONS)):
            b = occs[j]
            if sent_of[j] != sent_of[i] or b.lead - a.end > MAX_GAP_CHARS:
                break
            if b.lead < a.end:
                continue
            out.append((i, j, patterns.gap_variants(normalize_gap(text[a.end : b.lead]))))
    return out


_GAP_WS_RE = re.compile(r"\s+")


def normalize_gap(gap: str) -> str:
    """Collapse whitespace but keep a leading/trailing space, which the cues anchor on."""
    return _GAP_WS_RE.sub(" ", gap)


def _cue_matches(
    cue: patterns.Cue, text: str, a: Occurrence, b: Occurrence, variants: list[str]
) -> bool:
    if not any(cue.gap.match(v) for v in variants):
        return False
    # Slices, not match(pos): "^" in a pattern anchors at the start of the string only.
    if cue.after is not None and not cue.after.match(text[b.end : b.end + 80]):
        return False
    return cue.before is None or bool(cue.before.search(text, max(0, a.lead - 30), a.lead))


def _unstated(
    cue: patterns.Cue,
    text: str,
    sentence_start: int,
    a: Occurrence,
    b: Occurrence,
    b_entity: Entity,
) -> bool:
    """Whether a matched cue must not become a fact: negated, off its subject, or figurative.

    - Negation in the gap or in the clause before the first mention ("nor does the king of A
      rule B", "X was not the daughter of Y").
    - The first mention is the object of a noun ("the king of A rules B", "great-granddaughter
      of A, daughter of B"): each kin or role noun attaches to its own nearest argument, so the
      cue speaks of the head noun, not of A. "The city of A" is exempt: there A is the place.
    - Kinship as a likeness ("like a son to him"), or an indefinite kin noun or a "the" epithet
      as its object ("a true daughter of Mars", "son of the Sea") when nothing else says that
      the object is a person (the tagger, a title, a person head noun, the ontology).
    """
    gap = text[a.end : b.lead]
    if patterns.negated(gap, patterns.clause_before(text, sentence_start, a.lead)):
        return True
    if not a.place_noun and patterns.OF_OBJECT_RE.search(
        text, max(sentence_start, a.lead - 40), a.lead
    ):
        return True
    if not patterns.KIN_TYPES.intersection(cue.types):
        return False
    if patterns.SIMILE_RE.search(gap):
        return True
    figurative = bool(patterns.INDEFINITE_KIN_RE.search(gap + " ")) or (
        b.the and not b.title and b.head_kind != PERSON
    )
    return figurative and not _personal(b_entity)


def _personal(ent: Entity) -> bool:
    """Whether something besides the kinship cue says the entity is a person."""
    if ent.gazetteer_id:
        return ent.kind == PERSON
    return ent.votes[PERSON] >= 4 or any(
        o.tagged == PERSON or o.title or o.head_kind == PERSON for o in ent.occurrences
    )


def _apply_cue(
    cue: patterns.Cue,
    view: OntologyView,
    typed: dict[str, str],
    src: Entity,
    tgt: Entity,
    quote: str,
    rels: dict[tuple[str, str, str], _Rel],
    proposal_cues: dict[str, _ProposalCue],
) -> bool:
    """Record the first candidate type of ``cue`` the ontology allows; True if one was used."""
    for name in cue.types:
        kinds = patterns.REL_KINDS.get(name)
        if kinds is not None and (src.kind not in kinds[0] or tgt.kind not in kinds[1]):
            continue
        rel = view.relationship(name)
        if rel is None:
            if name in patterns.PROPOSAL_TYPES:
                pc = proposal_cues.setdefault(name, _ProposalCue())
                pc.count += 1
                pc.source_kinds[src.kind] += 1
                pc.target_kinds[tgt.kind] += 1
                if quote not in pc.quotes and len(pc.quotes) < MAX_EXAMPLES:
                    pc.quotes.append(quote)
                return True
            continue
        if not view.allows(rel, typed[src.key], typed[tgt.key]):
            continue
        s, t = src, tgt
        if not view.directed(rel) and _entity_sort_key(t) < _entity_sort_key(s):
            s, t = t, s
        key = (rel, s.key, t.key)
        found = rels.get(key)
        if found is None:
            found = rels[key] = _Rel(type=rel, source=s, target=t, confidence=cue.confidence)
        found.confidence = max(found.confidence, cue.confidence)
        if quote not in found.quotes and len(found.quotes) < MAX_EVIDENCE:
            found.quotes.append(quote)
        return True
    return False


def _entity_sort_key(ent: Entity) -> tuple[int, str]:
    return (ent.first, ent.key)


def _quote(text: str, sentences: Sentences, sent: int, a: Occurrence, b: Occurrence) -> str:
    """Verbatim evidence: the sentence, or the clause from the first mention to the second."""
    start, end = sentences.spans[sent]
    if end - start <= MAX_QUOTE_CHARS:
        return text[start:end]
    return text[max(start, a.lead) : b.end]


def _render(
    text: str,
    view: OntologyView,
    entities: list[Entity],
    typed: dict[str, str],
    rels: dict[tuple[str, str, str], _Rel],
    proposal_cues: dict[str, _ProposalCue],
    missing_kinds: dict[str, list[Entity]],
    sentences: Sentences,
    *,
    file_name: str,
    section_id: str,
) -> WireExtractionResult:
    ids: dict[str, str] = {}
    used: set[str] = set()
    wire_entities: list[WireEntity] = []
    attr_counts: dict[tuple[str, str], list[str]] = {}
    for ent in entities:
        etype = typed.get(ent.key)
        if not etype:
            continue
        name = ent.name()
        eid = ent.gazetteer_id or snake_id(name)
        if eid in used:
            eid = f"{eid}_{snake_id(etype)}"
        base, n = eid, 2
        while eid in used:
            eid, n = f"{base}_{n}", n + 1
        used.add(eid)
        ids[ent.key] = eid
        attrs = attributes_of(text, ent)
        for attr, _value in attrs:
            attr_counts.setdefault((etype, attr), []).append(name)
        wire_entities.append(
            WireEntity(
                id=eid,
                type=etype,
                name=name,
                aliases=alias_forms(ent, name),
                attributes=[WireAttribute(name=k, value=v) for k, v in attrs],
                mentions=surface_forms(ent),
                confidence=_entity_confidence(ent),
            )
        )

    wire_rels = [
        WireRelationship(
            source=ids[r.source.key],
            target=ids[r.target.key],
            type=r.type,
            description=patterns.DESCRIPTIONS.get(r.type, "{s} " + r.type + " {t}.").format(
                s=r.source.name(), t=r.target.name()
            ),
            evidence=r.quotes,
            confidence=r.confidence,
        )
        for r in sorted(rels.values(), key=lambda r: (r.source.first, r.target.first, r.type))
        if r.source.key in ids and r.target.key in ids
    ]

    where = f"section {section_id}" if section_id else (file_name or "this section")
    proposals: list[WireSchemaProposal] = []
    for name in sorted(proposal_cues):
        pc = proposal_cues[name]
        if pc.count < patterns.PROPOSAL_MIN_CUES[name]:
            continue
        description, _kinds = patterns.PROPOSAL_TYPES[name]
        proposals.append(
            WireSchemaProposal(
                proposal_type="new_relationship_type",
                name=name,
                description=description,
                rationale=f"{pc.count} statement(s) in {where} express this relation and no "
                "relationship type of the ontology covers it.",
                source_types=_type_names(view, pc.source_kinds),
                target_types=_type_names(view, pc.target_kinds),
                examples=pc.quotes,
            )
        )
    for kind in sorted(missing_kinds):
        ents = missing_kinds[kind]
        if len(ents) < 2:
            continue
        proposals.append(
            WireSchemaProposal(
                proposal_type="new_entity_type",
                name=_DEFAULT_TYPE_NAME[kind],
                description=f"Named {_DEFAULT_TYPE_NAME[kind].lower()}s such as "
                + ", ".join(e.name() for e in ents[:3])
                + ".",
                rationale=f"{len(ents)} names in {where} read as "
                f"{_DEFAULT_TYPE_NAME[kind].lower()}s and no ontology type fits them.",
                source_types=[],
                target_types=[],
                examples=_examples(text, sentences, ents),
            )
        )
    known_attrs = {t.name: set(t.attributes) for t in view.ontology.entity_types}
    for (etype, attr), names in sorted(attr_counts.items()):
        if attr in known_attrs.get(etype, set()) or len(names) < 2:
            continue
        proposals.append(
            WireSchemaProposal(
                proposal_type="new_attribute",
                name=attr,
                description=f"Attribute '{attr}' of {etype}, stated in the text (e.g. for "
                + ", ".join(names[:3])
                + ").",
                rationale=f"{len(names)} {etype} entities in {where} have a stated {attr} the "
                "ontology does not list.",
                source_types=[],
                target_types=[],
                examples=[],
            )
        )
    return WireExtractionResult(
        entities=wire_entities, relationships=wire_rels, schema_proposals=proposals
    )


def _type_names(view: OntologyView, kinds: Counter[str]) -> list[str]:
    out: list[str] = []
    for kind in sorted(kinds, key=lambda k: (-kinds[k], k)):
        name = view.kind_type.get(kind, _DEFAULT_TYPE_NAME.get(kind, ""))
        if name and name not in out:
            out.append(name)
    return out


def _examples(text: str, sentences: Sentences, ents: list[Entity]) -> list[str]:
    out: list[str] = []
    for ent in ents[:MAX_EXAMPLES]:
        occ = ent.occurrences[0]
        start, end = sentences.spans[sentences.index_of(occ.start)]
        if end - start > MAX_QUOTE_CHARS:
            start, end = occ.lead, occ.end
        out.append(text[start:end])
    return out


def _entity_confidence(ent: Entity) -> float:
    if ent.gazetteer_id:
        return CONF_GAZETTEER
    if any(o.head_kind or o.title for o in ent.occurrences):
        return CONF_CUE
    top = max(ent.votes.values(), default=0)
    if top >= 2:
        return CONF_CONTEXT
    return CONF_BARE


__all__ = ["OntologyView", "extract", "normalize"]


_KIND_LABEL = {PERSON: "PER", PLACE: "LOC", ORG: "ORG", ARTIFACT: "VEH"}


def rule_spans(
    text: str, ontology: Ontology | None = None, tagger: Tagger | None = None
) -> list[tuple[int, int, str]]:
    """The name spans the extractor keeps as entity mentions, with a LitBank-style label.

    Used to score the extractor on LitBank next to the bare tagger (places are labelled
    ``LOC``; only the place group, not LOC/GPE/FAC, is comparable).
    """
    view, _, vocabulary, occs = _find_names(text, ontology, tagger)
    _, per_occ = build_entities(
        text, occs, view.gazetteer, [], view.type_kind, vocabulary, tagged=tagger is not None
    )
    out = []
    for occ, ent in zip(occs, per_occ, strict=True):
        if ent is not None and ent.kind in _KIND_LABEL:
            out.append((occ.start, occ.end, _KIND_LABEL[ent.kind]))
    return out
