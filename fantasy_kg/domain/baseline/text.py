"""Sentences, sentence-initial positions and the lowercase vocabulary of one section.

Capitalization is the extractor's main signal for names, and it lies at the start of every
sentence and every quoted utterance. These helpers find those positions once per section (one
linear regex pass each) so that name finding can tell "Out on the water" from "Mira".
"""

import re
from bisect import bisect_right
from dataclasses import dataclass

# A sentence ends at ., ! or ? (plus closing quotes/brackets) before whitespace, or at a blank line.
_BOUNDARY_RE = re.compile(r"[.!?]+[\"'”’)\]_]*(?=\s)|\n[ \t]*\n")
_ABBREVIATIONS = frozenset({"Mr", "Mrs", "Ms", "Dr", "St", "Mt", "Jr", "Sr", "Messrs", "Capt"})
_WORD_BEFORE_RE = re.compile(r"([A-Za-z]+)\.$")
# Where a quoted utterance opens: its first word is capitalized like a sentence start.
_OPEN_QUOTE_RE = re.compile(r"(?:(?<=^)|(?<=[\s(\[—–-]))[\"“‘]|“")
_FIRST_LETTER_RE = re.compile(r"[\s\"“”‘’'(\[_*—–-]*([A-Za-z])")
_LOWER_WORD_RE = re.compile(r"\b[a-z][a-z]+\b")


@dataclass(frozen=True)
class Sentences:
    """Sentence spans of a text, with a fast offset → sentence lookup."""

    spans: list[tuple[int, int]]
    starts: list[int]

    def index_of(self, offset: int) -> int:
        """Index of the sentence that contains ``offset`` (the previous one if between two)."""
        return max(0, bisect_right(self.starts, offset) - 1)


def split_sentences(text: str) -> Sentences:
    """Split ``text`` into sentence spans ``(start, end)``, trimmed of surrounding whitespace.

    Hard-wrapped books (Project Gutenberg) keep single newlines inside sentences, so only a blank
    line or terminal punctuation followed by a capital, a quote or a digit ends a sentence.
    Abbreviations such as "Mr." do not.
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    n = len(text)
    for m in _BOUNDARY_RE.finditer(text):
        end = m.end()
        if m.group().startswith(("\n", " ", "\t")):
            cut = m.start()
        else:
            if m.group().startswith("."):
                before = _WORD_BEFORE_RE.search(text, max(0, m.start() - 12), m.start() + 1)
                if before and before.group(1) in _ABBREVIATIONS:
                    continue
            nxt = end
            while nxt < n and text[nxt].isspace():
                nxt += 1
            if nxt < n and not (
                text[nxt].isupper() or text[nxt].isdigit() or text[nxt] in "\"“'‘(_"
            ):
                continue
            cut = end
        _add_span(text, pos, cut, spans)
        pos = end
    _add_span(text, pos, n, spans)
    return Sentences(spans=spans, starts=[s for s, _ in spans])


def _add_span(text: str, start: int, end: int, out: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        out.append((start, end))


def initial_positions(text: str, sentences: Sentences) -> set[int]:
    """Offsets of words that are capitalized by position: sentence starts and quote openings."""
    found: set[int] = set()
    for start, end in sentences.spans:
        m = _FIRST_LETTER_RE.match(text, start, end)
        if m:
            found.add(m.start(1))
    for q in _OPEN_QUOTE_RE.finditer(text):
        m = _FIRST_LETTER_RE.match(text, q.end())
        if m:
            found.add(m.start(1))
    return found


def lowercase_vocabulary(text: str) -> frozenset[str]:
    """Every word that occurs in lowercase: a capitalized word found here may be a common word."""
    return frozenset(_LOWER_WORD_RE.findall(text))


_LINE_RE = re.compile(r"[^\n]+")
_HEADING_WORD_RE = re.compile(r"[A-Za-z][A-Za-z'’-]*")
_NUMBERING_RE = re.compile(r"^(?:\d+|[IVXLC]+)\.?\s+")
_SMALL_WORDS = frozenset(
    re.findall(
        r"\w+",
        "a an and as at but by for from in into is of on or the to with was were her his its",
    )
)


def mask_headings(text: str) -> str:
    """Blank out title-case lines (tables of contents, chapter titles) keeping every offset.

    "Dorothy Saved the Scarecrow" in a table of contents is not a name, and a chapter title
    repeats names out of any sentence. A line is a heading when it is short, has no sentence
    punctuation inside, and every word except small function words is capitalized.
    """
    out: list[str] = []
    pos = 0
    for m in _LINE_RE.finditer(text):
        line = m.group()
        if _is_heading(line):
            out.append(text[pos : m.start()])
            out.append(" " * len(line))
            pos = m.end()
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _is_heading(line: str) -> bool:
    raw = line.strip()
    stripped = _NUMBERING_RE.sub("", raw)
    numbered = stripped != raw or bool(re.match(r"^(?:chapter|book|part)\b", raw, re.IGNORECASE))
    if not stripped or len(stripped) > 90:
        return False
    if re.search(r"[,;!?\"“”]|\.\s+\S", stripped):
        return False
    words = _HEADING_WORD_RE.findall(stripped)
    content = [w for w in words if w.lower() not in _SMALL_WORDS]
    if len(content) < 2 and not numbered:
        return False
    return all(w[0].isupper() for w in content)
