"""Sectioning: every request fits the window, sections tile the books, files are idempotent."""

import itertools
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fantasy_kg.domain.answer import (
    DEFAULT_MAX_SECTION_TOKENS,
    default_max_tokens,
    effective_effort,
    expected_answer,
    max_section_tokens_for_answer,
    request_effort,
)
from fantasy_kg.domain.catalog import get_model
from fantasy_kg.domain.errors import ConfigError, InputFileError
from fantasy_kg.domain.prompts import build_prompt
from fantasy_kg.domain.schemas import Ontology, default_ontology
from fantasy_kg.domain.sections import read_sections, text_sha256
from fantasy_kg.domain.text.ingest import Book, read_books
from fantasy_kg.domain.text.sectioning import (
    BOOK_SEPARATOR,
    format_overhead_tokens,
    plan_sections,
    series_text,
)
from fantasy_kg.domain.text.tokens import (
    ESTIMATE_MARGIN,
    TOKENS_PER_WORD,
    estimate_method,
    estimate_tokens,
)
from fantasy_kg.pipeline.sections import build_sections

_PARAGRAPH_END_RE = re.compile(r"\n[ \t]*\n\s*\Z")

NAMES = ["Mira", "Tomas", "Elda", "Corvin", "Ysolde", "Harl", "Bren", "Ossa"]
PLACES = ["Greyhold", "the Ember Vale", "Saltmarch", "the Lantern Road", "Kestrel Keep"]


def _paragraph(seed: int) -> str:
    who = NAMES[seed % len(NAMES)]
    other = NAMES[(seed * 3 + 1) % len(NAMES)]
    where = PLACES[seed % len(PLACES)]
    sentences = [
        f"{who} rode toward {where} while {other} kept watch.",
        f'"We cannot wait," said {other}, "the gate closes at dusk."',
        f"Paragraph {seed} ends with the wind over {where}.",
    ]
    return " ".join(sentences[: 1 + seed % 3]) + (" " + sentences[0]) * (seed % 4)


def write_series(folder: Path, books: int = 3, chapters: int = 5, paras: int = 10) -> Path:
    """A synthetic series with titles, chapter headings and varied paragraphs."""
    folder.mkdir(parents=True, exist_ok=True)
    seed = 0
    for b in range(1, books + 1):
        parts = [f"The Book of Embers, Volume {b}"]
        for c in range(1, chapters + 1):
            parts.append(f"Chapter {c}: The {PLACES[c % len(PLACES)].split()[-1]} Road")
            for _ in range(paras):
                seed += 1
                parts.append(_paragraph(seed))
        (folder / f"{b:02d}_volume_{b}.txt").write_text("\n\n".join(parts) + "\n", "utf-8")
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def _check_tiling(
    books: list[Book], texts: list[str], spans_of: list[list[dict[str, int]]]
) -> None:
    """Sections joined are the series text; every span is a verbatim slice of its book."""
    assert "".join(texts) == series_text(books)
    by_name = {b.file_name: b for b in books}
    covered: dict[str, list[tuple[int, int]]] = {b.file_name: [] for b in books}
    for text, spans in zip(texts, spans_of, strict=True):
        for sp in spans:
            book = by_name[str(sp["book"])]
            length = sp["end"] - sp["start"]
            part = text[sp["section_start"] : sp["section_start"] + length]
            assert part == book.text[sp["start"] : sp["end"]]
            covered[book.file_name].append((sp["start"], sp["end"]))
    for name, ranges in covered.items():
        assert ranges[0][0] == 0 and ranges[-1][1] == len(by_name[name].text)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def _fits(meta: dict[str, object], text: str, ontology: Ontology, model_name: str, max_tokens: int):
    model = get_model(model_name)
    prompt = build_prompt(
        series_name=str(meta["series_name"]),
        ontology=ontology,
        book_names=list(meta["books"]),  # type: ignore[call-overload]
        section_id=f"{meta['section']:02d}",
        text=text,
    ).render()
    tokens = estimate_tokens(prompt, model.tokenizer_factor) + format_overhead_tokens(model)
    return tokens * (1 + ESTIMATE_MARGIN) + max_tokens, model.context_window


def test_oz_sections_fit_opus_4_5_and_tile_the_books(oz_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sections"
    summary = build_sections(oz_dir, out, model="claude-opus-4-5", max_tokens=64000)
    books = read_books(oz_dir)
    sections = read_sections(out, "oz")
    assert summary.books == 14 and summary.sections == len(sections) >= 5
    ontology = default_ontology("oz")
    for sec in sections:
        meta = sec.meta.model_dump()
        needed, window = _fits(meta, sec.text, ontology, "claude-opus-4-5", 64000)
        assert needed <= window, f"section {sec.meta.section} needs {needed} of {window}"
        assert sec.meta.input_tokens == estimate_tokens(sec.text)
        assert sec.meta.sha256 == text_sha256(sec.text) and sec.meta.chars == len(sec.text)
        assert sec.meta.token_count_method == estimate_method(1.0)
        assert meta["token_model"] == "claude-opus-4-5-20251101"
        assert meta["max_tokens"] == 64000
        assert sec.meta.books == [sp.title for sp in sec.meta.spans]
        assert sec.meta.book_files == [sp.book for sp in sec.meta.spans]
    _check_tiling(
        books,
        [s.text for s in sections],
        [[sp.model_dump() for sp in s.meta.spans] for s in sections],
    )
    # Cuts fall between paragraphs: each section but the last ends with a blank-line run.
    assert all(_PARAGRAPH_END_RE.search(s.text) for s in sections[:-1])
    # Balanced, not greedy: no runt last section.
    sizes = [s.meta.input_tokens for s in sections]
    assert max(sizes) / min(sizes) < 1.25
    # Chapter labels are real headings of the books they cover.
    headings = {c.title for b in books for c in b.chapters}
    for sec in sections:
        for label in (sec.meta.chapter_start, sec.meta.chapter_end):
            assert label == "" or label in headings
        for sp in sec.meta.spans:
            assert set(sp.chapters) <= headings


def test_default_sections_are_sized_for_the_answer_not_the_window(
    oz_dir: Path, tmp_path: Path
) -> None:
    # A 200K and a 1M window are both cut at the default cap: the answer limits the sections.
    small = build_sections(oz_dir, tmp_path / "a", model="claude-opus-4-5")
    large = build_sections(oz_dir, tmp_path / "b", model="claude-sonnet-5-5")
    for summary in (small, large):
        assert summary.sections >= summary.input_tokens // DEFAULT_MAX_SECTION_TOKENS
    for model, folder in (("claude-opus-4-5", "a"), ("claude-sonnet-5-5", "b")):
        info = get_model(model)
        effort = effective_effort(info, request_effort(info, None))
        for sec in read_sections(tmp_path / folder):
            assert sec.meta.input_tokens <= DEFAULT_MAX_SECTION_TOKENS
            size = expected_answer(
                sec.meta.input_tokens, info, max_tokens=default_max_tokens(info), effort=effort
            )
            assert size.fits, (model, sec.meta.section, size)


def test_a_small_max_tokens_shrinks_the_sections_until_the_answer_fits(
    oz_dir: Path, tmp_path: Path
) -> None:
    info = get_model("claude-sonnet-5-5")
    summary = build_sections(oz_dir, tmp_path / "s", model=info.id, max_tokens=4000, effort="high")
    cap = max_section_tokens_for_answer(info, max_tokens=4000, effort="high")
    assert 1000 < cap < DEFAULT_MAX_SECTION_TOKENS
    sections = read_sections(tmp_path / "s")
    assert summary.sections == len(sections)
    for sec in sections:
        assert sec.meta.input_tokens <= cap
        assert expected_answer(sec.meta.input_tokens, info, max_tokens=4000, effort="high").fits


def test_a_1m_model_gets_fewer_larger_oz_sections(oz_dir: Path, tmp_path: Path) -> None:
    # Window sizing alone (an explicit, huge section cap): the 1M window takes more per section.
    cap = 2_000_000
    small = build_sections(
        oz_dir, tmp_path / "a", model="claude-opus-4-5", max_tokens=64000, max_section_tokens=cap
    )
    large = build_sections(
        oz_dir, tmp_path / "b", model="claude-sonnet-4-6", max_tokens=64000, max_section_tokens=cap
    )
    assert large.sections < small.sections
    big = read_sections(tmp_path / "b")
    assert max(s.meta.input_tokens for s in big) > 200_000
    ontology = default_ontology("oz")
    for sec in big:
        needed, window = _fits(
            sec.meta.model_dump(), sec.text, ontology, "claude-sonnet-4-6", 64000
        )
        assert needed <= window
    books = read_books(oz_dir)
    _check_tiling(
        books, [s.text for s in big], [[sp.model_dump() for sp in s.meta.spans] for s in big]
    )


def test_estimate_is_calibrated_on_the_guide_ratio(oz_dir: Path) -> None:
    text = series_text(read_books(oz_dir))
    words = len(text.split())
    ratio = estimate_tokens(text) / words
    assert abs(ratio - TOKENS_PER_WORD) / TOKENS_PER_WORD < 0.05
    # A newer tokenizer (factor 1.3) costs 30 % more for the same text.
    assert estimate_tokens(text, 1.3) == pytest.approx(estimate_tokens(text) * 1.3, rel=1e-6)
    # Punctuation-dense text costs more per word than prose, as with a real tokenizer.
    assert estimate_tokens("a, b; c: d! e? f.") > estimate_tokens("a b c d e f") * 1.5


def test_sections_prefer_chapter_starts_and_record_spans(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "books" / "embers")
    books = read_books(folder)
    plan = plan_sections(
        books,
        slug="embers",
        series_name="Embers",
        ontology=default_ontology("embers"),
        model=get_model("claude-haiku-4-5"),
        max_tokens=16000,
        max_section_tokens=1500,
    )
    assert len(plan.sections) >= 4
    chapter_starts = {
        off + c.start
        for b, off in zip(books, _book_offsets(books), strict=True)
        for c in b.chapters
    }
    book_starts = set(_book_offsets(books))
    on_heading = [s.start in chapter_starts | book_starts for s in plan.sections[1:]]
    assert sum(on_heading) >= len(on_heading) / 2
    for s in plan.sections:
        assert s.input_tokens <= 1500
    _check_tiling(
        books,
        [s.text for s in plan.sections],
        [[sp.model_dump() for sp in s.spans] for s in plan.sections],
    )


def _book_offsets(books: list[Book]) -> list[int]:
    offsets, pos = [], 0
    for book in books:
        offsets.append(pos)
        pos += len(book.text) + len(BOOK_SEPARATOR)
    return offsets


def test_oversized_paragraphs_are_cut_at_sentences_then_whitespace(tmp_path: Path) -> None:
    folder = tmp_path / "giant"
    folder.mkdir()
    long_para = " ".join(f"Sentence {i} tells of Mira and the crown." for i in range(400))
    no_stops = " ".join(f"word{i}" for i in range(1500))
    blob = "x" * 5000
    text = "\n\n".join(["Giant Book", "A short opening.", long_para, no_stops, blob, "The end."])
    (folder / "01_giant.txt").write_text(text, "utf-8")
    books = read_books(folder)
    plan = plan_sections(
        books,
        slug="giant",
        series_name="Giant",
        ontology=default_ontology("giant"),
        model=get_model("claude-haiku-4-5"),
        max_tokens=8000,
        max_section_tokens=300,
    )
    assert all(s.input_tokens <= 300 for s in plan.sections)
    assert "".join(s.text for s in plan.sections) == series_text(books)
    assert books[0].text == text  # one book: series offsets are offsets in ``text``

    def cuts_inside(part: str) -> list[int]:
        at = text.index(part)
        return [s.start for s in plan.sections if at < s.start < at + len(part)]

    assert cuts_inside(long_para), "the long paragraph must be cut"
    assert all(text[c - 2 : c] == ". " for c in cuts_inside(long_para)), "after a sentence"
    assert cuts_inside(no_stops)
    assert all(text[c - 1] == " " for c in cuts_inside(no_stops)), "at whitespace"
    assert cuts_inside(blob), "a giant word is cut as a last resort"


def test_max_tokens_above_the_model_cap_is_a_config_error(tmp_path: Path) -> None:
    books = read_books(write_series(tmp_path / "s", books=1, chapters=1, paras=2))
    with pytest.raises(ConfigError, match=r"outside 1\.\.64000"):
        plan_sections(
            books,
            slug="s",
            series_name="S",
            ontology=default_ontology("s"),
            model=get_model("claude-opus-4-5"),
            max_tokens=100_000,
        )
    with pytest.raises(ConfigError, match="leave"):
        plan_sections(
            books,
            slug="s",
            series_name="S",
            ontology=default_ontology("s"),
            model=get_model("claude-opus-4-5"),
            max_tokens=64000,
            max_section_tokens=None,
            counter=_HugeCounter(),
        )


class _HugeCounter:
    """An estimate that makes the prompt prefix alone overflow the window."""

    exact = False

    def method(self, model: object) -> str:
        return "huge"

    def count(self, model: object, text: str) -> int:
        return 150_000 if "ONTOLOGY" in text else len(text)


def test_rerun_is_identical_and_removes_stale_sections(tmp_path: Path) -> None:
    books_dir = tmp_path / "books"
    write_series(books_dir / "embers")
    write_series(books_dir / "other_tale", books=1, chapters=2, paras=4)
    out = tmp_path / "sections"
    first = build_sections(
        books_dir, out, model="claude-haiku-4-5", max_tokens=8000, max_section_tokens=400
    )
    snap = _snapshot(out)
    again = build_sections(
        books_dir, out, model="claude-haiku-4-5", max_tokens=8000, max_section_tokens=400
    )
    assert _snapshot(out) == snap
    assert again.sections == first.sections
    embers_before = [n for n in snap if n.startswith("embers_section_")]
    fewer = build_sections(
        books_dir,
        out,
        series="embers",
        model="claude-haiku-4-5",
        max_tokens=8000,
        max_section_tokens=2000,
    )
    after = _snapshot(out)
    embers_after = sorted(n for n in after if n.startswith("embers_section_"))
    assert len(embers_after) == 2 * fewer.sections < len(embers_before)
    assert embers_after == sorted(
        f"embers_section_{i:02d}{ext}"
        for i in range(1, fewer.sections + 1)
        for ext in (".txt", ".meta.json")
    )
    assert fewer.series[0].removed
    # The other series was not touched.
    assert {n: b for n, b in after.items() if n.startswith("other_tale")} == {
        n: b for n, b in snap.items() if n.startswith("other_tale")
    }


def test_a_bad_book_in_any_series_writes_nothing(tmp_path: Path) -> None:
    books_dir = tmp_path / "books"
    write_series(books_dir / "a_good_one")
    bad = write_series(books_dir / "b_bad_one", books=1)
    (bad / "02_empty.txt").write_bytes(b"")
    out = tmp_path / "sections"
    out.mkdir()
    (out / "keep.txt").write_text("mine", "utf-8")
    with pytest.raises(InputFileError, match=r"02_empty\.txt"):
        build_sections(books_dir, out, model="claude-haiku-4-5")
    assert _snapshot(out) == {"keep.txt": b"mine"}


def test_series_ontology_and_name_come_from_the_schemas_folder(tmp_path: Path) -> None:
    books_dir = tmp_path / "data" / "books"
    write_series(books_dir / "embers", books=1, chapters=2, paras=3)
    schemas = tmp_path / "data" / "schemas"
    schemas.mkdir(parents=True)
    onto = default_ontology("embers").model_copy(update={"name": "The Ember Saga"})
    (schemas / "embers_schema.json").write_text(onto.model_dump_json(), "utf-8")
    out = tmp_path / "data" / "sections"
    summary = build_sections(books_dir, out, model="claude-haiku-4-5")
    assert summary.series[0].ontology.endswith("embers_schema.json")
    meta = json.loads((out / "embers_section_01.meta.json").read_text("utf-8"))
    assert meta["series_name"] == "The Ember Saga"
    assert meta["series"] == "embers"
    # One series folder given directly works the same way and finds ../../schemas too.
    direct = build_sections(books_dir / "embers", tmp_path / "direct", model="claude-haiku-4-5")
    assert direct.series[0].series == "embers"
    assert direct.series[0].ontology.endswith("embers_schema.json")


def test_unknown_series_lists_the_known_ones(tmp_path: Path) -> None:
    books_dir = tmp_path / "books"
    write_series(books_dir / "embers", books=1, chapters=1, paras=2)
    with pytest.raises(ConfigError, match="known series: embers"):
        build_sections(books_dir, tmp_path / "out", series="nope", model="claude-haiku-4-5")


_WORD = st.text(alphabet="abcdefghij,.;!?'\"-", min_size=1, max_size=12)
_PARA = st.lists(_WORD, min_size=1, max_size=80).map(" ".join)
_BOOK = st.lists(_PARA, min_size=1, max_size=12).map("\n\n".join)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_BOOK, min_size=1, max_size=3))
def test_any_books_tile_exactly_within_budget(texts: list[str]) -> None:
    books = [
        Book(path=Path(f"{i:02d}.txt"), title=f"Book {i}", text=t.strip() or "x", encoding="utf-8")
        for i, t in enumerate(texts)
    ]
    plan = plan_sections(
        books,
        slug="prop",
        series_name="Prop",
        ontology=default_ontology("prop"),
        model=get_model("claude-haiku-4-5"),
        max_tokens=8000,
        max_section_tokens=256,
    )
    assert "".join(s.text for s in plan.sections) == series_text(books)
    assert all(s.input_tokens <= 256 for s in plan.sections)
    _check_tiling(
        books,
        [s.text for s in plan.sections],
        [[sp.model_dump() for sp in s.spans] for s in plan.sections],
    )


def test_a_book_symlinked_from_outside_is_refused(tmp_path: Path) -> None:
    outside = write_series(tmp_path / "elsewhere", books=1, chapters=1, paras=2)
    books_dir = tmp_path / "books"
    (books_dir / "linked").mkdir(parents=True)
    (books_dir / "linked" / "01.txt").symlink_to(next(outside.glob("*.txt")))
    with pytest.raises(InputFileError, match="refusing symlink"):
        build_sections(books_dir, tmp_path / "out", model="claude-haiku-4-5")
    assert not (tmp_path / "out").exists()
    # A link that stays inside the books folder is fine.
    (books_dir / "linked" / "01.txt").unlink()
    write_series(books_dir / "real", books=1, chapters=1, paras=2)
    (books_dir / "linked" / "01.txt").symlink_to(next((books_dir / "real").glob("*.txt")))
    assert build_sections(books_dir, tmp_path / "out", model="claude-haiku-4-5").sections == 2
