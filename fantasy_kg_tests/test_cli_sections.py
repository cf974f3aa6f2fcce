"""``fantasy-kg sections``: results, summaries, and bad input that changes nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fantasy_kg.cli.main import cli
from fantasy_kg.domain.catalog import catalog
from fantasy_kg.domain.schemas import default_ontology
from fantasy_kg.domain.sections import read_sections

STORY = (
    "The Lantern Road\n\nChapter 1: The Gate\n\n"
    + "\n\n".join(f"Mira Thorne, the Warden's daughter, crossed bridge {i}." for i in range(30))
    + "\n"
)


def _books(root: Path, slug: str = "lantern") -> Path:
    folder = root / "books" / slug
    folder.mkdir(parents=True)
    (folder / "01_road.txt").write_text(STORY, "utf-8")
    (folder / "02_road.txt").write_text(STORY.replace("Lantern", "Ember"), "utf-8")
    return root / "books"


def _snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))}


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_lists_sections_and_estimate() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    assert "sections" in result.stdout and "estimate" in result.stdout


def test_sections_writes_files_and_summarizes_on_stderr(tmp_path: Path) -> None:
    books = _books(tmp_path)
    out = tmp_path / "out"
    result = _invoke(
        "sections",
        "--books-dir",
        str(books),
        "--output-dir",
        str(out),
        "--model",
        "claude-haiku-4-5",
        "--max-section-tokens",
        "300",
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "", "stdout is for results; the summary goes to stderr"
    sections = read_sections(out)
    assert len(sections) >= 2
    assert "lantern: 2 books ->" in result.stderr
    assert f"{len(sections)} sections" in result.stderr and "tokens" in result.stderr
    meta = sections[0].meta
    assert meta.series == "lantern" and meta.series_name == "Lantern"
    assert meta.books[0] == "The Lantern Road"
    assert meta.chapter_start == "" and sections[0].meta.spans[0].chapters == [
        "Chapter 1: The Gate"
    ]

    as_json = _invoke(
        "sections", "--books-dir", str(books), "--output-dir", str(out), "--json",
        "--model", "claude-haiku-4-5", "--max-section-tokens", "300",
    )  # fmt: skip
    doc = json.loads(as_json.stdout)
    assert doc["sections"] == len(sections) and doc["books"] == 2
    assert doc["series"][0]["token_count_method"].startswith("estimate-v1")
    assert doc["max_tokens"] == 32000  # the default, under Haiku 4.5's 64K cap


def test_a_cp1252_book_is_read_with_a_warning(tmp_path: Path) -> None:
    folder = tmp_path / "books" / "cafe"
    folder.mkdir(parents=True)
    (folder / "01.txt").write_bytes("Caf\u00e9 \u201cGrey\u201d\n\nText.".encode("cp1252"))
    result = _invoke(
        "sections", "--books-dir", str(tmp_path / "books"), "--output-dir", str(tmp_path / "o")
    )
    assert result.exit_code == 0
    assert "warning: 01.txt: not valid UTF-8" in result.stderr


def _bad_empty(root: Path) -> list[str]:
    books = _books(root)
    (books / "lantern" / "03_empty.txt").write_bytes(b"")
    return ["--books-dir", str(books)]


def _bad_binary(root: Path) -> list[str]:
    books = _books(root)
    (books / "lantern" / "03_image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(200))
    return ["--books-dir", str(books)]


def _bad_encoding(root: Path) -> list[str]:
    books = _books(root)
    (books / "lantern" / "03_garbled.txt").write_bytes(bytes([0x81, 0x8D, 0x9D, 0x41]) * 400)
    return ["--books-dir", str(books)]


def _bad_epub(root: Path) -> list[str]:
    books = _books(root)
    (books / "lantern" / "03_book.epub").write_bytes(b"plain text, not a zip")
    return ["--books-dir", str(books)]


def _malformed_ontology(root: Path) -> list[str]:
    books = _books(root)
    schemas = root / "schemas"
    schemas.mkdir()
    (schemas / "lantern_schema.json").write_text('{\n  "name": "Lantern",\n  "version": 1.0.0\n}')
    return ["--books-dir", str(books)]


def _invalid_ontology(root: Path) -> list[str]:
    books = _books(root)
    onto = default_ontology("lantern").model_dump(mode="json")
    onto["relationship_types"][0]["source_types"] = ["Dragon"]
    path = root / "custom.json"
    path.write_text(json.dumps(onto))
    return ["--books-dir", str(books), "--ontology", str(path)]


def _unknown_model(root: Path) -> list[str]:
    return ["--books-dir", str(_books(root)), "--model", "claude-opus-9"]


def _missing_books(root: Path) -> list[str]:
    return ["--books-dir", str(root / "no_such_folder")]


def _too_many_tokens(root: Path) -> list[str]:
    return ["--books-dir", str(_books(root)), "--model", "claude-opus-4-5", "--max-tokens", "99999"]


@pytest.mark.parametrize(
    ("make", "phrases"),
    [
        (_bad_empty, ["03_empty.txt", "empty"]),
        (_bad_binary, ["03_image.txt", "binary"]),
        (_bad_encoding, ["03_garbled.txt", "undecodable", "UTF-8"]),
        (_bad_epub, ["03_book.epub", "EPUB"]),
        (_malformed_ontology, ["lantern_schema.json", "line 3 column 17"]),
        (_invalid_ontology, ["custom.json", "Dragon"]),
        (_unknown_model, ["claude-opus-9", "known models:", "claude-opus-4-5-20251101"]),
        (_missing_books, ["books folder not found", "no_such_folder"]),
        (_too_many_tokens, ["max_tokens 99999", "64000"]),
    ],
)
@pytest.mark.parametrize("output_exists", [True, False])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, make, phrases: list[str], output_exists: bool
) -> None:
    args = make(tmp_path)
    out = tmp_path / "out"
    if output_exists:
        out.mkdir()
        (out / "lantern_section_01.txt").write_text("previous run", "utf-8")
    before = _snapshot(out)
    result = _invoke("sections", *args, "--output-dir", str(out))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    for phrase in phrases:
        assert phrase in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert _snapshot(out) == before


def test_unknown_model_lists_every_known_id() -> None:
    result = _invoke("sections", "--model", "gpt-4")
    assert result.exit_code == 2
    ids = [m.id for m in catalog().models]
    assert len(ids) >= 11 and all(i in result.stderr for i in ids)


def test_console_script_runs_end_to_end(tmp_path: Path) -> None:
    books = _books(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "FANTASY_KG_DATA_DIR": str(tmp_path / "data")}
    env.pop("ANTHROPIC_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "fantasy_kg", "sections", "--books-dir", str(books),
         "--output-dir", str(out), "--model", "claude-sonnet-4-6", "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["sections"] == 1 and doc["model"] == "claude-sonnet-4-6"
    est = _invoke("estimate", "--input-dir", str(out))
    assert est.exit_code == 0, est.stderr
    assert "Claude Sonnet 4.6" in est.stdout and "lantern" in est.stdout
