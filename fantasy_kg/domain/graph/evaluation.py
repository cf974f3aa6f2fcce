"""Measure entity resolution and grounding against gold annotations (``data/gold/<series>.json``).

Why it works this way: docs/architecture.md, "Graph build".
"""

import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.domain.graph.build import ResultInput
from fantasy_kg.domain.graph.models import KnowledgeGraph
from fantasy_kg.domain.graph.names import snake_id
from fantasy_kg.domain.schemas import (
    Confidence,
    EntityInstance,
    Evidence,
    ExtractionResult,
    Mention,
    RelationshipInstance,
)
from fantasy_kg.domain.sections import SectionFile


class GoldEntity(BaseModel):
    """A gold entity: id, type, canonical name and every alias the books use."""

    model_config = ConfigDict(extra="ignore")

    id: str
    type: str
    name: str
    aliases: list[str] = Field(default_factory=list)


class GoldRelationship(BaseModel):
    """A gold relationship with one evidence quote and the book it is in."""

    model_config = ConfigDict(extra="ignore")

    source: str
    type: str
    target: str
    evidence: str = ""
    book: str = ""


class Gold(BaseModel):
    """The gold file of a series."""

    model_config = ConfigDict(extra="ignore")

    series: str = ""
    entities: list[GoldEntity]
    relationships: list[GoldRelationship] = Field(default_factory=list)


def load_gold(path: Path) -> Gold:
    """Read a gold file.

    Raises:
        InputFileError: missing, not JSON, or not in the gold shape (one line, with the field).
    """
    try:
        return Gold.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise InputFileError(f"gold file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{path}: line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InputFileError(f"{path}: field {loc}: {err['msg']}") from exc


@dataclass(slots=True)
class GoldResults:
    """Generated result files plus the truth about them."""

    results: list[ResultInput]
    labels: dict[tuple[str, str], str]  # (custom_id, raw entity id) -> gold entity id
    planted: dict[str, int] = field(default_factory=dict)  # perturbation kind -> count


def _occurs(text: str, surface: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(surface)}(?!\w)", text) is not None


def _retypeset(quote: str) -> str:
    """Typographic quotes and one line break: what re-flowed or 'smart' text looks like."""
    out = quote.replace("'", "\u2019")
    out = re.sub(r'"([^"]*)"', "\u201c\\1\u201d", out)
    words = out.split(" ")
    if len(words) > 3:
        mid = len(words) // 2
        out = " ".join(words[:mid]) + "\n" + " ".join(words[mid:])
    return out


def _misspell(quote: str) -> str:
    """One letter changed in the longest word: a near-verbatim copy (fuzzy territory)."""
    words = quote.split(" ")
    i = max(range(len(words)), key=lambda k: (len(words[k]), -k))
    w = words[i]
    if len(w) > 3:
        words[i] = w[:2] + ("e" if w[2] != "e" else "a") + w[3:]
    return " ".join(words)


class _SectionEntities:
    """The entity instances generated for one section (one per distinct surface id)."""

    def __init__(
        self,
        sec: SectionFile,
        by_id: Mapping[str, GoldEntity],
        labels: dict[tuple[str, str], str],
    ) -> None:
        self.sec = sec
        self.by_id = by_id
        self.labels = labels
        self.entities: list[EntityInstance] = []
        self.present: dict[str, list[str]] = defaultdict(list)  # gold id -> raw ids here
        self.used: set[str] = set()

    def add(self, surface: str, gold_id: str) -> None:
        raw = snake_id(surface)
        if raw in self.used:
            return
        self.used.add(raw)
        mention = Mention(file_name=self.sec.file_name, chunk_id=self.sec.section_id, text=surface)
        self.entities.append(
            EntityInstance(
                id=raw,
                type=self.by_id[gold_id].type,
                name=surface,
                mentions=[mention],
                confidence=Confidence(score=0.9),
            )
        )
        self.labels[(self.sec.stem, raw)] = gold_id
        self.present[gold_id].append(raw)


def results_from_gold(
    gold: Gold, sections: Sequence[SectionFile], *, perturb: bool = True
) -> GoldResults:
    """Build one result per section from the gold (see the module docstring).

    Args:
        gold: The gold annotations.
        sections: The series' sections (their texts decide where each surface occurs).
        perturb: Alter a deterministic share of evidence quotes (every 4th re-typeset, every 4th
            misspelt, every 10th replaced by an invented sentence).

    Returns:
        Results keyed by section stem (the default custom_id), the gold label of each generated
        entity instance, and how many quotes of each kind were planted.
    """
    by_id = {e.id: e for e in gold.entities}
    # Bare first/last names of multi-word names, so resolution meets "Tomas" and "Sable" too.
    parts: dict[str, set[str]] = defaultdict(set)
    for e in gold.entities:
        if e.type == "Character":
            words = e.name.split()
            if len(words) > 1:
                parts[words[0]].add(e.id)
                parts[words[-1]].add(e.id)
    out: list[ResultInput] = []
    labels: dict[tuple[str, str], str] = {}
    planted: dict[str, int] = defaultdict(int)
    quote_no = 0
    for sec in sections:
        cid = sec.stem
        here = _SectionEntities(sec, by_id, labels)
        full_here: set[str] = set()
        for e in gold.entities:
            for surface in dict.fromkeys([e.name, *e.aliases]):
                if _occurs(sec.text, surface):
                    here.add(surface, e.id)
                    full_here.add(e.id)
        for part, owners in sorted(parts.items()):
            if part in {s for e in gold.entities for s in (e.name, *e.aliases)}:
                continue  # already a gold alias
            if not _occurs(sec.text, part):
                continue
            owner = sorted(owners & full_here)
            if len(owner) == 1:
                here.add(part, owner[0])

        rels: list[RelationshipInstance] = []
        for rel in gold.relationships:
            if not rel.evidence or rel.evidence not in sec.text:
                continue
            quote_no += 1
            quote = rel.evidence
            if perturb and quote_no % 10 == 3:
                quote = f"{by_id[rel.source].name} swore an oath of friendship on the bridge."
                planted["invented"] += 1
            elif perturb and quote_no % 4 == 1:
                quote = _retypeset(quote)
                planted["retypeset"] += 1
            elif perturb and quote_no % 4 == 2:
                quote = _misspell(quote)
                planted["misspelt"] += 1
            else:
                planted["verbatim"] += 1
            ends = []
            for gid in (rel.source, rel.target):
                raws = here.present.get(gid)
                full = snake_id(by_id[gid].name)
                ends.append(full if not raws or full in raws else raws[0])
            if ends[0] == ends[1]:
                continue
            rels.append(
                RelationshipInstance(
                    source=ends[0],
                    target=ends[1],
                    type=rel.type,
                    description=f"{by_id[rel.source].name} {rel.type} {by_id[rel.target].name}",
                    evidence=[
                        Evidence(quote=quote, file_name=sec.file_name, chunk_id=sec.section_id)
                    ],
                    confidence=Confidence(score=0.8),
                )
            )
        out.append(
            ResultInput(
                custom_id=cid,
                result=ExtractionResult(entities=here.entities, relationships=rels),
                source=f"gold:{cid}",
            )
        )
    return GoldResults(results=out, labels=labels, planted=dict(planted))


@dataclass(frozen=True, slots=True)
class ClusterScores:
    """Precision, recall and F1 of a clustering, B-cubed and pairwise."""

    instances: int
    predicted_clusters: int
    gold_clusters: int
    b3_precision: float
    b3_recall: float
    b3_f1: float
    pair_precision: float
    pair_recall: float
    pair_f1: float

    def as_dict(self) -> dict[str, Any]:
        """Rounded numbers for printing."""
        return {
            k: round(v, 4) if isinstance(v, float) else v
            for k, v in (
                ("instances", self.instances),
                ("predicted_clusters", self.predicted_clusters),
                ("gold_clusters", self.gold_clusters),
                ("b3_precision", self.b3_precision),
                ("b3_recall", self.b3_recall),
                ("b3_f1", self.b3_f1),
                ("pair_precision", self.pair_precision),
                ("pair_recall", self.pair_recall),
                ("pair_f1", self.pair_f1),
            )
        }


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def score_clusters(predicted: Mapping[Any, str], truth: Mapping[Any, str]) -> ClusterScores:
    """Compare two clusterings of the same instances (instance -> cluster label).

    Only instances present in both mappings are scored.
    """
    keys = [k for k in truth if k in predicted]
    pred_members: dict[str, list[Any]] = defaultdict(list)
    gold_members: dict[str, list[Any]] = defaultdict(list)
    for k in keys:
        pred_members[predicted[k]].append(k)
        gold_members[truth[k]].append(k)
    overlap: dict[tuple[str, str], int] = defaultdict(int)
    for k in keys:
        overlap[(predicted[k], truth[k])] += 1
    n = len(keys)
    if n == 0:
        return ClusterScores(0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    b3_p = sum(overlap[(predicted[k], truth[k])] / len(pred_members[predicted[k]]) for k in keys)
    b3_r = sum(overlap[(predicted[k], truth[k])] / len(gold_members[truth[k]]) for k in keys)
    b3_p, b3_r = b3_p / n, b3_r / n

    def pairs(m: int) -> int:
        return m * (m - 1) // 2

    tp = sum(pairs(c) for c in overlap.values())
    pred_pairs = sum(pairs(len(v)) for v in pred_members.values())
    gold_pairs = sum(pairs(len(v)) for v in gold_members.values())
    pp = tp / pred_pairs if pred_pairs else 1.0
    pr = tp / gold_pairs if gold_pairs else 1.0
    return ClusterScores(
        instances=n,
        predicted_clusters=len(pred_members),
        gold_clusters=len(gold_members),
        b3_precision=b3_p,
        b3_recall=b3_r,
        b3_f1=_f1(b3_p, b3_r),
        pair_precision=pp,
        pair_recall=pr,
        pair_f1=_f1(pp, pr),
    )


def predicted_labels(graph: KnowledgeGraph) -> dict[tuple[str, str], str]:
    """(custom_id, raw entity id) -> resolved entity id, read from the graph's mention rows."""
    return {(m.custom_id, m.raw_entity_id): m.entity_id for m in graph.mentions}
