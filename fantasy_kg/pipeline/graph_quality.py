"""Measure entity resolution and grounding on a series with gold annotations.

Used by ``scripts/resolution_quality.py`` and by the test that keeps the F1 floor. The books are
sectioned exactly as ``fantasy-kg sections`` does (small sections, so names recur across many of
them and across book boundaries), then result files come from one of two sources:

Why it works this way: docs/architecture.md, "Graph build".
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fantasy_kg.domain.baseline.extractor import extract
from fantasy_kg.domain.catalog import default_model
from fantasy_kg.domain.graph.build import ResultInput, build_graph
from fantasy_kg.domain.graph.evaluation import (
    ClusterScores,
    Gold,
    load_gold,
    predicted_labels,
    results_from_gold,
    score_clusters,
)
from fantasy_kg.domain.graph.names import name_keys
from fantasy_kg.domain.schemas import Ontology, load_ontology, parse_extraction
from fantasy_kg.domain.sections import SectionFile, read_sections
from fantasy_kg.nlp.tagger import shared_tagger
from fantasy_kg.pipeline.sections import build_sections

Source = Literal["gold_surfaces", "baseline"]
DEFAULT_SECTION_TOKENS = 2500


@dataclass(frozen=True)
class QualityRun:
    """One measured combination of result source and ontology mode."""

    source: Source
    mode: str
    scores: ClusterScores
    grounding: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "source": self.source,
            "mode": self.mode,
            **self.scores.as_dict(),
            "grounding": self.grounding,
        }


def sample_sections(
    books_dir: Path, series: str, workdir: Path, max_section_tokens: int
) -> list[SectionFile]:
    """Section a series' books into ``workdir`` the way ``fantasy-kg sections`` does."""
    build_sections(
        books_dir,
        workdir,
        series=series,
        model=default_model(),
        max_section_tokens=max_section_tokens,
    )
    return read_sections(workdir, series)


def baseline_results(
    sections: list[SectionFile], ontology: Ontology, gold: Gold
) -> tuple[list[ResultInput], dict[tuple[str, str], str]]:
    """Run the local extractor on each section and label its instances with gold entities."""
    surfaces: dict[str, set[str]] = {}
    for ent in gold.entities:
        for s in (ent.name, *ent.aliases):
            surfaces.setdefault(name_keys(s, person=False).full, set()).add(ent.id)
    results: list[ResultInput] = []
    labels: dict[tuple[str, str], str] = {}
    for sec in sections:
        wire = extract(
            sec.text,
            ontology,
            file_name=sec.file_name,
            section_id=sec.section_id,
            tagger=shared_tagger(),
        )
        parsed = parse_extraction(
            wire.model_dump(mode="json"), file_name=sec.file_name, chunk_id=sec.section_id
        )
        results.append(ResultInput(custom_id=sec.stem, result=parsed.result))
        for inst in parsed.result.entities:
            owners = surfaces.get(name_keys(inst.name, person=False).full, set())
            if len(owners) == 1:
                labels[(sec.stem, inst.id)] = next(iter(owners))
    return results, labels


def _grounding(graph: Any, planted: dict[str, int] | None) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for e in graph.evidence:
        by_status[e.status] = by_status.get(e.status, 0) + 1
    out: dict[str, Any] = {
        "grounding_rate": round(graph.stats.grounding_rate, 4),
        "mention_grounding_rate": round(graph.stats.mention_grounding_rate, 4),
        "evidence_grounding_rate": round(graph.stats.evidence_grounding_rate, 4),
        "evidence_by_status": dict(sorted(by_status.items())),
    }
    if planted is not None:
        out["planted_quotes"] = dict(sorted(planted.items()))
    return out


def measure(
    books_dir: Path,
    gold_path: Path,
    ontology_path: Path,
    series: str,
    *,
    sources: tuple[Source, ...] = ("gold_surfaces", "baseline"),
    max_section_tokens: int = DEFAULT_SECTION_TOKENS,
) -> list[QualityRun]:
    """Score resolution (B-cubed and pairwise F1) and grounding for each source and mode."""
    gold = load_gold(gold_path)
    ontology = load_ontology(ontology_path)
    modes = {
        "rules": ontology,
        "names_only": ontology.model_copy(update={"canonical_rules": []}),
    }
    runs: list[QualityRun] = []
    with tempfile.TemporaryDirectory(prefix="fantasy_kg_quality_") as tmp:
        sections = sample_sections(books_dir, series, Path(tmp), max_section_tokens)
        for source in sources:
            for mode, onto in modes.items():
                planted: dict[str, int] | None = None
                if source == "gold_surfaces":
                    generated = results_from_gold(gold, sections)
                    results, labels = generated.results, generated.labels
                    planted = generated.planted
                else:  # the extractor sees the same ontology as resolution
                    results, labels = baseline_results(sections, onto, gold)
                graph = build_graph(sections, results, onto, series=series)
                scores = score_clusters(predicted_labels(graph), labels)
                runs.append(QualityRun(source, mode, scores, _grounding(graph, planted)))
    return runs
