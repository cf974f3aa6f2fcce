"""Reading books: encodings, Gutenberg boilerplate, chapters, EPUB, and clear errors."""

import itertools
import zipfile
from pathlib import Path

import pytest
from ebooklib import epub

from fantasy_kg.domain.catalog import get_model
from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.domain.schemas import default_ontology
from fantasy_kg.domain.text.chapters import chapter_at, detect_chapters, paragraphs
from fantasy_kg.domain.text.ingest import read_book, read_books, strip_gutenberg
from fantasy_kg.domain.text.sectioning import plan_sections, series_text

PROSE = (
    "Mira Thorne walked north along the lantern road. The Warden of Greyhold watched her go.\n\n"
    "She carried the Ashen Crown in a plain sack, and nobody asked what was inside it.\n"
)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_epub(path: Path, title: str, chapters: list[tuple[str, list[str]]]) -> Path:
    """Write a small EPUB whose spine order differs from the order items were added."""
    book = epub.EpubBook()
    book.set_identifier(f"id-{path.stem}")
    book.set_title(title)
    book.set_language("en")
    items = []
    for i, (heading, paras) in enumerate(chapters, start=1):
        item = epub.EpubHtml(title=heading, file_name=f"c{i}.xhtml", lang="en")
        body = "".join(f"<p>{p}</p>" for p in paras)
        item.content = f"<html><body><h1>{heading}</h1>{body}</body></html>"
        items.append(item)
    for item in reversed(items):  # added backwards: the spine, not the manifest, gives order
        book.add_item(item)
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    path.parent.mkdir(parents=True, exist_ok=True)
    epub.write_epub(str(path), book)
    return path


def test_utf8_bom_and_crlf_are_normalized(tmp_path: Path) -> None:
    raw = ("\ufeffThe Lantern Road\r\n\r\n" + PROSE.replace("\n", "\r\n")).encode("utf-8")
    book = read_book(_write(tmp_path / "01_road.txt", raw))
    assert book.encoding == "utf-8"
    assert book.warnings == ()
    assert "\r" not in book.text and not book.text.startswith("\ufeff")
    assert book.title == "The Lantern Road"
    assert book.text.startswith("The Lantern Road\n\nMira Thorne")
    assert book.text.endswith("inside it.")


def test_cp1252_fallback_decodes_and_warns(tmp_path: Path) -> None:
    text = "Caf\u00e9 at the \u201cGrey Gate\u201d \u2014 said the warden.\n\n" + PROSE
    book = read_book(_write(tmp_path / "02_cafe.txt", text.encode("cp1252")))
    assert book.encoding == "cp1252"
    assert "\u201cGrey Gate\u201d" in book.text and "Caf\u00e9" in book.text
    assert len(book.warnings) == 1 and "cp1252" in book.warnings[0]
    assert "02_cafe.txt" in book.warnings[0]


def test_latin1_fallback_for_a_stray_undefined_byte(tmp_path: Path) -> None:
    # 0x81 is undefined in cp1252, so only latin-1 can decode this; one stray byte is tolerated.
    raw = ("Na\u00efve tale. " * 2000).encode("latin-1") + b"\x81" + PROSE.encode("latin-1")
    book = read_book(_write(tmp_path / "03_latin.txt", raw))
    assert book.encoding == "latin-1"
    assert "Na\u00efve tale." in book.text
    assert "latin-1" in book.warnings[0]


def test_utf16_with_bom_is_read(tmp_path: Path) -> None:
    book = read_book(_write(tmp_path / "04_wide.txt", ("Wide Book\n\n" + PROSE).encode("utf-16")))
    assert book.encoding == "utf-16"
    assert book.title == "Wide Book"
    assert "Ashen Crown" in book.text


@pytest.mark.parametrize(
    ("name", "data", "phrase"),
    [
        ("empty.txt", b"", "empty"),
        ("blank.txt", b"  \r\n\n\t ", "empty"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, "binary"),
        ("controls.txt", b"ab\x01\x02\x03\x04\x05\x06\x07\x08" * 100, "binary"),
        ("garbled.txt", bytes([0x81, 0x8D, 0x8F, 0x90, 0x9D, 0x41]) * 300, "undecodable"),
        ("fake.epub", b"this is not a zip archive", "not a valid EPUB"),
    ],
)
def test_unusable_files_raise_one_line_naming_the_file(
    tmp_path: Path, name: str, data: bytes, phrase: str
) -> None:
    path = _write(tmp_path / name, data)
    with pytest.raises(InputFileError) as info:
        read_book(path)
    message = info.value.message
    assert phrase in message
    assert str(path) in message
    assert "\n" not in message


def test_zip_that_is_not_an_epub_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "fake.epub"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "not an epub")
    with pytest.raises(InputFileError) as info:
        read_book(path)
    assert "not a readable EPUB" in info.value.message and str(path) in info.value.message
    assert "\n" not in info.value.message


def test_gutenberg_header_and_footer_are_stripped(tmp_path: Path) -> None:
    raw = (
        "The Project Gutenberg EBook of The Lantern Road\n"
        "This eBook is for the use of anyone anywhere.\n\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK THE LANTERN ROAD ***\n\n\n"
        "The Lantern Road\n\n" + PROSE + "\n\n"
        "End of the Project Gutenberg EBook of The Lantern Road\n\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK THE LANTERN ROAD ***\n\n"
        "Section 1. General Terms of Use and Redistributing Project Gutenberg-tm\n"
    )
    book = read_book(_write(tmp_path / "01.txt", raw.encode()))
    assert book.title == "The Lantern Road"
    assert book.text.startswith("The Lantern Road\n\nMira")
    assert book.text.endswith("inside it.")
    assert "Gutenberg" not in book.text
    # Text without markers is left alone, even when it talks about an end.
    plain = "*** END OF PART ONE ***\n\nMore story."
    assert strip_gutenberg(plain) == plain


def test_books_are_ordered_by_file_name_and_other_files_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    _write(folder / "02_second.txt", b"Second Book\n\nBody two.")
    _write(folder / "01_first.txt", b"[Illustration]\n\nFirst\nBook\n\nBody one.")
    _write(folder / "manifest.json", b"{}")
    _write(folder / ".hidden.txt", b"ignored")
    books = read_books(folder)
    assert [b.file_name for b in books] == ["01_first.txt", "02_second.txt"]
    assert [b.title for b in books] == ["First Book", "Second Book"]


def test_chapter_headings_in_their_usual_shapes() -> None:
    text = "\n\n".join(
        [
            "The Book",
            "by\n\nL. Frank Baum",
            "Contents\n   1.  The Cyclone\n   2.  The Council",
            "1.  The Cyclone",
            "Dorothy lived in Kansas.",
            "CHAPTER II. The Pool of Tears",
            "Alice wept.",
            "Chapter 3: The Race",
            "They ran.",
            "Chapter Four",
            "Ojo and Unc Nunkie",
            "Ojo spoke.",
            "                                CHAPTER 5",
            '"I won\'t!" cried Ann.',
            "Prologue",
            "Chapter Twenty-One",
            "The end came.",
        ]
    )
    chapters = detect_chapters(text)
    assert [c.title for c in chapters] == [
        "1. The Cyclone",
        "CHAPTER II. The Pool of Tears",
        "Chapter 3: The Race",
        "Chapter Four: Ojo and Unc Nunkie",
        "CHAPTER 5",
        "Prologue",
        "Chapter Twenty-One",
    ]
    for chapter in chapters:
        assert text[chapter.start :].lstrip().startswith(chapter.title.split(":")[0].split()[0])
    assert chapter_at(chapters, 0) == ""
    assert chapter_at(chapters, text.index("They ran.")) == "Chapter 3: The Race"


def test_paragraph_spans_tile_the_text() -> None:
    text = "One.\n\nTwo\nlines.\n \n\n\tThree.\n\nFour."
    paras = paragraphs(text)
    assert [text[p.start : p.end] for p in paras] == ["One.", "Two\nlines.", "Three.", "Four."]
    assert paras[0].start == 0 and paras[-1].next_start == len(text)
    assert all(a.next_start == b.start for a, b in itertools.pairwise(paras))


def test_epub_in_spine_order_with_paragraphs_and_chapters(tmp_path: Path) -> None:
    path = make_epub(
        tmp_path / "01_tower.epub",
        "The Glass Tower",
        [
            ("Chapter 1: The Gate", ["Mira  walked <b>north</b>.", "She met Tomas."]),
            ("The Second Door", ["Tomas the Elder frowned.", "The tower was silent."]),
        ],
    )
    book = read_book(path)
    assert book.title == "The Glass Tower"
    assert book.encoding == "epub"
    assert book.text == (
        "Chapter 1: The Gate\n\nMira walked north.\n\nShe met Tomas.\n\n"
        "The Second Door\n\nTomas the Elder frowned.\n\nThe tower was silent."
    )
    assert [c.title for c in book.chapters] == ["Chapter 1: The Gate", "The Second Door"]
    assert book.text[book.chapters[1].start :].startswith("The Second Door")


def test_an_epub_series_is_sectioned_like_text(tmp_path: Path) -> None:
    folder = tmp_path / "glass"
    paras = [f"Paragraph {i} of the tale: Mira walked on and on. " * 6 for i in range(40)]
    make_epub(folder / "01_tower.epub", "The Glass Tower", [("Chapter 1", paras[:20])])
    make_epub(folder / "02_sea.epub", "The Glass Sea", [("Chapter 1", paras[20:])])
    books = read_books(folder)
    plan = plan_sections(
        books,
        slug="glass",
        series_name="Glass",
        ontology=default_ontology("glass"),
        model=get_model("claude-haiku-4-5"),
        max_tokens=8000,
        max_section_tokens=600,
    )
    assert len(plan.sections) > 2
    assert "".join(s.text for s in plan.sections) == series_text(books)
    assert {sp.title for s in plan.sections for sp in s.spans} == {
        "The Glass Tower",
        "The Glass Sea",
    }


def test_oz_books_have_their_chapters(oz_dir: Path) -> None:
    books = read_books(oz_dir)
    assert len(books) == 14
    first = books[0]
    assert first.title == "The Wonderful Wizard of Oz"
    assert len(first.chapters) == 24
    assert first.chapters[0].title == "1. The Cyclone"
    assert first.chapters[-1].title == "24. Home Again"
    assert books[7].title == "Tik-Tok OF OZ"  # the [Illustration] marker is not a title


def test_credit_lines_are_not_text_and_the_title_comes_from_the_gutenberg_header(
    tmp_path: Path,
) -> None:
    book = tmp_path / "01_book.txt"
    book.write_text(
        "The Project Gutenberg eBook of The Lost Princess of Oz\n\n"
        "Title: The Lost Princess\n       of Oz\n\nAuthor: L. Frank Baum\n\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK THE LOST PRINCESS OF OZ ***\n\n"
        "[Illustration: Frontispiece. Ozma and Dorothy\nin the garden]\n\n"
        "Produced by Jane Roe and the Online Distributed\nProofreading Team\n\n"
        "HTML version by Al Haines.\n\n"
        "CHAPTER 1\n\nA Terrible Loss\n\nThe text was produced by the author, Ozma said.\n\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK THE LOST PRINCESS OF OZ ***\n",
        encoding="utf-8",
    )
    read = read_book(book)
    assert read.title == "The Lost Princess of Oz"
    assert "Produced by" not in read.text and "HTML version" not in read.text
    assert "Jane Roe" not in read.text
    # Only credit paragraphs go: a sentence of the story that says "produced by" stays.
    assert "The text was produced by the author, Ozma said." in read.text
    assert [c.title for c in read.chapters] == ["CHAPTER 1: A Terrible Loss"]


def test_a_caption_before_the_title_page_is_not_the_title(tmp_path: Path) -> None:
    book = tmp_path / "02_book.txt"
    book.write_text(
        '[Illustration: "I am the Scarecrow," he said,\nbowing low]\n\n'
        "The Marvelous\nLand of Oz\n\nOnce upon a time there was a boy named Tip.\n",
        encoding="utf-8",
    )
    assert read_book(book).title == "The Marvelous Land of Oz"


def test_all_capital_headings_count_as_chapters_when_a_book_uses_them() -> None:
    text = (
        "THE RIVER BOOK\n\nBy A. Writer\n\nON THE RIVER\n\nThey rowed all day.\n\n"
        '"HELP!" cried Tom.\n\nTHE GREAT FLOOD\n\nThe water rose.\n\n'
        "A DAY IN TOWN\n\nThey went to town.\n\nTHE END\n"
    )
    titles = [c.title for c in detect_chapters(text)]
    assert titles == ["THE RIVER BOOK", "ON THE RIVER", "THE GREAT FLOOD", "A DAY IN TOWN"]
    # One capital line is a shout or a sign, not a heading style: no chapter then.
    assert detect_chapters("Text.\n\nKEEP OUT\n\nMore text.\n") == []
    # A capital title under "CHAPTER I" belongs to that heading, not a chapter of its own.
    both = detect_chapters("CHAPTER I\n\nTHE CYCLONE\n\nText.\n\nCHAPTER II\n\nTHE COUNCIL\n\nT.")
    assert [c.title for c in both] == ["CHAPTER I: THE CYCLONE", "CHAPTER II: THE COUNCIL"]
