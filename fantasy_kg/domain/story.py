"""Story time: where each book's chapters start, so facts can be cut at "book N, chapter C".

The warehouse knows the book and the character offset of every grounded mention and evidence
quote, but not its chapter. Chapters are found again in the section texts (the same heading
detection sectioning uses) and mapped to book offsets through each section's spans; the
``chapters`` table then lets SQL (the ``graph_as_of`` macro) and the HTML view place any fact at a
``(book_no, chapter_no)`` point. Chapter 0 is the text before a book's first heading (its title
page), so a book without detected headings is one chapter 0.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, ClassVar

from fantasy_kg.domain.columns import Col
from fantasy_kg.domain.sections import SectionMeta
from fantasy_kg.domain.text.chapters import detect_chapters

CHAPTER_UNKNOWN = 1_000_000
"""Chapter number of a fact whose offset is unknown (ungrounded quote): the end of its book, so
a spoiler-free cut never shows it before the whole book is read."""


@dataclass(slots=True)
class ChapterRow:
    """One chapter heading of one book, in book coordinates (table ``chapters``)."""

    TABLE: ClassVar[str] = "chapters"
    PRIMARY_KEY: ClassVar[tuple[str, ...]] = ("series", "book_file", "chapter_no")

    series: Annotated[str, Col("VARCHAR NOT NULL", "Series slug (the partition key).")]
    book_no: Annotated[int, Col("INTEGER NOT NULL", "Book number in story order.")]
    book_file: Annotated[str, Col("VARCHAR NOT NULL", "Book file name.")]
    book: Annotated[str, Col("VARCHAR", "Book title.")]
    chapter_no: Annotated[
        int, Col("INTEGER NOT NULL", "Heading number within the book (0 = before the first).")
    ]
    title: Annotated[str, Col("VARCHAR", "The chapter heading as written.")]
    char_start: Annotated[int, Col("BIGINT NOT NULL", "Offset of the heading in the book file.")]
    char_end: Annotated[int | None, Col("BIGINT", "Where the next heading (or the text) ends.")]


def book_numbers(metas: Iterable[SectionMeta]) -> dict[str, tuple[int, str]]:
    """Book file → ``(book_no, title)`` in story order, numbered as the graph builder numbers them.

    Books are numbered by first appearance across the sections in section order (the order the
    graph builder uses for ``book_no``), so chapters and facts agree on which book is which.
    """
    found: dict[str, tuple[int, str]] = {}
    for meta in metas:
        names = [s.book for s in meta.spans] or list(meta.book_files) or list(meta.books)
        titles = [s.title for s in meta.spans] or list(meta.books)
        for i, name in enumerate(names):
            if name not in found:
                title = titles[i] if i < len(titles) and titles[i] else name
                found[name] = (len(found) + 1, title)
    return found


def chapter_rows(series: str, sections: Sequence[tuple[SectionMeta, str]]) -> list[ChapterRow]:
    """Every chapter heading of a series' books, from its sections' texts and spans.

    Args:
        series: Series slug.
        sections: ``(meta, text)`` per section, in section order.

    Returns:
        One row per heading, ordered by book and offset; ``chapter_no`` counts headings within a
        book from 1 and ``char_end`` is where the next heading (or the last covered text) starts.
    """
    books = book_numbers(meta for meta, _ in sections)
    heads: dict[str, dict[int, str]] = {}
    book_end: dict[str, int] = {}
    for meta, text in sections:
        for span in meta.spans:
            length = span.end - span.start
            piece = text[span.section_start : span.section_start + length]
            book_end[span.book] = max(book_end.get(span.book, 0), span.end)
            found = heads.setdefault(span.book, {})
            for chapter in detect_chapters(piece):
                found.setdefault(span.start + chapter.start, chapter.title)
    rows: list[ChapterRow] = []
    for book_file, (book_no, title) in sorted(books.items(), key=lambda kv: kv[1][0]):
        starts = sorted(heads.get(book_file, {}))
        for i, start in enumerate(starts):
            rows.append(
                ChapterRow(
                    series=series,
                    book_no=book_no,
                    book_file=book_file,
                    book=title,
                    chapter_no=i + 1,
                    title=heads[book_file][start],
                    char_start=start,
                    char_end=starts[i + 1] if i + 1 < len(starts) else book_end.get(book_file),
                )
            )
    return rows
