"""Read books: ``.txt`` and ``.epub`` into one normalized text per book.

Normalization is what every character offset downstream (section spans, grounding) refers to, so
it is small and fixed:

Why it works this way: docs/architecture.md, "Text, sections and answer sizing".
"""

import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.domain.text.chapters import (
    Chapter,
    Paragraph,
    detect_chapters,
    iter_paragraphs,
    paragraphs,
)

BOOK_SUFFIXES = (".txt", ".epub")

_GUTENBERG_START_RE = re.compile(
    r"^[ \t]*\*{3}\s*START OF\b[^\n]*GUTENBERG[^\n]*$", re.IGNORECASE | re.MULTILINE
)
_GUTENBERG_END_RE = re.compile(
    r"^[ \t]*\*{3}\s*END OF\b[^\n]*GUTENBERG[^\n]*$", re.IGNORECASE | re.MULTILINE
)
_GUTENBERG_END_LINE_RE = re.compile(
    r"\n[ \t]*End of (?:the )?Project Gutenberg\S*(?: (?:EBook|eBook|Etext|E-text))?[^\n]*\s*\Z",
    re.IGNORECASE,
)
# Credit lines of a transcription are not the book's text ("Produced by X and the Online
# Distributed Proofreading Team", "Transcribed by", "HTML version by", "E-text prepared by").
_CREDIT_RE = re.compile(
    r"\s*(?:(?:this\s+)?e-?(?:text|book)\s+(?:was\s+)?(?:produced|prepared|transcribed)"
    r"|produced|transcribed|prepared|html\s+version|scanned|proofread|digiti[sz]ed)"
    r"\b[^\n]{0,80}?\bby\b",
    re.IGNORECASE,
)
# Credits sit on the title pages: look no further than this into the book.
_CREDIT_WINDOW = 6000
_META_TITLE_RE = re.compile(r"^Title:[ \t]*(\S[^\n]*(?:\n[ \t]+\S[^\n]*)*)", re.MULTILINE)
# Control characters that never occur in text files (tab, LF, VT, FF, CR are allowed).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_C1_RE = re.compile(r"[\x80-\x9f]")
_MAX_CONTROL_SHARE = 0.001
# A well-formed UTF-8 multi-byte character; cp1252 or latin-1 text almost never contains one.
_UTF8_MULTIBYTE_RE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
_MIXED_MIN_SEQUENCES = 3
_SNIFF_BYTES = 65536


@dataclass(frozen=True)
class Book:
    """One book, read and normalized.

    Attributes:
        path: Where it was read from.
        title: The Gutenberg header's ``Title:`` or the title page's first lines (txt), or the
            EPUB's ``dc:title``.
        text: Normalized text; every book offset in the project points into it.
        encoding: What the bytes were decoded as (``utf-8``, ``cp1252``, ``epub``, ...).
        warnings: Things the user should know (e.g. a fallback encoding), one line each.
        chapters: Chapter headings with their offsets in ``text``.
    """

    path: Path
    title: str
    text: str
    encoding: str
    warnings: tuple[str, ...] = ()
    chapters: tuple[Chapter, ...] = field(default=())
    paragraphs: tuple[Paragraph, ...] = field(default=(), repr=False, compare=False)

    def paragraph_spans(self) -> tuple[Paragraph, ...]:
        """The text's paragraphs (computed at read time; recomputed for hand-built books)."""
        return self.paragraphs or tuple(paragraphs(self.text))

    @property
    def file_name(self) -> str:
        """The book's file name (``01_the_lantern_road.txt``): how meta files refer to it."""
        return self.path.name


def list_book_files(folder: Path) -> list[Path]:
    """The ``.txt`` and ``.epub`` files directly in ``folder``, ordered by file name.

    Hidden files (``.name``) are skipped; other files (manifests, images) are ignored.
    """
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in BOOK_SUFFIXES
    ]
    return sorted(files, key=lambda p: p.name)


def read_book(path: Path) -> Book:
    """Read one ``.txt`` or ``.epub`` book.

    Raises:
        InputFileError: missing, empty, binary, undecodable or unreadable file; one line.
    """
    suffix = path.suffix.lower()
    if suffix not in BOOK_SUFFIXES:
        raise InputFileError(f"{path}: not a book file; use .txt (UTF-8) or .epub")
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise InputFileError(f"book file not found: {path}") from exc
    except OSError as exc:
        raise InputFileError(f"cannot read book file {path}: {exc.strerror}") from exc
    if not raw.strip():
        raise InputFileError(f"{path}: the book file is empty; remove it or add its text")
    if suffix == ".epub":
        return _read_epub(path, raw)
    return _read_txt(path, raw)


def read_books(folder: Path) -> list[Book]:
    """Read every book of a series folder, ordered by file name.

    Raises:
        InputFileError: the folder is missing or holds no book, or a book cannot be read.
    """
    if not folder.is_dir():
        raise InputFileError(f"books folder not found: {folder}")
    files = list_book_files(folder)
    if not files:
        raise InputFileError(f"no .txt or .epub books in {folder}")
    return [read_book(p) for p in files]


# ------------------------------------------------------------------------------------------------
# .txt
# ------------------------------------------------------------------------------------------------


def _decode(path: Path, raw: bytes) -> tuple[str, str, list[str]]:
    """Decode bytes to text; returns ``(text, encoding, warnings)``."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16"), "utf-16", []
        except UnicodeDecodeError as exc:
            raise InputFileError(
                f"{path}: starts with a UTF-16 byte-order mark but is not valid UTF-16; "
                "re-save it as UTF-8"
            ) from exc
    if b"\x00" in raw[:_SNIFF_BYTES] or b"\x00" in raw[-_SNIFF_BYTES:]:
        raise InputFileError(
            f"{path}: looks like a binary file (NUL bytes), not a book; use UTF-8 text or EPUB"
        )
    try:
        return raw.decode("utf-8-sig"), "utf-8", []
    except UnicodeDecodeError as exc:
        first_bad = exc.start
    utf8_sequences = len(_UTF8_MULTIBYTE_RE.findall(raw))
    if utf8_sequences >= _MIXED_MIN_SEQUENCES:
        # Valid UTF-8 letters next to non-UTF-8 bytes: decoding everything as cp1252 would
        # silently garble the UTF-8 part ("caf\u00c3\u00a9"), so refuse instead of guessing.
        raise InputFileError(
            f"{path}: mixed encodings ({utf8_sequences} UTF-8 characters, then invalid UTF-8 at "
            f"byte {first_bad}); re-save the whole file as UTF-8"
        )
    try:
        text = raw.decode("cp1252")
        return (
            text,
            "cp1252",
            [
                f"{path.name}: not valid UTF-8 (byte {first_bad}); decoded as cp1252, "
                "check accented letters and quotes"
            ],
        )
    except UnicodeDecodeError:
        pass
    text = raw.decode("latin-1")
    strays = len(_C1_RE.findall(text))
    if strays > max(1, len(text) // 10000):
        raise InputFileError(
            f"{path}: undecodable text (not UTF-8, cp1252 or latin-1; {strays} stray control "
            "bytes); re-save it as UTF-8"
        )
    return (
        text,
        "latin-1",
        [
            f"{path.name}: not valid UTF-8 (byte {first_bad}) nor cp1252; decoded as latin-1, "
            "check accented letters"
        ],
    )


def strip_gutenberg(text: str) -> str:
    """Cut a Project Gutenberg header and footer if the ``*** START OF`` / ``*** END OF`` are there.

    The "End of the Project Gutenberg EBook of ..." line that precedes the footer marker goes too.
    Text without markers is returned unchanged.
    """
    if "***" not in text:  # fast path: the markers need it, and most books have none
        return text
    start = _GUTENBERG_START_RE.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END_RE.search(text)
    if end:
        text = text[: end.start()]
        text = _GUTENBERG_END_LINE_RE.sub("\n", text)
    return text


def _normalize(text: str) -> str:
    """Line endings to LF, BOM dropped, outer whitespace stripped (offsets refer to the result)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.strip()


def _check_text(path: Path, text: str) -> None:
    if not text:
        raise InputFileError(f"{path}: the book has no text; remove it or add its text")
    controls = len(_CONTROL_RE.findall(text))
    if controls > max(2, len(text) * _MAX_CONTROL_SHARE):
        raise InputFileError(
            f"{path}: looks like a binary file ({controls} control characters), not a book; "
            "use UTF-8 text or EPUB"
        )


_MARKER_LINE_RE = re.compile(r"^\[[^\]]*\]$")
_MAX_TITLE_CHARS = 120


def _first_line(text: str) -> str:
    """The book's title as its first lines show it.

    The first paragraph that is not an ``[Illustration]``-style marker; joined when it is a title
    set over up to three short lines ("The Marvelous / Land of Oz"), else its first line.
    """
    for para in iter_paragraphs(text):
        lines = [" ".join(line.split()) for line in text[para.start : para.end].split("\n")]
        lines = [line for line in lines if line and not _MARKER_LINE_RE.match(line)]
        if not lines or lines[0].startswith("[") or lines[0].lower().startswith("frontispiece"):
            continue  # an illustration caption, however many lines it spans
        joined = " ".join(lines)
        if len(lines) <= 3 and len(joined) <= _MAX_TITLE_CHARS:
            return joined
        return lines[0][:200]
    return ""


def metadata_title(text: str) -> str:
    """The ``Title:`` of a Project Gutenberg header (before its START marker), or ``""``."""
    start = _GUTENBERG_START_RE.search(text)
    if start is None:
        return ""
    m = _META_TITLE_RE.search(text, 0, start.start())
    return " ".join(m.group(1).split())[:200] if m else ""


def strip_credits(text: str) -> str:
    """Cut transcription credit paragraphs from the title pages (the first few thousand chars)."""
    cuts: list[tuple[int, int]] = []
    for para in iter_paragraphs(text):
        if para.start > _CREDIT_WINDOW:
            break
        if _CREDIT_RE.match(text, para.start, para.end):
            cuts.append((para.start, para.next_start))
    for start, end in reversed(cuts):
        text = text[:start] + text[end:]
    return text


def _read_txt(path: Path, raw: bytes) -> Book:
    text, encoding, notes = _decode(path, raw)
    text = _normalize(text)
    meta_title = metadata_title(text)
    text = _normalize(strip_credits(_normalize(strip_gutenberg(text))))
    _check_text(path, text)
    paras = paragraphs(text)
    return Book(
        path=path,
        title=meta_title or _first_line(text) or path.stem,
        text=text,
        encoding=encoding,
        warnings=tuple(notes),
        chapters=tuple(detect_chapters(text, paras)),
        paragraphs=tuple(paras),
    )


# ------------------------------------------------------------------------------------------------
# .epub
# ------------------------------------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "section",
        "article",
        "header",
        "footer",
        "aside",
        "blockquote",
        "pre",
        "li",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "table",
        "tr",
        "td",
        "th",
        "figure",
        "figcaption",
        "hr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "body",
        "nav",
    }
)
_HEADING_TAGS = frozenset({"h1", "h2", "h3"})
_SKIP_TAGS = frozenset({"head", "script", "style", "title", "svg", "math", "template"})


class _Paragraphs:
    """Collects the paragraphs of HTML documents, remembering which ones were headings."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.headings: set[int] = set()
        self._buf: list[str] = []

    def add(self, text: str) -> None:
        self._buf.append(text)

    def flush(self, heading: bool = False) -> None:
        raw = "".join(self._buf)
        self._buf = []
        lines = [" ".join(line.split()) for line in raw.split("\n")]
        text = "\n".join(line for line in lines if line)
        if text:
            if heading:
                self.headings.add(len(self.items))
            self.items.append(text)


def _walk(node: Any, out: _Paragraphs) -> None:
    from bs4.element import Comment, NavigableString, Tag

    for child in node.children:
        if isinstance(child, Comment):
            continue
        if isinstance(child, NavigableString):
            out.add(str(child))
            continue
        if not isinstance(child, Tag):
            continue
        name = child.name.lower()
        if name in _SKIP_TAGS:
            continue
        if name == "br":
            out.add("\n")
        elif name in _BLOCK_TAGS:
            out.flush()
            _walk(child, out)
            out.flush(heading=name in _HEADING_TAGS)
        else:
            _walk(child, out)


def html_to_paragraphs(html: bytes | str) -> tuple[list[str], set[int]]:
    """Turn one XHTML document into paragraphs; also return the indexes of h1–h3 headings."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    root = soup.body or soup
    out = _Paragraphs()
    _walk(root, out)
    out.flush()
    return out.items, out.headings


def _read_epub(path: Path, raw: bytes) -> Book:
    if not zipfile.is_zipfile(path):
        raise InputFileError(f"{path}: not a valid EPUB (not a zip archive); re-export the book")
    try:
        import ebooklib
        from ebooklib import epub

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            doc = epub.read_epub(str(path), options={"ignore_ncx": True})
    except Exception as exc:  # ebooklib raises anything from KeyError to lxml errors
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise InputFileError(f"{path}: not a readable EPUB ({reason}); re-export it") from exc

    paras: list[str] = []
    heading_idx: set[int] = set()
    for entry in doc.spine:
        idref = entry[0] if isinstance(entry, tuple) else entry
        item = doc.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        if isinstance(item, epub.EpubNav) or "nav" in (getattr(item, "properties", None) or []):
            continue  # the table of contents is navigation, not text
        items, heads = html_to_paragraphs(item.get_content())
        heading_idx.update(len(paras) + i for i in heads)
        paras.extend(items)
    text = "\n\n".join(paras)
    _check_text(path, text)

    # Offsets of headings in the joined text; detect_chapters' patterns are added on top.
    offsets: list[int] = []
    pos = 0
    for para in paras:
        offsets.append(pos)
        pos += len(para) + 2
    titles = doc.get_metadata("DC", "title")
    title = " ".join(str(titles[0][0]).split()) if titles else ""
    paras_spans = paragraphs(text)
    chapters = {c.start: c for c in detect_chapters(text, paras_spans)}
    for i in sorted(heading_idx):
        label = " ".join(paras[i].split())
        if offsets[i] not in chapters and label != title:
            chapters[offsets[i]] = Chapter(title=label[:200], start=offsets[i])
    return Book(
        path=path,
        title=title or _first_line(text) or path.stem,
        text=text,
        encoding="epub",
        chapters=tuple(chapters[k] for k in sorted(chapters)),
        paragraphs=tuple(paras_spans),
    )
