"""Property tests over the graph builder and the warehouse load with hostile extraction results.

Results are drawn as wire answers full of hostile strings, validated by the real parser, then
spread over real section files (made by ``fantasy-kg sections``). The builder promises that its
output depends only on its inputs, never on their order, and that every row ties back to an
entity, a relationship and a section; the warehouse promises that whatever the builder emits
loads with parameterized SQL and leaves every table intact.
"""

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fantasy_kg.domain.graph.build import ResultInput, build_graph
from fantasy_kg.domain.graph.models import KnowledgeGraph
from fantasy_kg.domain.schemas import default_ontology, parse_extraction
from fantasy_kg.domain.sections import SectionFile, read_sections
from fantasy_kg.warehouse.load import connect, load_series, row_counts
from fantasy_kg.warehouse.migrations import TABLES
from fantasy_kg_tests.reliability import hostile
from fantasy_kg_tests.reliability.harness import run_cli_inprocess, synthetic_book, write_book

SCENARIO_CATEGORY = "Hostile model output"
SERIES = "prop_series"


@pytest.fixture(scope="module")
def sections(tmp_path_factory: pytest.TempPathFactory) -> list[SectionFile]:
    root = tmp_path_factory.mktemp("graphprop")
    write_book(root / "books" / SERIES, "01_book.txt", synthetic_book(40, seed=2))
    res = run_cli_inprocess(
        "sections",
        "--books-dir",
        str(root / "books"),
        "--output-dir",
        str(root / "sections"),
        "--max-section-tokens",
        "900",
    )
    assert res.exit_code == 0, res.stderr
    secs = read_sections(root / "sections", SERIES)
    assert len(secs) >= 3
    return secs


_pool = [
    *hostile.HOSTILE_STRINGS.values(),
    "Mira Thorne",
    "Aldous Thorne",
    "Kestrel Vane",
    "mira_thorne",
    "Emberfall",
    "the Ashen Keep",
]
_text = st.one_of(st.sampled_from(_pool), st.text(max_size=30))
_types = st.sampled_from(["Character", "Location", "Organization", "character", "🐉", "x'; --"])
_rel_types = st.sampled_from(["ENEMY_OF", "PARENT_OF", "LOVES", "enemy of", "'; DROP TABLE x"])
_conf = st.floats(min_value=0.0, max_value=1.0)


@st.composite
def _answer(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(_text, max_size=6))
    ents = [
        hostile.entity(
            eid,
            draw(_text),
            type=draw(_types),
            aliases=draw(st.lists(_text, max_size=2)),
            mentions=draw(st.lists(_text, max_size=2)),
            attributes=[{"name": draw(_text), "value": draw(_text)}],
            confidence=draw(_conf),
        )
        for eid in ids
    ]
    pool = ids or ["a", "b"]
    rels = [
        hostile.relationship(
            draw(st.sampled_from(pool)),
            draw(st.sampled_from(pool)),
            type=draw(_rel_types),
            evidence=draw(st.lists(_text, max_size=2)),
            confidence=draw(_conf),
        )
        for _ in range(draw(st.integers(0, 5)))
    ]
    proposals = [
        {
            "proposal_type": "new_relationship_type",
            "name": draw(_text),
            "description": draw(_text),
            "rationale": "",
            "source_types": [],
            "target_types": [],
            "examples": [draw(_text)],
        }
        for _ in range(draw(st.integers(0, 1)))
    ]
    return hostile.answer(ents, rels, proposals)


def _inputs(sections: list[SectionFile], answers: list[dict[str, Any]]) -> list[ResultInput]:
    out = []
    for i, doc in enumerate(answers):
        sec = sections[i % len(sections)]
        parsed = parse_extraction(
            json.dumps(doc), file_name=sec.file_name, chunk_id=sec.file_name.split("_")[-1][:2]
        )
        out.append(ResultInput(custom_id=sec.stem, result=parsed.result))
    return out


def _dedupe_by_section(inputs: list[ResultInput]) -> list[ResultInput]:
    seen: dict[str, ResultInput] = {}
    for item in inputs:
        seen.setdefault(item.custom_id, item)
    return list(seen.values())


def _rows(graph: KnowledgeGraph) -> dict[str, list[Any]]:
    """Every table's rows, in the order the builder emits them."""
    return {name: list(rows) for name, rows in graph.tables().items()}


def assert_graph_sound(graph: KnowledgeGraph, sections: list[SectionFile]) -> None:
    ids = [e.entity_id for e in graph.entities]
    assert len(ids) == len(set(ids)), "duplicate entity ids"
    known = set(ids)
    for m in graph.mentions:
        assert m.entity_id in known
        if m.section_char_start is not None:
            assert m.section_char_end is not None
            assert 0 <= m.section_char_start <= m.section_char_end
    for a in graph.aliases:
        assert a.entity_id in known
    rel_ids = {r.relationship_id for r in graph.relationships}
    assert len(rel_ids) == len(graph.relationships)
    for r in graph.relationships:
        if not r.orphan:
            assert {r.source_id, r.target_id} <= known
        assert 0.0 <= r.confidence <= 1.0 and math.isfinite(r.confidence)
    for ev in graph.evidence:
        assert ev.relationship_id in rel_ids
    for e in graph.entities:
        assert 0.0 <= e.confidence <= 1.0 and math.isfinite(e.confidence)
    section_ids = {s.section_id for s in graph.sections}
    assert len(section_ids) == len(sections)
    assert {m.section_id for m in graph.mentions} <= section_ids
    assert {ev.section_id for ev in graph.evidence} <= section_ids
    # Every value can be written by the warehouse's JSON encoder (UTF-8, no NaN).
    for rows in graph.tables().values():
        for row in rows:
            json.dumps([getattr(row, f) for f in row.__slots__], allow_nan=False).encode("utf-8")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers=st.lists(_answer(), min_size=1, max_size=4))
def _property_builder(sections: list[SectionFile], answers: list[dict[str, Any]]) -> None:
    inputs = _dedupe_by_section(_inputs(sections, answers))
    onto = default_ontology(SERIES)
    graph = build_graph(sections, inputs, onto, series=SERIES)
    assert_graph_sound(graph, sections)
    again = build_graph(sections, list(reversed(inputs)), onto, series=SERIES)
    assert _rows(again) == _rows(graph), "result order changed the graph"


@pytest.mark.scenario(
    id="output-graph-builder-property",
    injected="hypothesis: 60 sets of parsed hostile answers (ids/names/types/aliases/evidence "
    "from hostile strings and arbitrary Unicode, SQL-like relationship types) spread over real "
    "section files",
    checked="build never raises; entity and relationship ids unique; every mention, alias and "
    "evidence row points at an existing entity/relationship/section; confidences finite in "
    "[0,1]; every row JSON/UTF-8 encodable; reversing the result order gives identical tables",
)
def test_graph_builder_property(sections: list[SectionFile]) -> None:
    _property_builder(sections)


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    conn = connect(tmp_path / "prop.duckdb")
    try:
        yield conn
    finally:
        conn.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers=st.lists(_answer(), min_size=1, max_size=3))
def _property_load(
    sections: list[SectionFile], conn: duckdb.DuckDBPyConnection, answers: list[dict[str, Any]]
) -> None:
    inputs = _dedupe_by_section(_inputs(sections, answers))
    graph = build_graph(sections, inputs, default_ontology(SERIES), series=SERIES)
    load_series(conn, graph, input_dir=Path("."), extracted_dir=Path("."))
    counts = row_counts(conn, SERIES)
    for name, rows in graph.tables().items():
        assert counts.get(name, 0) == len(rows), name
    stored = {
        r[0]
        for r in conn.execute(
            "SELECT entity_id FROM entities WHERE series = ?", [SERIES]
        ).fetchall()
    }
    assert stored == {e.entity_id for e in graph.entities}
    # Loading the same series again replaces its rows: no duplicates, other tables intact.
    load_series(conn, graph, input_dir=Path("."), extracted_dir=Path("."))
    again = row_counts(conn, SERIES)
    again.pop("load_runs", None)  # the load log gains one row per load, by design
    counts.pop("load_runs", None)
    assert again == counts
    present = {
        r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    assert set(TABLES) <= present


@pytest.mark.scenario(
    id="output-warehouse-load-property",
    injected="hypothesis: 15 hostile graphs (quotes, '; DROP TABLE, NUL-free control text, "
    "emoji, RTL, 10,000-char strings) loaded twice into one DuckDB file",
    checked="every table's row count equals the builder's rows; entity ids stored verbatim; the "
    "second load replaces instead of duplicating; every warehouse table still exists",
)
def test_warehouse_load_property(
    sections: list[SectionFile], warehouse: duckdb.DuckDBPyConnection
) -> None:
    _property_load(sections, warehouse)


@pytest.mark.scenario(
    id="output-graph-proposal-order",
    injected="two sections propose the same new attribute spelled 'Sword Hand' and 'sword hand'; "
    "results fed in section order, then reversed",
    checked="identical schema_proposals rows either way (build_graph promises order-free output)",
)
def test_proposal_names_do_not_depend_on_result_order(sections: list[SectionFile]) -> None:
    docs = [
        hostile.answer(
            [hostile.entity("mira", "Mira Thorne", attributes=[{"name": n, "value": "left"}])]
        )
        for n in ("Sword Hand", "sword hand")
    ]
    inputs = _inputs(sections, docs)
    onto = default_ontology(SERIES)
    forward = build_graph(sections, inputs, onto, series=SERIES)
    backward = build_graph(sections, list(reversed(inputs)), onto, series=SERIES)
    assert [p for p in forward.proposals if "sword" in p.name.lower()]
    assert forward.proposals == backward.proposals
