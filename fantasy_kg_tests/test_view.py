"""``fantasy-kg view``: the page is built from a real warehouse and drawn by a real browser.

The browser tests open the written file from file:// in Debian's headless Chromium (through
``scripts/view_check.py``, in a subprocess, as the Dagster UI test does) and check what a reader
sees: no console error, no request outside the file, every entity of the series drawn, an entity
found by one of its aliases, and the "end of book 1" cut hiding a relationship first stated in
book 2 (Seren Marrow, wife of Lord Varen, appears in book 2 chapter 2 of the sample).
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from fantasy_kg.cli.main import cli
from fantasy_kg.pipeline.run import run_series
from fantasy_kg.pipeline.view import _script_json, render_html
from fantasy_kg_tests.conftest import REPO_ROOT, SAMPLE_SERIES

CHROMIUM = Path("/usr/bin/chromium")
BOOK2_REL = ("Seren Marrow", "SPOUSE_OF", "Varen Malgrave")


def _needs_browser() -> None:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium not installed (apt-get install -y chromium)")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed")


def _browser_report(html: Path, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "view_check.py"), str(html), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report: dict[str, object] = json.loads(proc.stdout)
    return report


@pytest.fixture
def sample_db(sample_data_dir: Path) -> Path:
    run_series(SAMPLE_SERIES, data_dir=sample_data_dir, backend="local")
    return sample_data_dir / "fantasy_kg.duckdb"


def _one(db: Path, sql: str, params: list[object]) -> object:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        row = conn.execute(sql, params).fetchone()
    finally:
        conn.close()
    assert row is not None
    return row[0]


def test_cli_writes_one_self_contained_page(sample_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    result = CliRunner().invoke(cli, ["view", "--series", SAMPLE_SERIES, "--output", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    entities = _one(sample_db, "SELECT count(*) FROM entities WHERE series = ?", [SAMPLE_SERIES])
    assert summary["nodes"] == entities
    assert summary["backends"] == ["local"]
    page = out.read_text(encoding="utf-8")
    # Everything inline: no script or stylesheet comes from anywhere else.
    assert "<script src" not in page and "<link" not in page
    assert "default-src 'none'" in page
    assert "Cytoscape Consortium" in page  # the vendored library, licence header kept
    assert "Seren Marrow" in page


def test_as_of_book_writes_a_file_without_later_facts(sample_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "book1.html"
    result = CliRunner().invoke(
        cli, ["view", "--series", SAMPLE_SERIES, "--output", str(out), "--as-of-book", "1"]
    )
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "Mira Thorne" in page
    assert "Seren Marrow" not in page  # first named in book 2: not hidden, absent
    assert "the Veiled Lady" not in page


def test_user_errors_are_one_line_exit_2(sample_db: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    unknown = runner.invoke(cli, ["view", "--series", "no_such_series"])
    assert unknown.exit_code == 2
    assert "no entities in the warehouse" in unknown.stderr
    assert "ashen_crown" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    bad = runner.invoke(cli, ["view", "--series", SAMPLE_SERIES, "--as-of-book", "0"])
    assert bad.exit_code == 2
    missing = runner.invoke(
        cli, ["view", "--series", SAMPLE_SERIES, "--db", str(tmp_path / "none.duckdb")]
    )
    assert missing.exit_code == 2
    assert "does not exist" in missing.stderr


def test_book_text_cannot_close_the_data_script() -> None:
    hostile = "</script><script>alert(1)</script><!--"
    text = _script_json({"quote": hostile})
    assert "</script" not in text and "<!--" not in text
    assert json.loads(text) == {"quote": hostile}
    payload = {
        "series": "x</title>",
        "nodes": [],
        "edges": [],
        "points": [],
        "entity_types": [],
        "relationship_types": [],
        "backends": [],
        "models": [],
        "made_by": hostile,
    }
    page = render_html(payload)
    assert page.count("</script>") == 3  # the three script elements of the template, no more
    assert "x&lt;/title&gt;" in page


@pytest.mark.browser
def test_sample_page_in_chromium(sample_db: Path, tmp_path: Path) -> None:
    _needs_browser()
    out = tmp_path / "sample.html"
    result = CliRunner().invoke(cli, ["view", "--series", SAMPLE_SERIES, "--output", str(out)])
    assert result.exit_code == 0, result.output
    source, rtype, target = BOOK2_REL
    rel_id = _one(
        sample_db,
        "SELECT r.relationship_id FROM relationships r "
        "JOIN entities s ON s.series = r.series AND s.entity_id = r.source_id "
        "JOIN entities t ON t.series = r.series AND t.entity_id = r.target_id "
        "WHERE r.series = ? AND s.name = ? AND r.type = ? AND t.name = ?",
        [SAMPLE_SERIES, source, rtype, target],
    )
    alias = "Veiled Lady"  # an alias of Seren Marrow, not part of her name
    assert _one(
        sample_db,
        "SELECT count(*) FROM entity_aliases a JOIN entities e USING (series, entity_id) "
        "WHERE a.series = ? AND e.name = 'Seren Marrow' AND a.alias ILIKE ?",
        [SAMPLE_SERIES, f"%{alias}%"],
    )
    report = _browser_report(out, "--alias", alias, "--hidden-rel", str(rel_id), "--book", "1")
    assert report["console_errors"] == [] and report["page_errors"] == []
    assert report["foreign_requests"] == []
    entities = _one(sample_db, "SELECT count(*) FROM entities WHERE series = ?", [SAMPLE_SERIES])
    assert report["drawn_nodes"] == entities
    assert any(str(r).startswith("Seren Marrow") for r in report["search_results"])  # type: ignore[attr-defined]
    assert report["cut_label"] == "end of Book 1: The Lantern Road"
    assert report["rel_drawn_at_cut"] is False
    assert report["rel_drawn_at_end"] is True
    book1 = _one(
        sample_db,
        "SELECT count(*) FROM graph_as_of(?, 1) WHERE kind = 'entity'",
        [SAMPLE_SERIES],
    )
    assert report["nodes_drawn_at_cut"] == book1  # the page and the SQL macro agree
    assert "local baseline" in str(report["made_by"])


@pytest.mark.browser
@pytest.mark.slow
def test_oz_page_in_chromium(oz_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    _needs_browser()
    books = data_dir / "books" / "oz"
    books.mkdir(parents=True)
    for book in sorted(oz_dir.glob("*.txt")):
        (books / book.name).write_bytes(book.read_bytes())
    run_series("oz", data_dir=data_dir, backend="local")
    out = tmp_path / "oz.html"
    result = CliRunner().invoke(
        cli,
        [
            "view",
            "--series",
            "oz",
            "--output",
            str(out),
            "--db",
            str(data_dir / "fantasy_kg.duckdb"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = _browser_report(out, "--alias", "Dorothy")
    assert report["console_errors"] == [] and report["page_errors"] == []
    assert report["foreign_requests"] == []
    entities = _one(
        data_dir / "fantasy_kg.duckdb", "SELECT count(*) FROM entities WHERE series = 'oz'", []
    )
    assert report["drawn_nodes"] == entities
    assert report["search_results"]
