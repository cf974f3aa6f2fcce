"""Story time in SQL: ``chapters`` and ``graph_as_of`` on the sample series, built for real.

The expected facts were counted by hand in data/books/ashen_crown: each book has five
``Chapter N: Title`` headings; Orla Brack and Seren Marrow are never named in book 1 (``grep -c``
gives 0/8/0 for both), Orla first speaks in book 2 chapter 1 ("The Widow Queen") and Seren first
appears in book 2 chapter 2 ("The Veiled Lady", "Seren was the wife of Lord Varen"); Varen only
holds the Ashen Crown in book 3 ("the Ashen Crown slid from his burned head").
"""

from pathlib import Path

import duckdb
import pytest

from fantasy_kg.domain.story import CHAPTER_UNKNOWN
from fantasy_kg.pipeline.run import run_series
from fantasy_kg_tests.conftest import SAMPLE_SERIES


@pytest.fixture
def warehouse(sample_data_dir: Path) -> duckdb.DuckDBPyConnection:
    run_series(SAMPLE_SERIES, data_dir=sample_data_dir, backend="local")
    conn = duckdb.connect(str(sample_data_dir / "fantasy_kg.duckdb"), read_only=True)
    return conn


def _names(conn: duckdb.DuckDBPyConnection, *args: int) -> dict[str, set[str]]:
    marks = ", ".join("?" for _ in args)
    rows = conn.execute(
        f"SELECT kind, name FROM graph_as_of(?, {marks})", [SAMPLE_SERIES, *args]
    ).fetchall()
    out: dict[str, set[str]] = {"entity": set(), "relationship": set()}
    for kind, name in rows:
        out[kind].add(name)
    return out


def test_chapters_are_the_headings_of_each_book(warehouse: duckdb.DuckDBPyConnection) -> None:
    rows = warehouse.execute(
        "SELECT book_no, chapter_no, title FROM chapters WHERE series = ? ORDER BY 1, 2",
        [SAMPLE_SERIES],
    ).fetchall()
    assert [(b, c) for b, c, _ in rows] == [(b, c) for b in (1, 2, 3) for c in range(1, 6)]
    assert rows[0][2] == "Chapter 1: The Ferry at Dunmere"
    assert rows[6][2] == "Chapter 2: The Veiled Lady"
    assert rows[-1][2] == "Chapter 5: The Ashen Crown"


def test_as_of_book_1_hides_what_book_2_first_states(warehouse: duckdb.DuckDBPyConnection) -> None:
    book1 = _names(warehouse, 1)
    assert "Mira Thorne" in book1["entity"]
    assert "Orla Brack" not in book1["entity"]
    assert "Seren Marrow" not in book1["entity"]
    assert "Seren Marrow SPOUSE_OF Varen Malgrave" not in book1["relationship"]
    assert "Tomas Reed PARENT_OF Wenna" in book1["relationship"]  # book 1, chapter 1
    book2 = _names(warehouse, 2)
    assert {"Orla Brack", "Seren Marrow"} <= book2["entity"]
    assert "Seren Marrow SPOUSE_OF Varen Malgrave" in book2["relationship"]
    assert "Varen Malgrave POSSESSES Ashen Crown" not in book2["relationship"]
    assert "Varen Malgrave POSSESSES Ashen Crown" in _names(warehouse, 3)["relationship"]


def test_chapter_cut_inside_a_book(warehouse: duckdb.DuckDBPyConnection) -> None:
    ch1 = _names(warehouse, 2, 1)
    assert "Orla Brack" in ch1["entity"]
    assert "Seren Marrow" not in ch1["entity"]
    ch2 = _names(warehouse, 2, 2)
    assert "Seren Marrow" in ch2["entity"]
    assert "Seren Marrow SPOUSE_OF Varen Malgrave" in ch2["relationship"]
    # Every cut is monotone: a later point never knows less.
    assert _names(warehouse, 1)["entity"] <= ch1["entity"] <= ch2["entity"]


def test_the_last_point_knows_the_whole_graph(warehouse: duckdb.DuckDBPyConnection) -> None:
    counts = dict(
        warehouse.execute(
            "SELECT kind, count(*) FROM graph_as_of(?, 3) GROUP BY kind", [SAMPLE_SERIES]
        ).fetchall()
    )
    entities = warehouse.execute(
        "SELECT count(*) FROM entities WHERE series = ?", [SAMPLE_SERIES]
    ).fetchone()
    relationships = warehouse.execute(
        "SELECT count(*) FROM relationships WHERE series = ?", [SAMPLE_SERIES]
    ).fetchone()
    assert entities and relationships
    assert counts == {"entity": entities[0], "relationship": relationships[0]}
    # Grounded quotes all land in a real chapter (none before a heading, none unknown).
    chapters = warehouse.execute(
        "SELECT DISTINCT chapter_no FROM evidence_positions WHERE series = ?", [SAMPLE_SERIES]
    ).fetchall()
    assert {c for (c,) in chapters} <= set(range(1, 6))
    assert CHAPTER_UNKNOWN not in {c for (c,) in chapters}
