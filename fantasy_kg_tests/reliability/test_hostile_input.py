"""Hostile and broken input files (design invariant 7): one clear line, exit 2, nothing written.

Every scenario first builds sections for a good series, so the data directory holds real earlier
output, then adds one broken thing next to it and runs ``fantasy-kg sections`` over the whole
books folder. The checks are the same each time: exit code 2, exactly one non-blank line on
stderr that names the problem (no traceback), and a byte-for-byte identical data directory (the
good series is not half-rewritten either: validation happens before the first write).
"""

import json
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fantasy_kg.domain.sections import SectionMeta, section_file_name
from fantasy_kg.local_api import LocalServer, start_local_server
from fantasy_kg_tests.reliability.harness import (
    FAKE_KEY,
    CliResult,
    all_files,
    files_outside,
    run_cli_inprocess,
    snapshot,
    synthetic_book,
    write_book,
)

SCENARIO_CATEGORY = "Hostile input files"


def _sections(data_dir: Path, *extra: str) -> CliResult:
    return run_cli_inprocess(
        "sections",
        "--books-dir",
        str(data_dir / "books"),
        "--output-dir",
        str(data_dir / "sections"),
        *extra,
    )


@pytest.fixture
def earlier_output(data_dir: Path) -> Path:
    """A data dir where a good series was already sectioned (the state that must survive)."""
    write_book(data_dir / "books" / "good_series", "01_first.txt", synthetic_book(40))
    first = _sections(data_dir)
    assert first.exit_code == 0, first.stderr
    assert list((data_dir / "sections").glob("good_series_section_*.txt"))
    return data_dir


def _assert_rejected(data_dir: Path, result: CliResult, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.error_lines
    assert len(lines) == 1, lines
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    assert result.stdout == ""


def _broken_case(
    make: Callable[[Path], None], *needles: str, extra: tuple[str, ...] = ()
) -> Callable[[Path], None]:
    def run(data_dir: Path) -> None:
        make(data_dir)
        before = snapshot(data_dir)
        result = _sections(data_dir, *extra)
        _assert_rejected(data_dir, result, *needles)
        assert snapshot(data_dir) == before, "the failed run changed the data directory"

    return run


def _bad(data_dir: Path, name: str, content: bytes) -> None:
    folder = data_dir / "books" / "bad_series"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)


@pytest.mark.scenario(
    id="input-empty-book",
    injected="{desc} next to an already sectioned good series",
    checked="exit 2, one line naming the file, data dir byte-identical",
)
@pytest.mark.parametrize(
    ("content", "desc"),
    [(b"", "a 0-byte book"), (b"  \n\r\n\t  \n", "a book of only whitespace and line breaks")],
    ids=["zero-bytes", "whitespace"],
)
def test_empty_book(earlier_output: Path, content: bytes, desc: str) -> None:
    _broken_case(lambda d: _bad(d, "01_empty.txt", content), "01_empty.txt", "empty")(
        earlier_output
    )


@pytest.mark.scenario(
    id="input-binary-book",
    injected="{desc}",
    checked="exit 2, one line calling it binary, data dir byte-identical",
)
@pytest.mark.parametrize(
    ("content", "desc"),
    [
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 40,
            "a PNG image renamed .txt (NUL bytes)",
        ),
        (
            bytes((i * 7) % 32 for i in range(1, 20_000) if (i * 7) % 32 not in (0, 9, 10, 13)),
            "a file with no NUL byte but made of control bytes",
        ),
    ],
    ids=["png", "control-bytes"],
)
def test_binary_book(earlier_output: Path, content: bytes, desc: str) -> None:
    _broken_case(lambda d: _bad(d, "02_image.txt", content), "02_image.txt", "binary")(
        earlier_output
    )


@pytest.mark.scenario(
    id="input-undecodable",
    injected="{desc}",
    checked="exit 2, one line naming the file, data dir byte-identical",
)
@pytest.mark.parametrize(
    ("content", "desc"),
    [
        (bytes(range(0x80, 0xA0)) * 200, "bytes that are not UTF-8, cp1252 or sane latin-1"),
        (
            b"\xff\xfe" + "Chapter One".encode("utf-16-le") + b"\x00",
            "a UTF-16 byte-order mark followed by an odd number of bytes",
        ),
    ],
    ids=["c1-controls", "broken-utf16"],
)
def test_undecodable_book(earlier_output: Path, content: bytes, desc: str) -> None:
    _broken_case(lambda d: _bad(d, "03_garbled.txt", content), "03_garbled.txt")(earlier_output)


@pytest.mark.scenario(
    id="input-mixed-encodings",
    injected="one book whose first half is UTF-8 (é as C3 A9) and second half cp1252 (é as E9)",
    checked="exit 2, one line naming the file and the mixed encoding, data dir byte-identical "
    "(decoding it all as cp1252 would silently garble the UTF-8 half)",
)
def test_mixed_encodings(earlier_output: Path) -> None:
    text = "Chapter One\n\nThe café at Émberfall served crème brûlée. " * 40
    content = text.encode("utf-8") + text.encode("cp1252")
    _broken_case(lambda d: _bad(d, "04_mixed.txt", content), "04_mixed.txt", "encoding")(
        earlier_output
    )


@pytest.mark.scenario(
    id="input-epub-not-zip",
    injected="{desc}",
    checked="exit 2, one line naming the file, data dir byte-identical",
)
@pytest.mark.parametrize(
    ("kind", "desc"),
    [
        ("not-a-zip", "a plain text file named .epub"),
        ("zip-without-opf", "a real zip named .epub with no EPUB package inside"),
    ],
    ids=["not-a-zip", "zip-without-opf"],
)
def test_epub_that_is_not_an_epub(
    earlier_output: Path, tmp_path: Path, kind: str, desc: str
) -> None:
    if kind == "not-a-zip":
        content = b"This is plain text pretending to be an EPUB.\n" * 10
    else:
        buf = tmp_path / "x.zip"
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("hello.txt", "not an epub")
        content = buf.read_bytes()
    _broken_case(lambda d: _bad(d, "05_book.epub", content), "05_book.epub")(earlier_output)


@pytest.mark.scenario(
    id="input-ontology-cycle",
    injected="the series' ontology declares entity types A→B→A as each other's parent",
    checked="exit 2, one line naming the ontology file and the cycle, data dir byte-identical",
)
def test_ontology_with_cycle(earlier_output: Path) -> None:
    def make(d: Path) -> None:
        (d / "schemas").mkdir(exist_ok=True)
        (d / "schemas" / "good_series_schema.json").write_text(
            json.dumps(
                {"entity_types": [{"name": "A", "parent": "B"}, {"name": "B", "parent": "A"}]}
            )
        )

    _broken_case(make, "good_series_schema.json", "cycle")(earlier_output)


@pytest.mark.scenario(
    id="input-ontology-duplicates",
    injected="the series' ontology defines the same {what} entry twice",
    checked="exit 2, one line naming the file and the duplicate, data dir byte-identical",
)
@pytest.mark.parametrize("what", ["entity_types", "relationship_types"])
def test_ontology_with_duplicate_types(earlier_output: Path, what: str) -> None:
    def make(d: Path) -> None:
        doc: dict[str, object] = {"entity_types": [{"name": "Character"}]}
        if what == "entity_types":
            doc["entity_types"] = [{"name": "Character"}, {"name": "Character"}]
        else:
            rel = {"name": "ENEMY_OF", "source_types": ["Character"], "target_types": ["Character"]}
            doc["relationship_types"] = [rel, rel]
        (d / "schemas").mkdir(exist_ok=True)
        (d / "schemas" / "good_series_schema.json").write_text(json.dumps(doc))

    _broken_case(make, "good_series_schema.json", "twice")(earlier_output)


@pytest.mark.scenario(
    id="input-ontology-malformed",
    injected="an ontology file with a trailing comma (invalid JSON), passed with --ontology",
    checked="exit 2, one line with file, line and column, data dir byte-identical",
)
def test_ontology_malformed_json(earlier_output: Path) -> None:
    onto = earlier_output / "schemas" / "broken_schema.json"

    def make(d: Path) -> None:
        onto.parent.mkdir(exist_ok=True)
        onto.write_text('{\n  "entity_types": [\n    {"name": "Character",}\n  ]\n}\n')

    _broken_case(make, "broken_schema.json", "line 3", extra=("--ontology", str(onto)))(
        earlier_output
    )


@pytest.mark.scenario(
    id="input-series-traversal",
    injected="{desc}",
    checked="exit 2, one line saying it was not found, data dir byte-identical",
)
@pytest.mark.parametrize(
    ("how", "desc"),
    [
        ("series", "--series '../x' (a series name that climbs out of the books folder)"),
        ("books-dir", "--books-dir <data>/books/../../x (a folder outside the data dir)"),
    ],
    ids=["series", "books-dir"],
)
def test_series_name_with_traversal(earlier_output: Path, how: str, desc: str) -> None:
    before = snapshot(earlier_output)
    if how == "series":
        result = _sections(earlier_output, "--series", "../x")
    else:
        result = run_cli_inprocess(
            "sections",
            "--books-dir",
            str(earlier_output / "books" / ".." / ".." / "x"),
            "--output-dir",
            str(earlier_output / "sections"),
        )
    _assert_rejected(earlier_output, result, "not found")
    assert snapshot(earlier_output) == before


@pytest.mark.scenario(
    id="input-slug-clash",
    injected="two series folders, 'Ashen Crown' and 'ashen_crown', that map to one partition key",
    checked="exit 2, one line naming both folders, data dir byte-identical",
)
def test_two_folders_with_one_slug(earlier_output: Path) -> None:
    def make(d: Path) -> None:
        write_book(d / "books" / "Ashen Crown", "01.txt", synthetic_book(5))
        write_book(d / "books" / "ashen_crown", "01.txt", synthetic_book(5, seed=1))

    _broken_case(make, "ashen_crown")(earlier_output)


@pytest.mark.scenario(
    id="input-unknown-model",
    injected="--model claude-imaginary-9",
    checked="exit 2, one line naming the model, data dir byte-identical",
)
def test_unknown_model(earlier_output: Path) -> None:
    _broken_case(lambda d: None, "claude-imaginary-9", extra=("--model", "claude-imaginary-9"))(
        earlier_output
    )


@pytest.mark.scenario(
    id="input-symlink-out-of-data-dir",
    injected="a {what} symlink in the books folder pointing outside the data dir",
    checked="exit 2, one line naming the symlink, data dir byte-identical (a planted link must not "
    "send an outside file to the API)",
)
@pytest.mark.parametrize("what", ["book file", "series folder"], ids=["file", "folder"])
def test_symlink_out_of_the_data_dir(earlier_output: Path, tmp_path: Path, what: str) -> None:
    outside = tmp_path / "outside"
    secret = write_book(outside, "private_notes.txt", synthetic_book(10, seed=3))

    def make(d: Path) -> None:
        if what == "book file":
            (d / "books" / "bad_series").mkdir(parents=True)
            os.symlink(secret, d / "books" / "bad_series" / "01_link.txt")
        else:
            os.symlink(outside, d / "books" / "linked_series")

    _broken_case(make, "symlink")(earlier_output)


@pytest.mark.scenario(
    id="input-unicode-folder-name",
    injected='a series folder named "Dragon\'s Ash — Ŝaga 🐉" with a book file named with spaces',
    checked="exit 0; ASCII slug dragon_s_ash_saga; every file written stays inside the output dir",
)
def test_unicode_and_spaces_in_folder_names(data_dir: Path) -> None:
    write_book(
        data_dir / "books" / "Dragon's Ash — Ŝaga 🐉", "01 the first book.txt", synthetic_book(30)
    )
    result = _sections(data_dir, "--json")
    assert result.exit_code == 0, result.stderr
    out = data_dir / "sections"
    written = all_files(out)
    assert written and all(p.name.startswith("dragon_s_ash_saga_section_") for p in written)
    assert files_outside(out, written) == []
    summary = result.json()
    assert [s["series"] for s in summary["series"]] == ["dragon_s_ash_saga"]


@pytest.mark.scenario(
    id="input-huge-single-line",
    injected="a 6 MB book that is one line: 1,000,000 words with no line break or sentence end",
    checked="exit 0; every section within --max-section-tokens; section texts concatenated give "
    "back every word in order (nothing lost, nothing duplicated)",
)
def test_huge_single_line(data_dir: Path) -> None:
    words = [f"w{i % 997}" for i in range(1_000_000)]
    write_book(data_dir / "books" / "one_line", "01.txt", " ".join(words))
    result = _sections(data_dir, "--max-section-tokens", "150000", "--json")
    assert result.exit_code == 0, result.stderr
    texts = sorted((data_dir / "sections").glob("one_line_section_*.txt"))
    assert len(texts) > 1
    metas = [json.loads(p.with_suffix(".meta.json").read_text()) for p in texts]
    assert all(m["input_tokens"] <= 150_000 * 1.2 for m in metas), [
        m["input_tokens"] for m in metas
    ]
    rebuilt = " ".join(p.read_text(encoding="utf-8").strip() for p in texts).split()
    assert rebuilt == words


# ------------------------------------------------------------------------------------------
# Broken section files reaching `extract-batch`: refused before any request is sent
# ------------------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[LocalServer]:
    with start_local_server(tmp_path / "api") as server:
        yield server


def _submit(api: LocalServer, monkeypatch: pytest.MonkeyPatch, *extra: str) -> CliResult:
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", api.base_url)
    return run_cli_inprocess("extract-batch", "--mode", "submit", *extra)


def _nothing_sent_or_written(api: LocalServer, data_dir: Path, before: dict[str, str]) -> None:
    assert api.requests_log == [], [e.endpoint for e in api.requests_log]
    assert snapshot(data_dir) == before


@pytest.mark.scenario(
    id="input-broken-section-meta",
    injected="one section's .meta.json cut in half (invalid JSON) before `extract-batch --mode "
    "submit`",
    checked="exit 2, one line naming the meta file with line and column; not one request "
    "reaches the API; data dir byte-identical (no intent, payload or job file)",
)
def test_broken_section_meta(
    earlier_output: Path, api: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = sorted((earlier_output / "sections").glob("*.meta.json"))[-1]
    meta.write_text(meta.read_text()[: len(meta.read_text()) // 2])
    before = snapshot(earlier_output)
    res = _submit(api, monkeypatch)
    _assert_rejected(earlier_output, res, meta.name, "line")
    _nothing_sent_or_written(api, earlier_output, before)


@pytest.mark.scenario(
    id="input-section-over-context-window",
    injected="a hand-made section of ~280,000 tokens submitted for claude-haiku-4-5 (200,000-token "
    "window)",
    checked="pre-flight refuses it: exit 2, one line naming the section and the window; not one "
    "request reaches the API; data dir byte-identical",
)
def test_section_larger_than_the_context_window(
    data_dir: Path, api: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = " ".join(f"word{i % 1000}" for i in range(200_000))
    folder = data_dir / "sections"
    folder.mkdir(parents=True)
    name = section_file_name("giant", 1)
    (folder / name).write_text(text, encoding="utf-8")
    meta = SectionMeta(series="giant", section=1, books=["Giant"], input_tokens=280_000)
    (folder / name).with_suffix(".meta.json").write_text(meta.model_dump_json())
    before = snapshot(data_dir)
    res = _submit(api, monkeypatch, "--model", "claude-haiku-4-5")
    _assert_rejected(data_dir, res, "giant_section_01")
    _nothing_sent_or_written(api, data_dir, before)
