"""Build the knowledge graph of one series from its sections and extraction results.

:func:`build_graph` is the single entry point the pipeline (CLI and Dagster alike) calls: a
:class:`~fantasy_kg.domain.graph.collect.GraphCollector` reads the results, a
:class:`~fantasy_kg.domain.graph.assemble.GraphAssembler` produces the tables. The output depends
only on the inputs, never on the order results arrive in. Why: docs/architecture.md, "Graph build".
"""

from collections.abc import Iterable, Sequence

from fantasy_kg.domain.graph.assemble import GraphAssembler
from fantasy_kg.domain.graph.collect import (
    MAX_LIST,
    GraphCollector,
    GraphConfig,
    InputFailure,
    ResultInput,
)
from fantasy_kg.domain.graph.models import KnowledgeGraph
from fantasy_kg.domain.graph.provenance import Provenance
from fantasy_kg.domain.schemas import Ontology
from fantasy_kg.domain.sections import SectionFile


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
    builder = GraphCollector(
        slug, sections, ontology, provenance or Provenance(), config or GraphConfig()
    )
    for item in results:
        builder.add_result(item)
    return GraphAssembler(builder).build(input_failures)


__all__ = ["MAX_LIST", "GraphConfig", "InputFailure", "ResultInput", "build_graph"]
