"""Build the knowledge graph of one series from its sections and extraction results.

:func:`build_graph` is the single entry point the pipeline (CLI and Dagster alike) calls. It
reads results one at a time, grounds every mention and quote in its section while the section's
text is at hand, keeps only compact records (the parsed pydantic objects are dropped), then
resolves entities series-wide, deduplicates relationships, aggregates proposals and produces one
row list per warehouse table. The output depends only on the inputs, never on the order results
arrive in, so loading the same results twice gives identical tables.
"""

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fantasy_kg.domain.graph.grounding import (
    GROUNDED_STATUSES,
    Grounding,
    GroundingConfig,
    SectionText,
    locate_in_book,
)
from fantasy_kg.domain.graph.models import (
    AliasRow,
    AttributeRow,
    EntityRow,
    EvidenceRow,
    FailureRow,
    GraphStats,
    KnowledgeGraph,
    MentionRow,
    MergeRow,
    SectionRow,
)
from fantasy_kg.domain.graph.names import id_key, name_keys
from fantasy_kg.domain.graph.proposals import ProposalCollector, proposal_key
from fantasy_kg.domain.graph.provenance import Provenance, RequestProvenance
from fantasy_kg.domain.graph.relationships import (
    Appearance,
    RelationshipRecord,
    build_relationships,
    noisy_or,
    normalize_rel_type,
)
from fantasy_kg.domain.graph.resolution import (
    EntityRecord,
    Resolution,
    person_types,
    resolve_entities,
)
from fantasy_kg.domain.schemas import EntityInstance, ExtractionResult, Ontology
from fantasy_kg.domain.sections import SectionFile

_Where = tuple[int | None, str | None, str | None, int | None, int | None]

MAX_LIST = 100  # cap on id lists stored per row (source ids, sections of an attribute)


@dataclass(slots=True)
class ResultInput:
    """One result file: its custom_id (file stem without ``_extracted``) and parsed content."""

    custom_id: str
    result: ExtractionResult
    source: str = ""


@dataclass(slots=True)
class InputFailure:
    """A result that could not be used (unreadable file, no matching section)."""

    custom_id: str
    stage: str
    failure_type: str
    message: str
    file_name: str | None = None


@dataclass(frozen=True, slots=True)
class GraphConfig:
    """Knobs of the build: grounding thresholds."""

    grounding: GroundingConfig = field(default_factory=GroundingConfig)


@dataclass(slots=True)
class _Section:
    pos: int
    file: SectionFile
    sid: str  # section id ("01"), cached: the property parses the file name
    number: int
    fname: str
    book_file: str | None
    book_title: str | None
    book_no: int | None
    custom_ids: list[str] = field(default_factory=list)
    chars: int = 0
    entity_instances: int = 0
    relationship_instances: int = 0


class _Books:
    """Book numbering in story order (order of first appearance across sections)."""

    def __init__(self, sections: Sequence[SectionFile]) -> None:
        self.no: dict[str, int] = {}
        self.title: dict[str, str] = {}
        for sec in sections:
            names = [s.book for s in sec.meta.spans] or list(sec.meta.book_files)
            titles = [s.title for s in sec.meta.spans] or list(sec.meta.books)
            if not names:
                names = list(sec.meta.books)
            for i, name in enumerate(names):
                if name not in self.no:
                    self.no[name] = len(self.no) + 1
                    title = titles[i] if i < len(titles) and titles[i] else ""
                    self.title[name] = title or name

    def first_of(self, sec: SectionFile) -> str | None:
        names = [s.book for s in sec.meta.spans] or list(sec.meta.book_files)
        names = names or list(sec.meta.books)
        return names[0] if names else None


class _Builder:
    def __init__(
        self,
        series: str,
        sections: Sequence[SectionFile],
        ontology: Ontology,
        provenance: Provenance,
        config: GraphConfig,
    ) -> None:
        self.series = series
        self.ontology = ontology
        self.provenance = provenance
        self.config = config
        self.books = _Books(sections)
        self.sections: list[_Section] = []
        self.by_file: dict[str, int] = {}
        self.by_stem: dict[str, int] = {}
        self.by_sid: dict[str, list[int]] = defaultdict(list)
        for pos, sec in enumerate(sections):
            book = self.books.first_of(sec)
            self.sections.append(
                _Section(
                    pos=pos,
                    file=sec,
                    sid=sec.section_id,
                    number=sec.meta.section,
                    fname=sec.file_name,
                    book_file=book,
                    book_title=self.books.title.get(book) if book else None,
                    book_no=self.books.no.get(book) if book else None,
                )
            )
            self.by_file[sec.file_name] = pos
            self.by_stem[sec.stem] = pos
            self.by_sid[sec.section_id].append(pos)
        self._texts: dict[int, SectionText] = {}
        self.entity_records: list[EntityRecord] = []
        self.entity_sort: list[tuple[int, str, int]] = []
        self.mentions: list[MentionRow] = []
        self.mention_record: list[int] = []
        self.rel_records: list[RelationshipRecord] = []
        self.rel_sort: list[tuple[int, str, int]] = []
        self.evidence: list[EvidenceRow] = []
        self.proposals = ProposalCollector()
        self.failures: list[FailureRow] = []
        self.results_seen: set[str] = set()
        self.result_count = 0
        self.entity_type_names = set(ontology.entity_type_names())
        self.type_attributes = {
            t.name: {proposal_key("", a) for a in t.attributes} for t in ontology.entity_types
        }
        self.rel_types = {r.name.upper() for r in ontology.relationship_types}

    # --- helpers ------------------------------------------------------------------------------

    def _text(self, pos: int) -> SectionText:
        found = self._texts.get(pos)
        if found is None:
            if len(self._texts) >= 2:  # results arrive in section order: keep the last two
                self._texts.pop(next(iter(self._texts)))
            sec = self.sections[pos]
            # Sections read with load_text=False carry no text: read it now, drop it later.
            text = sec.file.text or sec.file.path.read_text(encoding="utf-8")
            sec.chars = len(text)
            found = self._texts[pos] = SectionText(text)
        return found

    def _prov(self, custom_id: str) -> RequestProvenance | None:
        return self.provenance.for_custom_id(custom_id)

    def _where(
        self, pos: int, g: Grounding
    ) -> tuple[int | None, str | None, str | None, int | None, int | None]:
        """``(book_no, book, book_file, book_start, book_end)`` of a grounded span."""
        sec = self.sections[pos]
        if g.start is not None and g.end is not None:
            located = locate_in_book(sec.file.meta.spans, g.start, g.end)
            if located is not None:
                return (
                    self.books.no.get(located.book_file),
                    self.books.title.get(located.book_file, located.book_title),
                    located.book_file,
                    located.start,
                    located.end,
                )
        return sec.book_no, sec.book_title, sec.book_file, None, None

    def _section_for(self, result: ResultInput) -> int | None:
        votes: Counter[int] = Counter()
        for ent in result.result.entities:
            for m in ent.mentions:
                if m.file_name in self.by_file:
                    votes[self.by_file[m.file_name]] += 1
        for rel in result.result.relationships:
            for ev in rel.evidence:
                if ev.file_name in self.by_file:
                    votes[self.by_file[ev.file_name]] += 1
        if votes:
            return min(votes, key=lambda p: (-votes[p], p))
        cid = result.custom_id
        for stem in (cid, cid[:-2] if cid[-2:] in ("_a", "_b") else None):
            if stem is not None and stem in self.by_stem:
                return self.by_stem[stem]
        chunks = {m.chunk_id for e in result.result.entities for m in e.mentions if m.chunk_id}
        if len(chunks) == 1:
            cands = self.by_sid.get(next(iter(chunks)), [])
            if len(cands) == 1:
                return cands[0]
        return None

    # --- ingestion ----------------------------------------------------------------------------

    def add_result(self, item: ResultInput) -> None:
        pos = self._section_for(item)
        if pos is None:
            self.failures.append(
                FailureRow(
                    series=self.series,
                    custom_id=item.custom_id,
                    section_id=None,
                    file_name=None,
                    stage="unmatched",
                    failure_type="no_section",
                    message=f"result {item.source or item.custom_id} names no section of "
                    f"series {self.series!r}",
                    retryable=False,
                    resolved=False,
                    batch_id=None,
                )
            )
            return
        self.result_count += 1
        self.results_seen.add(item.custom_id)
        sec = self.sections[pos]
        sec.custom_ids.append(item.custom_id)
        sec.entity_instances += len(item.result.entities)
        sec.relationship_instances += len(item.result.relationships)
        prov = self._prov(item.custom_id)
        grounding = self.config.grounding
        local: dict[str, int] = {}
        local_keys: dict[str, int] = {}
        claimed = self._claim_occurrences(pos, item.result.entities)
        for order, ent in enumerate(item.result.entities):
            rec_pos = pos
            for m in ent.mentions:
                if m.file_name in self.by_file:
                    rec_pos = self.by_file[m.file_name]
                    break
            surfaces = tuple(dict.fromkeys(m.text for m in ent.mentions if m.text))
            attrs = tuple(
                (str(k), v if isinstance(v, str) else json.dumps(v, sort_keys=True))
                for k, v in ent.attributes.items()
            )
            idx = len(self.entity_records)
            self.entity_records.append(
                EntityRecord(
                    index=idx,
                    section_pos=rec_pos,
                    section_id=self.sections[rec_pos].sid,
                    custom_id=item.custom_id,
                    id=ent.id,
                    type=ent.type,
                    name=ent.name,
                    aliases=tuple(ent.aliases),
                    surfaces=surfaces,
                    confidence=ent.confidence.score,
                    attributes=attrs,
                )
            )
            self.entity_sort.append((rec_pos, item.custom_id, order))
            local.setdefault(ent.id, idx)
            local_keys.setdefault(id_key(ent.id), idx)
            seen: set[tuple[int, str]] = set()
            added = 0
            for m in ent.mentions:
                surface = m.text or ent.name
                mpos = self.by_file.get(m.file_name, rec_pos)
                if (mpos, surface) in seen:
                    continue
                seen.add((mpos, surface))
                spans = claimed.get((order, surface)) if mpos == pos else None
                if spans:
                    for start, end in spans:
                        found = Grounding("exact", start, end, 100.0)
                        self._add_mention(idx, ent.id, surface, mpos, item.custom_id, prov, found)
                    added += len(spans)
                elif spans is None:
                    found = self._ground(mpos, surface, "mention", grounding)
                    self._add_mention(idx, ent.id, surface, mpos, item.custom_id, prov, found)
                    added += 1
            if not added and ent.mentions:
                # Every occurrence went to another entity of the answer with the same name:
                # keep one mention so this entity stays grounded where it was said.
                first = ent.mentions[0]
                surface, mpos = first.text or ent.name, self.by_file.get(first.file_name, rec_pos)
                found = self._ground(mpos, surface, "mention", grounding)
                self._add_mention(idx, ent.id, surface, mpos, item.custom_id, prov, found)
            if self.entity_type_names and ent.type not in self.entity_type_names:
                self.proposals.add(
                    proposal_type="new_entity_type",
                    name=ent.type,
                    origin="observed",
                    section_pos=rec_pos,
                    section_id=self.sections[rec_pos].sid,
                    examples=[ent.name],
                )
            known_keys = self.type_attributes.get(ent.type)
            if known_keys is not None:
                for key, value in attrs:
                    if proposal_key("new_attribute", key) not in known_keys:
                        self.proposals.add(
                            proposal_type="new_attribute",
                            name=key,
                            origin="observed",
                            section_pos=rec_pos,
                            section_id=self.sections[rec_pos].sid,
                            source_types=[ent.type],
                            examples=[f"{ent.name}: {value}"[:300]],
                        )

        for order, rel in enumerate(item.result.relationships):
            src = local.get(rel.source)
            if src is None:
                src = local_keys.get(id_key(rel.source))
            tgt = local.get(rel.target)
            if tgt is None:
                tgt = local_keys.get(id_key(rel.target))
            rec = RelationshipRecord(
                index=len(self.rel_records),
                section_pos=pos,
                section_id=sec.sid,
                custom_id=item.custom_id,
                raw_source=rel.source,
                raw_target=rel.target,
                raw_type=rel.type,
                description=rel.description,
                confidence=rel.confidence.score,
                source_record=src,
                target_record=tgt,
            )
            quotes = [(ev.quote, self.by_file.get(ev.file_name, pos)) for ev in rel.evidence]
            for quote, qpos in quotes or [("", pos)]:
                rec.evidence.append(len(self.evidence))
                g = self._ground(qpos, quote, "quote", grounding) if quote else None
                if g is not None and g.status in GROUNDED_STATUSES:
                    rec.grounded = True
                self.evidence.append(self._evidence_row(rec, quote, qpos, g, prov))
            self.rel_records.append(rec)
            self.rel_sort.append((pos, item.custom_id, order))
            rtype = normalize_rel_type(rel.type)
            if rtype not in self.rel_types:
                types = self._endpoint_types(src, tgt)
                self.proposals.add(
                    proposal_type="new_relationship_type",
                    name=rtype,
                    origin="observed",
                    section_pos=pos,
                    section_id=sec.sid,
                    description=rel.description,
                    source_types=types[0],
                    target_types=types[1],
                    examples=[q for q, _ in quotes[:1]],
                )
        for prop in item.result.schema_proposals:
            self.proposals.add(
                proposal_type=prop.proposal_type,
                name=prop.name,
                origin="model",
                section_pos=pos,
                section_id=sec.sid,
                description=prop.description,
                rationale=prop.rationale,
                source_types=prop.source_types,
                target_types=prop.target_types,
                examples=prop.examples,
            )

    def _endpoint_types(self, src: int | None, tgt: int | None) -> tuple[list[str], list[str]]:
        s = [self.entity_records[src].type] if src is not None else []
        t = [self.entity_records[tgt].type] if tgt is not None else []
        return s, t

    def _ground(self, pos: int, needle: str, kind: Any, config: GroundingConfig) -> Grounding:
        return self._text(pos).ground(needle, kind, config)

    def _claim_occurrences(
        self, pos: int, entities: Sequence[EntityInstance]
    ) -> dict[tuple[int, str], list[tuple[int, int]]]:
        """Every occurrence of every entity surface in the section, each given to one entity.

        Longer surfaces claim first, so "Dorothy" inside "Dorothy Gale" is not counted twice;
        when two entities of one answer give the same surface, the first one claims it (the
        other keeps its surface, with no occurrence of its own). A surface that has no exact
        occurrence is absent from the result and is grounded once, as before (normalized or
        fuzzy); one whose every occurrence was claimed by others maps to an empty list.

        Returns:
            ``(entity order, surface)`` → the occurrences' ``(start, end)`` in the section.
        """
        text = self._text(pos)
        wanted: list[tuple[int, int, str]] = []  # (-len, order, surface)
        for order, ent in enumerate(entities):
            surfaces = {
                m.text or ent.name
                for m in ent.mentions
                if self.by_file.get(m.file_name, pos) == pos
            }
            wanted.extend((-len(s), order, s) for s in surfaces if s.strip())
        taken = bytearray(len(text.text) + 1)
        out: dict[tuple[int, str], list[tuple[int, int]]] = {}
        for _, order, surface in sorted(wanted):
            found = text.occurrences(surface)
            if not found:
                continue
            mine = out.setdefault((order, surface), [])
            for start, end in found:
                if not any(taken[start:end]):
                    taken[start:end] = b"\x01" * (end - start)
                    mine.append((start, end))
        return out

    def _add_mention(
        self,
        record: int,
        raw_id: str,
        surface: str,
        pos: int,
        custom_id: str,
        prov: RequestProvenance | None,
        g: Grounding,
    ) -> None:
        book_no, book, book_file, start, end = self._where(pos, g)
        sec = self.sections[pos]
        self.mentions.append(
            MentionRow(
                series=self.series,
                mention_id=0,
                entity_id="",
                raw_entity_id=raw_id,
                surface=surface,
                section_id=sec.sid,
                section_number=sec.number,
                file_name=sec.fname,
                book_no=book_no,
                book=book,
                book_file=book_file,
                char_start=start,
                char_end=end,
                section_char_start=g.start,
                section_char_end=g.end,
                status=g.status,
                score=g.score,
                custom_id=custom_id,
                batch_id=prov.batch_id if prov else None,
                prompt_version=prov.prompt_version if prov else None,
                backend=prov.backend if prov else None,
                model=prov.model if prov else None,
            )
        )
        self.mention_record.append(record)

    def _evidence_row(
        self,
        rec: RelationshipRecord,
        quote: str,
        pos: int,
        g: Grounding | None,
        prov: RequestProvenance | None,
    ) -> EvidenceRow:
        sec = self.sections[pos]
        if g is None:
            book_no, book, book_file, start, end = self._where(pos, Grounding("not_found"))
        else:
            book_no, book, book_file, start, end = self._where(pos, g)
        return EvidenceRow(
            series=self.series,
            evidence_id=0,
            relationship_id="",
            quote=quote,
            raw_source=rec.raw_source,
            raw_type=rec.raw_type,
            raw_target=rec.raw_target,
            instance_confidence=rec.confidence,
            section_id=sec.sid,
            section_number=sec.number,
            file_name=sec.fname,
            book_no=book_no,
            book=book,
            book_file=book_file,
            char_start=start,
            char_end=end,
            section_char_start=g.start if g else None,
            section_char_end=g.end if g else None,
            status=g.status if g else "no_quote",
            score=g.score if g else 0.0,
            custom_id=rec.custom_id,
            batch_id=prov.batch_id if prov else None,
            prompt_version=prov.prompt_version if prov else None,
            backend=prov.backend if prov else None,
            model=prov.model if prov else None,
        )

    # --- ordering -----------------------------------------------------------------------------

    def canonical_order(self) -> None:
        """Re-number records in story order so the output ignores the order of arrival."""
        order = sorted(range(len(self.entity_records)), key=self.entity_sort.__getitem__)
        new_of = [0] * len(order)
        for new, old in enumerate(order):
            new_of[old] = new
        self.entity_records = [self.entity_records[old] for old in order]
        for new, rec in enumerate(self.entity_records):
            rec.index = new
        self.mention_record = [new_of[r] for r in self.mention_record]
        morder = sorted(
            range(len(self.mentions)),
            key=lambda i: (self.mention_record[i], i),
        )
        self.mentions = [self.mentions[i] for i in morder]
        self.mention_record = [self.mention_record[i] for i in morder]
        for i, row in enumerate(self.mentions):
            row.mention_id = i + 1

        rorder = sorted(range(len(self.rel_records)), key=self.rel_sort.__getitem__)
        self.rel_records = [self.rel_records[old] for old in rorder]
        new_evidence: list[EvidenceRow] = []
        for new, rrec in enumerate(self.rel_records):
            rrec.index = new
            if rrec.source_record is not None:
                rrec.source_record = new_of[rrec.source_record]
            if rrec.target_record is not None:
                rrec.target_record = new_of[rrec.target_record]
            fresh = []
            for ei in rrec.evidence:
                ev = self.evidence[ei]
                ev.evidence_id = len(new_evidence) + 1
                fresh.append(len(new_evidence))
                new_evidence.append(ev)
            rrec.evidence = fresh
        self.evidence = new_evidence

    # --- output -------------------------------------------------------------------------------

    def build(self, input_failures: Iterable[InputFailure]) -> KnowledgeGraph:
        self.canonical_order()
        related = [
            (r.source_record, r.target_record)
            for r in self.rel_records
            if r.source_record is not None and r.target_record is not None
        ]
        resolution = resolve_entities(
            self.entity_records,
            self.ontology,
            [(a, b) for a, b in related if a is not None and b is not None],
        )
        for row, rec in zip(self.mentions, self.mention_record, strict=True):
            row.entity_id = resolution.entity_id_of(rec)

        graph = KnowledgeGraph(
            series=self.series,
            ontology_version=self.ontology.version,
            ontology_fingerprint=self.ontology.fingerprint(),
        )
        graph.entities, graph.aliases, graph.attributes = self._entity_tables(resolution)
        graph.merges = self._merge_rows(resolution)
        graph.mentions = self.mentions
        entity_types = {c.entity_id: c.type for c in resolution.clusters}
        graph.relationships = build_relationships(
            self.series,
            self.rel_records,
            self.evidence,
            resolution,
            entity_types,
            self.ontology,
            self._rel_appearance,
            self._batch_and_version,
        )
        graph.relationships.sort(key=lambda r: r.relationship_id)
        graph.evidence = self.evidence
        graph.proposals = self.proposals.rows(self.series, self.ontology)
        graph.batch_jobs = self.provenance.batch_job_rows(self.series)
        graph.costs = self.provenance.cost_rows(self.series)
        graph.failures = self._failure_rows(input_failures)
        graph.sections = self._section_rows(graph.failures)
        graph.stats = self._stats(graph)
        return graph

    def _batch_and_version(self, custom_id: str) -> tuple[str | None, str | None]:
        prov = self._prov(custom_id)
        return (prov.batch_id, prov.prompt_version) if prov else (None, None)

    def _rel_appearance(self, rec: RelationshipRecord) -> tuple[Appearance, Appearance]:
        sec = self.sections[rec.section_pos]
        book_no, book = sec.book_no, sec.book_title
        for ei in rec.evidence:
            row = self.evidence[ei]
            if row.status in GROUNDED_STATUSES:
                book_no, book = row.book_no, row.book
                break
        here = Appearance(rec.section_pos, rec.section_id, book_no, book)
        return here, here

    def _entity_tables(
        self, resolution: Resolution
    ) -> tuple[list[EntityRow], list[AliasRow], list[AttributeRow]]:
        mentions_of: dict[int, list[int]] = defaultdict(list)
        for mi, rec in enumerate(self.mention_record):
            mentions_of[resolution.cluster_of[rec]].append(mi)
        persons = person_types(self.ontology)
        entities: list[EntityRow] = []
        aliases: list[AliasRow] = []
        attributes: list[AttributeRow] = []
        for ci, cluster in enumerate(resolution.clusters):
            members = cluster.members
            recs = [self.entity_records[m] for m in members]
            mrows = [self.mentions[i] for i in mentions_of.get(ci, [])]
            grounded = sum(1 for r in mrows if r.status in GROUNDED_STATUSES)
            # Section coordinates, not book ones: a section that spans two books has book
            # offsets that restart at 0 in the second book.
            order_key = [
                (
                    r.section_number,
                    r.section_char_start if r.section_char_start is not None else 1 << 60,
                )
                for r in mrows
            ]
            first_m = mrows[min(range(len(mrows)), key=order_key.__getitem__)] if mrows else None
            last_m = mrows[max(range(len(mrows)), key=order_key.__getitem__)] if mrows else None
            first_sec = self.sections[recs[0].section_pos]
            last_sec = self.sections[max(r.section_pos for r in recs)]
            batch_ids: set[str] = set()
            versions: set[str] = set()
            for cid in {r.custom_id for r in recs}:
                b, v = self._batch_and_version(cid)
                if b:
                    batch_ids.add(b)
                if v:
                    versions.add(v)
            attr_rows = self._attributes(cluster.entity_id, recs)
            attributes.extend(attr_rows)
            best: dict[str, tuple[int, str]] = {}
            for a in attr_rows:
                if a.name not in best or a.instance_count > best[a.name][0]:
                    best[a.name] = (a.instance_count, a.value)
            alias_rows = self._aliases(cluster.entity_id, cluster.name, recs, mrows, persons)
            aliases.extend(alias_rows)
            source_ids = sorted({r.id for r in recs})[:MAX_LIST]
            entities.append(
                EntityRow(
                    series=self.series,
                    entity_id=cluster.entity_id,
                    type=cluster.type,
                    name=cluster.name,
                    canonical_rule=cluster.rule_id,
                    confidence=noisy_or([r.confidence for r in recs]),
                    confidence_max=max(r.confidence for r in recs),
                    instance_count=len(recs),
                    mention_count=len(mrows),
                    grounded_mention_count=grounded,
                    section_count=len({r.section_pos for r in recs}),
                    alias_count=len(alias_rows),
                    first_book_no=first_m.book_no if first_m else first_sec.book_no,
                    first_book=first_m.book if first_m else first_sec.book_title,
                    first_section=first_m.section_id if first_m else first_sec.sid,
                    last_book_no=last_m.book_no if last_m else last_sec.book_no,
                    last_book=last_m.book if last_m else last_sec.book_title,
                    last_section=last_m.section_id if last_m else last_sec.sid,
                    attributes_json=json.dumps(
                        {k: v for k, (_, v) in sorted(best.items())}, ensure_ascii=False
                    ),
                    source_ids=source_ids,
                    ambiguous_with=list(cluster.ambiguous_with),
                    batch_ids=sorted(batch_ids),
                    prompt_versions=sorted(versions),
                )
            )
        return entities, aliases, attributes

    def _attributes(self, entity_id: str, recs: Sequence[EntityRecord]) -> list[AttributeRow]:
        acc: dict[tuple[str, str], list[int]] = {}
        for rec in recs:
            for name, value in rec.attributes:
                acc.setdefault((name, value), []).append(rec.section_pos)
        rows = []
        for (name, value), positions in sorted(acc.items()):
            first = self.sections[min(positions)]
            uniq = sorted(set(positions))
            rows.append(
                AttributeRow(
                    series=self.series,
                    entity_id=entity_id,
                    name=name,
                    value=value,
                    instance_count=len(positions),
                    first_book_no=first.book_no,
                    first_section=first.sid,
                    sections=[self.sections[p].sid for p in uniq][:MAX_LIST],
                )
            )
        return rows

    def _aliases(
        self,
        entity_id: str,
        canonical: str,
        recs: Sequence[EntityRecord],
        mrows: Sequence[MentionRow],
        persons: frozenset[str],
    ) -> list[AliasRow]:
        kinds: dict[str, set[str]] = defaultdict(set)
        counts: Counter[str] = Counter()
        sections: dict[str, set[int]] = defaultdict(set)
        first: dict[str, int] = {}
        kinds[canonical].add("canonical")
        for rec in recs:
            # An alias is a name, not a place in the text: a hard-wrapped surface
            # ("Tin\nWoodman") is stored as it reads, on one line.
            forms: dict[str, str] = {_one_line(rec.name): "name"}
            for a in rec.aliases:
                forms.setdefault(_one_line(a), "alias")
            for s in rec.surfaces:
                forms.setdefault(_one_line(s), "mention")
            for surface, kind in forms.items():
                kinds[surface].add(kind)
                counts[surface] += 1
                sections[surface].add(rec.section_pos)
                first.setdefault(surface, rec.section_pos)
        first_book: dict[str, tuple[int | None, str | None]] = {}
        for row in mrows:
            line = _one_line(row.surface)
            if line not in first_book and first.get(line) is not None:
                fsec = self.sections[first[line]]
                if row.section_id == fsec.sid:
                    first_book[line] = (row.book_no, row.book)
        person = bool(recs) and recs[0].type in persons
        rows = []
        for surface in sorted(kinds, key=lambda s: (-counts[s], s)):
            pos = first.get(surface)
            sec = self.sections[pos] if pos is not None else None
            book_no, book = first_book.get(
                surface, (sec.book_no, sec.book_title) if sec else (None, None)
            )
            rows.append(
                AliasRow(
                    series=self.series,
                    entity_id=entity_id,
                    alias=surface,
                    alias_norm=name_keys(surface, person=person).full,
                    kinds=sorted(kinds[surface]),
                    instance_count=counts[surface],
                    section_count=len(sections[surface]),
                    first_book_no=book_no,
                    first_book=book,
                    first_section=sec.sid if sec else None,
                )
            )
        return rows

    def _merge_rows(self, resolution: Resolution) -> list[MergeRow]:
        rows = []
        for n, d in enumerate(resolution.decisions, start=1):
            left = resolution.entity_id_of(d.left)
            right = resolution.entity_id_of(d.right)
            rows.append(
                MergeRow(
                    series=self.series,
                    merge_no=n,
                    decision=d.decision,
                    rule=d.rule,
                    key=d.key,
                    entity_id=left,
                    other_entity_id=right if right != left else None,
                    left_instance=self.entity_records[d.left].label,
                    right_instance=self.entity_records[d.right].label,
                    detail=d.detail,
                )
            )
        return rows

    def _failure_rows(self, input_failures: Iterable[InputFailure]) -> list[FailureRow]:
        rows = list(self.failures)
        done_sections = {p for p, s in enumerate(self.sections) if s.custom_ids}
        for f in self.provenance.failures():
            pos = self.by_file.get(f.file_name)
            if pos is None:
                stem = f.custom_id[:-2] if f.custom_id[-2:] in ("_a", "_b") else f.custom_id
                pos = self.by_stem.get(stem)
            sec = self.sections[pos].file if pos is not None else None
            rows.append(
                FailureRow(
                    series=self.series,
                    custom_id=f.custom_id,
                    section_id=sec.section_id if sec else None,
                    file_name=sec.file_name if sec else (f.file_name or None),
                    stage="batch",
                    failure_type=f.type,
                    message=f.message,
                    retryable=f.retryable,
                    resolved=f.custom_id in self.results_seen or pos in done_sections,
                    batch_id=f.batch_id,
                )
            )
        for bad in input_failures:
            pos = self.by_file.get(bad.file_name or "")
            if pos is None:
                stem = bad.custom_id[:-2] if bad.custom_id[-2:] in ("_a", "_b") else bad.custom_id
                pos = self.by_stem.get(stem)
            sec = self.sections[pos].file if pos is not None else None
            rows.append(
                FailureRow(
                    series=self.series,
                    custom_id=bad.custom_id,
                    section_id=sec.section_id if sec else None,
                    file_name=sec.file_name if sec else bad.file_name,
                    stage=bad.stage,
                    failure_type=bad.failure_type,
                    message=bad.message,
                    retryable=False,
                    resolved=pos in done_sections,
                    batch_id=(p.batch_id if (p := self._prov(bad.custom_id)) else None),
                )
            )
        for req in self.provenance.requests:
            if not req.rejected:
                continue
            pos = self.by_file.get(req.file_name)
            if pos is None:
                pos = self.by_stem.get(req.custom_id)
            if pos is None:
                continue  # another series' result
            sec_row = self.sections[pos]
            for kind, message in req.rejected:
                rows.append(
                    FailureRow(
                        series=self.series,
                        custom_id=req.custom_id,
                        section_id=sec_row.sid,
                        file_name=sec_row.fname,
                        stage="validation",
                        failure_type=f"rejected_{kind}",
                        message=message,
                        retryable=False,
                        resolved=False,
                        batch_id=req.batch_id,
                    )
                )
        failed_sections = {r.file_name for r in rows if r.file_name and r.stage != "validation"}
        for s in self.sections:
            if not s.custom_ids and s.file.file_name not in failed_sections:
                rows.append(
                    FailureRow(
                        series=self.series,
                        custom_id=s.file.stem,
                        section_id=s.sid,
                        file_name=s.file.file_name,
                        stage="missing",
                        failure_type="no_result",
                        message="no result file for this section: extraction not run or "
                        "not retrieved yet",
                        retryable=True,
                        resolved=False,
                        batch_id=None,
                    )
                )
        rows.sort(
            key=lambda r: (r.section_id or "", r.custom_id, r.stage, r.batch_id or "", r.message)
        )
        return rows

    def _section_rows(self, failures: Sequence[FailureRow]) -> list[SectionRow]:
        failed = {
            r.file_name
            for r in failures
            if r.stage not in ("missing", "validation") and not r.resolved
        }
        rows = []
        for s in self.sections:
            meta = s.file.meta
            cids = sorted(s.custom_ids)
            prov = next((p for c in cids if (p := self._prov(c)) is not None), None)
            if prov is None:
                prov = self._prov(s.file.stem)
            status = (
                "extracted" if cids else ("failed" if s.file.file_name in failed else "missing")
            )
            rows.append(
                SectionRow(
                    series=self.series,
                    section_id=s.sid,
                    section_number=meta.section,
                    file_name=s.file.file_name,
                    books=list(meta.books),
                    book_files=list(meta.book_files),
                    first_book_no=s.book_no,
                    chars=meta.chars or s.chars or len(s.file.text),
                    input_tokens=meta.input_tokens,
                    token_count_method=meta.token_count_method,
                    sha256=meta.sha256,
                    custom_ids=cids,
                    batch_id=prov.batch_id if prov else None,
                    prompt_version=prov.prompt_version if prov else None,
                    backend=prov.backend if prov else None,
                    model=prov.model if prov else None,
                    status=status,
                    entity_instances=s.entity_instances,
                    relationship_instances=s.relationship_instances,
                )
            )
        return rows

    def _stats(self, graph: KnowledgeGraph) -> GraphStats:
        quotes = [e for e in graph.evidence if e.status != "no_quote"]
        return GraphStats(
            sections=len(graph.sections),
            sections_with_results=sum(1 for s in graph.sections if s.status == "extracted"),
            result_files=self.result_count,
            entity_instances=len(self.entity_records),
            relationship_instances=len(self.rel_records),
            entities=len(graph.entities),
            relationships=len(graph.relationships),
            mentions=len(graph.mentions),
            mentions_grounded=sum(1 for m in graph.mentions if m.status in GROUNDED_STATUSES),
            evidence=len(quotes),
            evidence_grounded=sum(1 for e in quotes if e.status in GROUNDED_STATUSES),
            evidence_exact=sum(1 for e in quotes if e.status == "exact"),
            orphan_relationships=sum(1 for r in graph.relationships if r.orphan),
            ungrounded_relationships=sum(1 for r in graph.relationships if not r.grounded),
            out_of_ontology_relationships=sum(1 for r in graph.relationships if not r.in_ontology),
            merges=sum(1 for m in graph.merges if m.decision == "merged"),
            kept_apart=sum(1 for m in graph.merges if m.decision == "kept_apart"),
            failures=sum(1 for f in graph.failures if not f.resolved and f.stage != "validation"),
            rejected_items=sum(1 for f in graph.failures if f.stage == "validation"),
            proposals=sum(1 for p in graph.proposals if p.status == "pending"),
        )


def _one_line(name: str) -> str:
    """A name with its whitespace (line breaks of hard-wrapped text) collapsed to single spaces."""
    return " ".join(name.split())


def build_graph(
    sections: Sequence[SectionFile],
    results: Iterable[ResultInput],
    ontology: Ontology,
    provenance: Provenance | None = None,
    *,
    series: str | None = None,
    input_failures: Iterable[InputFailure] = (),
    config: GraphConfig | None = None,
) -> KnowledgeGraph:
    """Build the knowledge graph of one series.

    Args:
        sections: The series' sections in story order (``read_sections(input_dir, series)``;
            with ``load_text=False`` each text is read from its file when its results arrive).
        results: Its result files, ideally in section order (any order gives the same graph,
            section order keeps only two sections' normalized text in memory).
        ontology: Types, direction, canonical and do-not-merge rules of the series.
        provenance: Job-file information (batch ids, prompt versions, failures, costs).
        series: Series slug; defaults to the sections' series.
        input_failures: Result files that could not be read, recorded in
            ``extraction_failures``.
        config: Grounding thresholds.

    Returns:
        The graph as row tables plus headline stats (grounding rate, orphans, ...).
    """
    slug = series or (sections[0].meta.series if sections else ontology.series)
    builder = _Builder(
        slug, sections, ontology, provenance or Provenance(), config or GraphConfig()
    )
    for item in results:
        builder.add_result(item)
    return builder.build(input_failures)
