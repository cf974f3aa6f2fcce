"""The collecting half of graph building: read results one at a time, ground as they come.

:class:`GraphCollector` keeps compact records only (the parsed pydantic objects are dropped) and
grounds every mention and quote while its section's text is at hand;
:mod:`fantasy_kg.domain.graph.assemble` turns what it collected into tables.
"""

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
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
    EvidenceRow,
    FailureRow,
    MentionRow,
)
from fantasy_kg.domain.graph.names import id_key
from fantasy_kg.domain.graph.proposals import ProposalCollector, proposal_key
from fantasy_kg.domain.graph.provenance import Provenance, RequestProvenance, trace_columns
from fantasy_kg.domain.graph.relationships import (
    RelationshipRecord,
    normalize_rel_type,
)
from fantasy_kg.domain.graph.resolution import (
    EntityRecord,
)
from fantasy_kg.domain.schemas import EntityInstance, ExtractionResult, Ontology
from fantasy_kg.domain.sections import SectionFile

Where = tuple[int | None, str | None, str | None, int | None, int | None]


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
class SectionSlot:
    """One section of the series as the collector tracks it (position, ids, book)."""

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


class SeriesBooks:
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
        """The book a section starts in (its first span), if it names any."""
        names = [s.book for s in sec.meta.spans] or list(sec.meta.book_files)
        names = names or list(sec.meta.books)
        return names[0] if names else None


class GraphCollector:
    """Reads a series' results one at a time and keeps grounded, compact records of them."""

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
        self.books = SeriesBooks(sections)
        self.sections: list[SectionSlot] = []
        self.by_file: dict[str, int] = {}
        self.by_stem: dict[str, int] = {}
        self.by_sid: dict[str, list[int]] = defaultdict(list)
        for pos, sec in enumerate(sections):
            book = self.books.first_of(sec)
            self.sections.append(
                SectionSlot(
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

    def prov(self, custom_id: str) -> RequestProvenance | None:
        """The job-file provenance of a request, if any job file names it."""
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
        """Ground and record one result file's entities, mentions, relationships and proposals."""
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
        prov = self.prov(item.custom_id)
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
        self.mentions.append(
            MentionRow(
                series=self.series,
                mention_id=0,
                entity_id="",
                raw_entity_id=raw_id,
                surface=surface,
                custom_id=custom_id,
                **self._span_columns(pos, g),
                **trace_columns(prov),
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
        return EvidenceRow(
            series=self.series,
            evidence_id=0,
            relationship_id="",
            quote=quote,
            raw_source=rec.raw_source,
            raw_type=rec.raw_type,
            raw_target=rec.raw_target,
            instance_confidence=rec.confidence,
            custom_id=rec.custom_id,
            **self._span_columns(pos, g),
            **trace_columns(prov),
        )

    def _span_columns(self, pos: int, g: Grounding | None) -> dict[str, Any]:
        """Where a mention or quote stands: its section, book and offsets, and how it grounded.

        The keys are columns of both ``mentions`` and ``evidence`` (the row classes reject any
        other keyword). ``g`` is ``None`` for a relationship the model gave no quote for.
        """
        sec = self.sections[pos]
        book_no, book, book_file, start, end = self._where(pos, g or Grounding("not_found"))
        return {
            "section_id": sec.sid,
            "section_number": sec.number,
            "file_name": sec.fname,
            "book_no": book_no,
            "book": book,
            "book_file": book_file,
            "char_start": start,
            "char_end": end,
            "section_char_start": g.start if g else None,
            "section_char_end": g.end if g else None,
            "status": g.status if g else "no_quote",
            "score": g.score if g else 0.0,
        }

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


def one_line(name: str) -> str:
    """A name with its whitespace (line breaks of hard-wrapped text) collapsed to single spaces."""
    return " ".join(name.split())
