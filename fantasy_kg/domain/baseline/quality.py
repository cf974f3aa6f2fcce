"""Score extraction results against gold annotations (pure functions, no I/O beyond reading gold).

Matching is alias-aware, as a reader would judge it; evidence counts when quoted verbatim. The
rules: docs/architecture.md, "The embedded extractor".
"""

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.domain.schemas import ExtractionResult

_WS_RE = re.compile(r"\s+")


def normalize_name(name: str) -> str:
    """Case-, whitespace- and article-insensitive form of a name, for matching only."""
    norm = _WS_RE.sub(" ", name).strip().lower()
    return norm[4:] if norm.startswith("the ") else norm


@dataclass(frozen=True)
class GoldEntity:
    """A gold entity and every name it may be found under."""

    id: str
    type: str
    names: frozenset[str]


@dataclass(frozen=True)
class GoldRelationship:
    """A gold relationship between gold entity ids."""

    source: str
    type: str
    target: str


@dataclass(frozen=True)
class Gold:
    """Gold annotations of one series."""

    series: str
    entities: tuple[GoldEntity, ...]
    relationships: tuple[GoldRelationship, ...]


def load_gold(path: Path) -> Gold:
    """Read a gold file.

    Raises:
        InputFileError: if the file is missing, not JSON, or lacks the expected lists.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputFileError(f"gold file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise InputFileError(f"malformed gold file {path}: line {exc.lineno}: {exc.msg}") from exc
    try:
        entities = tuple(
            GoldEntity(
                id=str(e["id"]),
                type=str(e["type"]),
                names=frozenset(
                    normalize_name(n) for n in [e["name"], *e.get("aliases", [])] if n.strip()
                ),
            )
            for e in data["entities"]
        )
        rels = tuple(
            GoldRelationship(source=str(r["source"]), type=str(r["type"]), target=str(r["target"]))
            for r in data["relationships"]
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputFileError(
            f"invalid gold file {path}: expected entities[{{id,type,name,aliases}}] and "
            f"relationships[{{source,type,target}}] ({exc})"
        ) from exc
    return Gold(series=str(data.get("series", "")), entities=entities, relationships=rels)


@dataclass(frozen=True)
class SectionOutput:
    """One section's extraction result together with the text it was extracted from."""

    text: str
    result: ExtractionResult


@dataclass
class MergedEntity:
    """An extracted entity merged across sections by ``(type, id)``."""

    type: str
    id: str
    names: set[str] = field(default_factory=set)


@dataclass
class PRScore:
    """Precision and recall with the counts behind them."""

    precision: float
    recall: float
    extracted: int
    extracted_correct: int
    gold: int
    gold_found: int

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (0 when both are 0)."""
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


def _pr(extracted: int, correct: int, gold: int, found: int) -> PRScore:
    return PRScore(
        precision=correct / extracted if extracted else 0.0,
        recall=found / gold if gold else 0.0,
        extracted=extracted,
        extracted_correct=correct,
        gold=gold,
        gold_found=found,
    )


@dataclass
class QualityReport:
    """Everything :func:`score` measures."""

    series: str
    sections: int
    entities_by_type: dict[str, PRScore]
    entities_overall: PRScore
    relationships_by_type: dict[str, PRScore]
    relationships_overall: PRScore
    evidence_quotes: int
    evidence_verbatim: int
    missed_entities: list[str] = field(default_factory=list)
    spurious_entities: list[str] = field(default_factory=list)
    missed_relationships: list[str] = field(default_factory=list)
    wrong_relationships: list[str] = field(default_factory=list)

    @property
    def evidence_verbatim_share(self) -> float:
        """Share of evidence quotes found verbatim in their section (1.0 when there are none)."""
        return self.evidence_verbatim / self.evidence_quotes if self.evidence_quotes else 1.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with f1 and the evidence share spelled out."""

        def pr(s: PRScore) -> dict[str, Any]:
            return {**asdict(s), "f1": s.f1}

        return {
            "series": self.series,
            "sections": self.sections,
            "entities": {
                "overall": pr(self.entities_overall),
                "by_type": {k: pr(v) for k, v in self.entities_by_type.items()},
            },
            "relationships": {
                "overall": pr(self.relationships_overall),
                "by_type": {k: pr(v) for k, v in self.relationships_by_type.items()},
            },
            "evidence": {
                "quotes": self.evidence_quotes,
                "verbatim": self.evidence_verbatim,
                "verbatim_share": self.evidence_verbatim_share,
            },
            "missed_entities": self.missed_entities,
            "spurious_entities": self.spurious_entities,
            "missed_relationships": self.missed_relationships,
            "wrong_relationships": self.wrong_relationships,
        }


def merge_entities(outputs: Sequence[SectionOutput]) -> dict[tuple[str, str], MergedEntity]:
    """Merge extracted entities across sections by ``(type, id)``, pooling their names."""
    merged: dict[tuple[str, str], MergedEntity] = {}
    for out in outputs:
        for ent in out.result.entities:
            key = (ent.type, ent.id)
            m = merged.setdefault(key, MergedEntity(type=ent.type, id=ent.id))
            for name in (ent.name, *ent.aliases):
                if name.strip():
                    m.names.add(normalize_name(name))
    return merged


def gold_matches(entity: MergedEntity, gold: Gold) -> set[str]:
    """Ids of the gold entities of the same type that share a name with ``entity``."""
    return {g.id for g in gold.entities if g.type == entity.type and g.names & entity.names}


def score(
    outputs: Sequence[SectionOutput],
    gold: Gold,
    *,
    undirected: Iterable[str] = (),
) -> QualityReport:
    """Score extraction outputs of a whole series against its gold annotations.

    Args:
        outputs: Every section's result with its text.
        gold: The series' gold annotations.
        undirected: Relationship types whose direction does not matter (SIBLING_OF, ...).
    """
    symmetric = {t.upper() for t in undirected}
    merged = merge_entities(outputs)
    matches = {key: gold_matches(m, gold) for key, m in merged.items()}

    types = sorted({g.type for g in gold.entities} | {m.type for m in merged.values()})
    by_type: dict[str, PRScore] = {}
    found_gold: set[str] = set()
    for etype in types:
        mine = [k for k in merged if k[0] == etype]
        golds = [g for g in gold.entities if g.type == etype]
        correct = sum(1 for k in mine if matches[k])
        hit = {gid for k in mine for gid in matches[k]}
        found_gold |= hit
        by_type[etype] = _pr(len(mine), correct, len(golds), len(hit))
    overall = _pr(
        len(merged),
        sum(1 for k in merged if matches[k]),
        len(gold.entities),
        len(found_gold),
    )
    missed = sorted(f"{g.type}:{g.id}" for g in gold.entities if g.id not in found_gold)
    spurious = sorted(f"{k[0]}:{k[1]}" for k in merged if not matches[k])

    gold_set = {(r.source, r.type.upper(), r.target) for r in gold.relationships}
    extracted: dict[tuple[tuple[str, str], str, tuple[str, str]], str] = {}
    quotes = verbatim = 0
    for out in outputs:
        ids = {e.id: (e.type, e.id) for e in out.result.entities}
        for rel in out.result.relationships:
            for ev in rel.evidence:
                quotes += 1
                verbatim += ev.quote in out.text
            src, tgt = ids.get(rel.source), ids.get(rel.target)
            if src is None or tgt is None:
                continue
            key = (src, rel.type.upper(), tgt)
            if rel.type.upper() in symmetric and tgt < src:
                key = (tgt, rel.type.upper(), src)
            extracted.setdefault(key, f"{src[1]} {rel.type.upper()} {tgt[1]}")

    def rel_hits(key: tuple[tuple[str, str], str, tuple[str, str]]) -> set[tuple[str, str, str]]:
        src, rtype, tgt = key
        hits: set[tuple[str, str, str]] = set()
        for s in matches.get(src, ()):
            for t in matches.get(tgt, ()):
                if (s, rtype, t) in gold_set:
                    hits.add((s, rtype, t))
                if rtype in symmetric and (t, rtype, s) in gold_set:
                    hits.add((t, rtype, s))
        return hits

    rel_types = sorted({r.type.upper() for r in gold.relationships} | {k[1] for k in extracted})
    rel_by_type: dict[str, PRScore] = {}
    all_hits: set[tuple[str, str, str]] = set()
    wrong: list[str] = []
    correct_total = 0
    for rtype in rel_types:
        mine_r = [k for k in extracted if k[1] == rtype]
        hits_r: set[tuple[str, str, str]] = set()
        correct = 0
        for k in mine_r:
            h = rel_hits(k)
            if h:
                correct += 1
                hits_r |= h
            else:
                wrong.append(extracted[k])
        correct_total += correct
        all_hits |= hits_r
        gold_r = [g for g in gold_set if g[1] == rtype]
        rel_by_type[rtype] = _pr(len(mine_r), correct, len(gold_r), len(hits_r))
    rel_overall = _pr(len(extracted), correct_total, len(gold_set), len(all_hits))
    missed_rels = sorted(f"{s} {t} {o}" for s, t, o in gold_set - all_hits)

    return QualityReport(
        series=gold.series,
        sections=len(outputs),
        entities_by_type=by_type,
        entities_overall=overall,
        relationships_by_type=rel_by_type,
        relationships_overall=rel_overall,
        evidence_quotes=quotes,
        evidence_verbatim=verbatim,
        missed_entities=missed,
        spurious_entities=spurious,
        missed_relationships=missed_rels,
        wrong_relationships=sorted(wrong),
    )


def format_table(report: QualityReport, *, title: str = "") -> str:
    """A plain-text table of the report (what the quality script prints)."""
    lines = []
    if title:
        lines.append(title)
    lines.append(f"series {report.series}: {report.sections} section(s)")
    header = f"{'':<28}{'precision':>10}{'recall':>8}{'f1':>7}{'extracted':>11}{'gold':>6}"
    lines.append(header)
    lines.append("-" * len(header))

    def row(label: str, s: PRScore) -> str:
        return (
            f"{label:<28}{s.precision:>10.3f}{s.recall:>8.3f}{s.f1:>7.3f}"
            f"{s.extracted:>11}{s.gold:>6}"
        )

    lines.append(row("entities (all types)", report.entities_overall))
    for etype, s in report.entities_by_type.items():
        lines.append(row(f"  {etype}", s))
    lines.append(row("relationships (all types)", report.relationships_overall))
    for rtype, s in report.relationships_by_type.items():
        lines.append(row(f"  {rtype}", s))
    lines.append(
        f"evidence quotes found verbatim: {report.evidence_verbatim}/{report.evidence_quotes}"
        f" ({report.evidence_verbatim_share:.1%})"
    )
    return "\n".join(lines)
