"""Paragraphs and chapter headings of a book's normalized text.

Why it works this way: docs/architecture.md, "Text, sections and answer sizing".
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass

# Starts at a newline (cheap to find); trailing spaces before it stay in the paragraph's span.
_PARAGRAPH_BREAK_RE = re.compile(r"\n(?:[ \t\f\v]*\n)+\s*")

_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
    "sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|"
    "hundred|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|last|final"
)
_NUMBER = rf"(?:\d{{1,4}}|[ivxlcdm]{{1,8}}|(?:{_NUMBER_WORDS})(?:[- ](?:{_NUMBER_WORDS}))*)"
_CHAPTER_RE = re.compile(
    rf"^(?:chapter|chap\.|book|part)\s+{_NUMBER}\b\.?(?:\s*[:.\-\u2013\u2014]\s*|\s+|$)(?P<title>.*)$",
    re.IGNORECASE,
)
# "1.  The Cyclone", "IV. The Escape"; not "L. Frank Baum" (an initial, not a numeral).
_NUMBERED_TITLE_RE = re.compile(
    r"^(?:\d{1,3}|[IVX]{1,6})\.\s+(?![A-Z]\.)(?P<title>[A-Z\"'\u201c].{0,80})$"
)
_NAMED_RE = re.compile(
    r"^(?:prologue|epilogue|interlude|afterword)\b(?:\s*[:.\-\u2013\u2014]\s*(?P<title>.*))?$",
    re.IGNORECASE,
)
# "ON THE RIVER": a bare all-capital line as a chapter heading (no "Chapter" word, no number).
_CAPS_HEADING_RE = re.compile(r"^[A-Z][A-Z'’\-]*(?:[ ,'’\-]+[A-Z][A-Z'’\-]*)*[!?]?$")
# Bare capital headings count only when a book uses them as a style, not for one shout.
_MIN_CAPS_HEADINGS = 3
_MAX_HEADING_CHARS = 100
_MAX_TITLE_LINE_CHARS = 70
_MAX_HEADING_PARAGRAPH = 400  # characters, indentation included


@dataclass(frozen=True)
class Paragraph:
    """A paragraph's text span ``[start, end)`` and where the next paragraph starts.

    ``next_start`` includes the blank-line run after the paragraph, so the spans
    ``[start, next_start)`` of all paragraphs tile the text without gaps.
    """

    start: int
    end: int
    next_start: int


@dataclass(frozen=True)
class Chapter:
    """A chapter heading: its label and the offset of the heading in the book text."""

    title: str
    start: int


def iter_paragraphs(text: str) -> Iterator[Paragraph]:
    """Yield the paragraphs of ``text`` in order (lazily, for callers that stop early)."""
    pos = len(text) - len(text.lstrip())
    for m in _PARAGRAPH_BREAK_RE.finditer(text, pos):
        if m.start() > pos:
            yield Paragraph(pos, m.start(), m.end())
        pos = m.end()
    if pos < len(text):
        yield Paragraph(pos, len(text.rstrip()), len(text))


def paragraphs(text: str) -> list[Paragraph]:
    """Split ``text`` into paragraphs whose ``[start, next_start)`` spans tile it exactly.

    Leading whitespace before the first paragraph belongs to no paragraph; callers strip books
    first, so the first paragraph starts at 0. A paragraph's ``end`` may include spaces that
    trail its last line.
    """
    return list(iter_paragraphs(text))


def _heading_label(lines: list[str]) -> tuple[str, bool] | None:
    """Return ``(label, has_title)`` if these lines form a heading, else ``None``."""
    first = " ".join(lines[0].split())
    if not first or len(first) > _MAX_HEADING_CHARS:
        return None
    rest = " ".join(" ".join(line.split()) for line in lines[1:]).strip()
    for regex in (_CHAPTER_RE, _NAMED_RE):
        m = regex.match(first)
        if m:
            title = (m.group("title") or "").strip()
            if rest:
                if title or len(rest) > _MAX_TITLE_LINE_CHARS:
                    return None
                return f"{first}: {rest}", True
            return first, bool(title)
    if not rest and _NUMBERED_TITLE_RE.match(first) and not first.endswith((".", ",")):
        return first, True
    return None


def _is_title_line(text: str) -> bool:
    """A short single line that can serve as the title of a bare ``CHAPTER 1`` heading."""
    line = " ".join(text.split())
    if "\n" in text.strip() or not line or len(line) > _MAX_TITLE_LINE_CHARS:
        return False
    # Titles do not open with dialogue or end like a sentence ("The end came.").
    return line[0] not in "\"'\u201c\u2018(" and not line.endswith((".", ",", ";", ":"))


def detect_chapters(text: str, paras: list[Paragraph] | None = None) -> list[Chapter]:
    """Find chapter headings in a book's normalized text, in order.

    Args:
        text: The book text.
        paras: Its paragraphs, if already computed.

    Returns:
        One :class:`Chapter` per heading paragraph; a bare heading followed by a short title line
        gets that title appended (``Chapter One: Ojo and Unc Nunkie``).
    """
    paras = paras if paras is not None else paragraphs(text)
    chapters: list[Chapter] = []
    caps: list[Chapter] = []
    consumed = -1  # a title line already appended to the heading before it
    for i, para in enumerate(paras):
        if para.end - para.start > _MAX_HEADING_PARAGRAPH or i == consumed:
            continue  # cheap exit: most paragraphs are far longer than any heading
        body = text[para.start : para.end]
        lines = [line for line in body.split("\n") if line.strip()]
        if not lines or len(lines) > 2:
            continue
        found = _heading_label(lines)
        if found is None:
            if len(lines) == 1 and _is_caps_heading(lines[0]):
                caps.append(Chapter(title=" ".join(lines[0].split()), start=para.start))
            continue
        label, has_title = found
        if not has_title and i + 1 < len(paras):
            nxt = paras[i + 1]
            nxt_text = text[nxt.start : nxt.end]
            if _is_title_line(nxt_text) and _heading_label([nxt_text]) is None:
                label = f"{label}: {' '.join(nxt_text.split())}"
                consumed = i + 1
        chapters.append(Chapter(title=label, start=para.start))
    if len(caps) >= _MIN_CAPS_HEADINGS:
        chapters = sorted(chapters + caps, key=lambda c: c.start)
    return chapters


def _is_caps_heading(line: str) -> bool:
    """A short line in capitals that is not a shout in dialogue nor "THE END"."""
    line = " ".join(line.split())
    letters = sum(c.isalpha() for c in line)
    return (
        letters >= 4
        and len(line) <= _MAX_TITLE_LINE_CHARS
        and _CAPS_HEADING_RE.match(line) is not None
        and line not in ("THE END", "FINIS", "CONTENTS", "ILLUSTRATIONS")
    )


def chapter_at(chapters: list[Chapter], offset: int) -> str:
    """Label of the chapter in effect at ``offset`` (``""`` before the first heading)."""
    current = ""
    for chapter in chapters:
        if chapter.start > offset:
            break
        current = chapter.title
    return current
