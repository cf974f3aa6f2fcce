"""The assembling half of graph building: collected records in, one row list per table out.

Resolves entities series-wide, deduplicates relationships, aggregates proposals and fills every
warehouse table of the :class:`KnowledgeGraph`, in an order that depends only on the inputs.
"""

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from fantasy_kg.domain.graph.collect import MAX_LIST, GraphCollector, InputFailure, one_line
from fantasy_kg.domain.graph.grounding import (
    GROUNDED_STATUSES,
)
from fantasy_kg.domain.graph.models import (
    AliasRow,
    AttributeRow,
    EntityRow,
    FailureRow,
    GraphStats,
    KnowledgeGraph,
    MentionRow,
    MergeRow,
    SectionRow,
)
from fantasy_kg.domain.graph.names import name_keys
from fantasy_kg.domain.graph.provenance import trace_columns
from fantasy_kg.domain.graph.relationships import (
    Appearance,
    RelationshipRecord,
    build_relationships,
    noisy_or,
)
from fantasy_kg.domain.graph.resolution import (
    EntityRecord,
    Resolution,
    person_types,
    resolve_entities,
)
from fantasy_kg.domain.sections import SectionFile


class GraphAssembler:
    """Turns a :class:`GraphCollector`'s records into the graph's tables.

    Args:
        collector: The records of every result of the series, already grounded.
    """

    def __init__(self, collector: GraphCollector) -> None:
        self.collected = collector

    def build(self, input_failures: Iterable[InputFailure]) -> KnowledgeGraph:
        """Resolve entities, deduplicate relationships and produce every table of the graph."""
        self.collected.canonical_order()
        related = [
            (r.source_record, r.target_record)
            for r in self.collected.rel_records
            if r.source_record is not None and r.target_record is not None
        ]
        resolution = resolve_entities(
            self.collected.entity_records,
            self.collected.ontology,
            [(a, b) for a, b in related if a is not None and b is not None],
        )
        for row, rec in zip(self.collected.mentions, self.collected.mention_record, strict=True):
            row.entity_id = resolution.entity_id_of(rec)

        graph = KnowledgeGraph(
            series=self.collected.series,
            ontology_version=self.collected.ontology.version,
            ontology_fingerprint=self.collected.ontology.fingerprint(),
        )
        graph.entities, graph.aliases, graph.attributes = self._entity_tables(resolution)
        graph.merges = self._merge_rows(resolution)
        graph.mentions = self.collected.mentions
        entity_types = {c.entity_id: c.type for c in resolution.clusters}
        graph.relationships = build_relationships(
            self.collected.series,
            self.collected.rel_records,
            self.collected.evidence,
            resolution,
            entity_types,
            self.collected.ontology,
            self._rel_appearance,
            self._batch_and_version,
        )
        graph.relationships.sort(key=lambda r: r.relationship_id)
        graph.evidence = self.collected.evidence
        graph.proposals = self.collected.proposals.rows(
            self.collected.series, self.collected.ontology
        )
        graph.batch_jobs = self.collected.provenance.batch_job_rows(self.collected.series)
        graph.costs = self.collected.provenance.cost_rows(self.collected.series)
        graph.failures = self._failure_rows(input_failures)
        graph.sections = self._section_rows(graph.failures)
        graph.stats = self._stats(graph)
        return graph

    def _batch_and_version(self, custom_id: str) -> tuple[str | None, str | None]:
        prov = self.collected.prov(custom_id)
        return (prov.batch_id, prov.prompt_version) if prov else (None, None)

    def _rel_appearance(self, rec: RelationshipRecord) -> tuple[Appearance, Appearance]:
        sec = self.collected.sections[rec.section_pos]
        book_no, book = sec.book_no, sec.book_title
        for ei in rec.evidence:
            row = self.collected.evidence[ei]
            if row.status in GROUNDED_STATUSES:
                book_no, book = row.book_no, row.book
                break
        here = Appearance(rec.section_pos, rec.section_id, book_no, book)
        return here, here

    def _entity_tables(
        self, resolution: Resolution
    ) -> tuple[list[EntityRow], list[AliasRow], list[AttributeRow]]:
        mentions_of: dict[int, list[int]] = defaultdict(list)
        for mi, rec in enumerate(self.collected.mention_record):
            mentions_of[resolution.cluster_of[rec]].append(mi)
        persons = person_types(self.collected.ontology)
        entities: list[EntityRow] = []
        aliases: list[AliasRow] = []
        attributes: list[AttributeRow] = []
        for ci, cluster in enumerate(resolution.clusters):
            members = cluster.members
            recs = [self.collected.entity_records[m] for m in members]
            mrows = [self.collected.mentions[i] for i in mentions_of.get(ci, [])]
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
            first_sec = self.collected.sections[recs[0].section_pos]
            last_sec = self.collected.sections[max(r.section_pos for r in recs)]
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
                    series=self.collected.series,
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
            first = self.collected.sections[min(positions)]
            uniq = sorted(set(positions))
            rows.append(
                AttributeRow(
                    series=self.collected.series,
                    entity_id=entity_id,
                    name=name,
                    value=value,
                    instance_count=len(positions),
                    first_book_no=first.book_no,
                    first_section=first.sid,
                    sections=[self.collected.sections[p].sid for p in uniq][:MAX_LIST],
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
            forms: dict[str, str] = {one_line(rec.name): "name"}
            for a in rec.aliases:
                forms.setdefault(one_line(a), "alias")
            for s in rec.surfaces:
                forms.setdefault(one_line(s), "mention")
            for surface, kind in forms.items():
                kinds[surface].add(kind)
                counts[surface] += 1
                sections[surface].add(rec.section_pos)
                first.setdefault(surface, rec.section_pos)
        first_book: dict[str, tuple[int | None, str | None]] = {}
        for row in mrows:
            line = one_line(row.surface)
            if line not in first_book and first.get(line) is not None:
                fsec = self.collected.sections[first[line]]
                if row.section_id == fsec.sid:
                    first_book[line] = (row.book_no, row.book)
        person = bool(recs) and recs[0].type in persons
        rows = []
        for surface in sorted(kinds, key=lambda s: (-counts[s], s)):
            pos = first.get(surface)
            sec = self.collected.sections[pos] if pos is not None else None
            book_no, book = first_book.get(
                surface, (sec.book_no, sec.book_title) if sec else (None, None)
            )
            rows.append(
                AliasRow(
                    series=self.collected.series,
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
                    series=self.collected.series,
                    merge_no=n,
                    decision=d.decision,
                    rule=d.rule,
                    key=d.key,
                    entity_id=left,
                    other_entity_id=right if right != left else None,
                    left_instance=self.collected.entity_records[d.left].label,
                    right_instance=self.collected.entity_records[d.right].label,
                    detail=d.detail,
                )
            )
        return rows

    def _failed_section(
        self, file_name: str, custom_id: str
    ) -> tuple[int | None, SectionFile | None]:
        """The section a failure is about: by file name, else by custom_id.

        A split half's custom_id is its section's with ``_a``/``_b`` added, so that is dropped
        first. ``(None, None)`` when neither names a section of the series.
        """
        pos = self.collected.by_file.get(file_name)
        if pos is None:
            stem = custom_id[:-2] if custom_id[-2:] in ("_a", "_b") else custom_id
            pos = self.collected.by_stem.get(stem)
        return pos, (self.collected.sections[pos].file if pos is not None else None)

    def _failure_rows(self, input_failures: Iterable[InputFailure]) -> list[FailureRow]:
        rows = list(self.collected.failures)
        done_sections = {p for p, s in enumerate(self.collected.sections) if s.custom_ids}
        for f in self.collected.provenance.failures():
            pos, sec = self._failed_section(f.file_name, f.custom_id)
            rows.append(
                FailureRow(
                    series=self.collected.series,
                    custom_id=f.custom_id,
                    section_id=sec.section_id if sec else None,
                    file_name=sec.file_name if sec else (f.file_name or None),
                    stage="batch",
                    failure_type=f.type,
                    message=f.message,
                    retryable=f.retryable,
                    resolved=f.custom_id in self.collected.results_seen or pos in done_sections,
                    batch_id=f.batch_id,
                )
            )
        for bad in input_failures:
            pos, sec = self._failed_section(bad.file_name or "", bad.custom_id)
            rows.append(
                FailureRow(
                    series=self.collected.series,
                    custom_id=bad.custom_id,
                    section_id=sec.section_id if sec else None,
                    file_name=sec.file_name if sec else bad.file_name,
                    stage=bad.stage,
                    failure_type=bad.failure_type,
                    message=bad.message,
                    retryable=False,
                    resolved=pos in done_sections,
                    batch_id=(p.batch_id if (p := self.collected.prov(bad.custom_id)) else None),
                )
            )
        for req in self.collected.provenance.requests:
            if not req.rejected:
                continue
            pos = self.collected.by_file.get(req.file_name)
            if pos is None:
                pos = self.collected.by_stem.get(req.custom_id)
            if pos is None:
                continue  # another series' result
            sec_row = self.collected.sections[pos]
            for kind, message in req.rejected:
                rows.append(
                    FailureRow(
                        series=self.collected.series,
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
        for s in self.collected.sections:
            if not s.custom_ids and s.file.file_name not in failed_sections:
                rows.append(
                    FailureRow(
                        series=self.collected.series,
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
        for s in self.collected.sections:
            meta = s.file.meta
            cids = sorted(s.custom_ids)
            prov = next((p for c in cids if (p := self.collected.prov(c)) is not None), None)
            if prov is None:
                prov = self.collected.prov(s.file.stem)
            status = (
                "extracted" if cids else ("failed" if s.file.file_name in failed else "missing")
            )
            rows.append(
                SectionRow(
                    series=self.collected.series,
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
                    status=status,
                    entity_instances=s.entity_instances,
                    relationship_instances=s.relationship_instances,
                    **trace_columns(prov),
                )
            )
        return rows

    def _stats(self, graph: KnowledgeGraph) -> GraphStats:
        quotes = [e for e in graph.evidence if e.status != "no_quote"]
        return GraphStats(
            sections=len(graph.sections),
            sections_with_results=sum(1 for s in graph.sections if s.status == "extracted"),
            result_files=self.collected.result_count,
            entity_instances=len(self.collected.entity_records),
            relationship_instances=len(self.collected.rel_records),
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
