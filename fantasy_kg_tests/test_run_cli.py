"""The README's main job, ``fantasy-kg run``, end to end in a real subprocess with no API key.

Checks the invariants a newcomer relies on: the whole chain produces validated result files and a
DuckDB graph; a second run of the unchanged series submits nothing, costs $0 and leaves every
table identical.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb

from fantasy_kg.domain.schemas import ExtractionResult

TABLES = ("sections", "entities", "entity_aliases", "mentions", "relationships", "evidence")


def _run(data_dir: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env["FANTASY_KG_DATA_DIR"] = str(data_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "fantasy_kg", "run", "--series", "ashen_crown"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "backend=local" in proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def _snapshot(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect(str(db), read_only=True) as conn:
        snap: dict[str, list[tuple[Any, ...]]] = {}
        for table in TABLES:
            cols = [r[0] for r in conn.execute(f"DESCRIBE {table}").fetchall()]
            stable = [c for c in cols if c not in ("loaded_at", "load_run_id", "run_id")]
            order = ", ".join(f'"{c}"' for c in stable)
            snap[table] = conn.execute(f"SELECT {order} FROM {table} ORDER BY {order}").fetchall()
        return snap


def test_run_builds_the_graph_and_a_rerun_is_free_and_identical(sample_data_dir: Path) -> None:
    first = _run(sample_data_dir)
    assert first["extraction"]["written"] == first["extraction"]["sections"] >= 1
    assert first["extraction"]["failed"] == 0
    graph = first["graph"][0]
    assert graph["entities"] > 10
    assert graph["relationships"] > 10
    results = sorted((sample_data_dir / "extracted").glob("*_extracted.json"))
    assert results
    for path in results:
        ExtractionResult.model_validate_json(path.read_text(encoding="utf-8"))
    jobs_before = sorted((sample_data_dir / "batch_jobs").glob("*.json"))
    db = sample_data_dir / "fantasy_kg.duckdb"
    before = _snapshot(db)

    second = _run(sample_data_dir)
    assert second["extraction"]["batches"] == []
    assert second["extraction"]["cost_usd"]["batch"] == 0.0
    assert sorted((sample_data_dir / "batch_jobs").glob("*.json")) == jobs_before
    assert _snapshot(db) == before


def _occurrences(text: str, names: list[str]) -> int:
    """Word-bounded, case-sensitive occurrences of any of ``names``, longest first, no overlap."""
    taken = bytearray(len(text) + 1)
    count = 0
    for name in sorted(set(names), key=len, reverse=True):
        for m in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text):
            if not any(taken[m.start() : m.end()]):
                taken[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
                count += 1
    return count


def test_mention_count_of_the_main_character_is_the_number_of_its_occurrences(
    sample_data_dir: Path,
) -> None:
    _run(sample_data_dir)
    with duckdb.connect(str(sample_data_dir / "fantasy_kg.duckdb"), read_only=True) as conn:
        (entity_id, mention_count, section_count, first_book, last_book) = conn.execute(
            "SELECT entity_id, mention_count, section_count, first_book, last_book "
            "FROM entities WHERE name = 'Mira Thorne'"
        ).fetchone() or (None, 0, 0, None, None)
        surfaces = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT surface FROM mentions WHERE entity_id = ?", [entity_id]
            ).fetchall()
        ]
        books_with = conn.execute(
            "SELECT min(book_no), max(book_no), count(DISTINCT section_id) FROM mentions "
            "WHERE entity_id = ?",
            [entity_id],
        ).fetchone()
    assert entity_id is not None and mention_count > 0
    # Counted independently, on the book files themselves, for the names the graph gives her.
    books = sorted((sample_data_dir / "books" / "ashen_crown").glob("*.txt"))
    expected = sum(_occurrences(b.read_text(encoding="utf-8"), surfaces) for b in books)
    assert mention_count == expected, (surfaces, mention_count, expected)
    assert {"Mira Thorne", "Mira"} <= set(surfaces)
    assert books_with is not None and books_with[2] == section_count
    assert first_book is not None and last_book is not None
