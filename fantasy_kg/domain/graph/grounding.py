"""Grounding: find every mention and evidence quote in its section text, with character offsets.

Models paraphrase, change typographic quotes, re-wrap lines and occasionally invent quotes (or copy
them from an example). A fact is only as good as the text it can be traced to, so every surface
form and every quote is looked up in three stages, cheapest first:

Why it works this way: docs/architecture.md, "Graph build".
"""

import re
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from rapidfuzz import fuzz

from fantasy_kg.domain.sections import BookSpan

GroundingStatus = Literal["exact", "normalized", "fuzzy", "not_found"]
NeedleKind = Literal["mention", "quote"]

GROUNDED_STATUSES: frozenset[str] = frozenset({"exact", "normalized", "fuzzy"})

# Typographic quotes and dashes to ASCII, every whitespace character to a plain space: all
# one-to-one, so offsets survive the translation unchanged.
_ONE_TO_ONE_MAP: dict[str, str] = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201b": "'",
    "\u2032": "'",
    "\u00b4": "'",
    "`": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u201f": '"',
    "\u2033": '"',
    "\u00ab": '"',
    "\u00bb": '"',
    "\u2010": "-",
    "\u2011": "-",
    "\u2012": "-",
    "\u2013": "-",
    "\u2014": "-",
    "\u2015": "-",
    "\u2212": "-",
}
# Every character for which str.isspace() is true (so the same set str.split() splits on).
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_ONE_TO_ONE_MAP.update(dict.fromkeys(_WHITESPACE, " "))
_ONE_TO_ONE = str.maketrans(_ONE_TO_ONE_MAP)
# Characters that vanish (soft hyphen, zero-width space/joiners, BOM) or expand (ellipsis).
_DROPPED = "\u00ad\u200b\u200c\u200d\ufeff"
_EXPANDED = {"\u2026": "..."}
# Needles need no offset map: one translate does everything.
_NEEDLE_TABLE = str.maketrans({**_ONE_TO_ONE_MAP, **_EXPANDED, **dict.fromkeys(_DROPPED)})
# What the text path cannot map one-to-one: runs of spaces, dropped and expanded characters.
_SPECIAL_RE = re.compile("  +|[" + _DROPPED + "".join(_EXPANDED) + "]")
# Most texts have no dropped or expanded characters: a pattern with a literal prefix is then
# scanned about five times faster than the alternation.
_SPACES_RE = re.compile("  +")
_RARE_CHARS = _DROPPED + "".join(_EXPANDED)
_WORD_RE = re.compile(r"[^\W_]+")
_CAP_WORD_RE = re.compile(r"[A-Z][^\W_]*")
_MAX_INDEX_SCAN = 4096  # more positions than this: one str.find is cheaper


@dataclass(frozen=True, slots=True)
class GroundingConfig:
    """Thresholds of the fuzzy stage (rapidfuzz scores, 0-100).

    Attributes:
        fuzzy_quote_threshold: Minimum score for an evidence quote to count as found.
        fuzzy_name_threshold: Minimum score for a name; higher, because short names that are one
            letter apart are often different people.
        min_fuzzy_chars: Needles shorter than this (after normalization) are never matched
            fuzzily: any three letters occur somewhere in a novel.
        max_fuzzy_edits: Most characters inserted plus deleted between a needle and its match:
            a quote with a word or two changed is still found, a real quote with an invented
            clause appended is not (its score alone can pass the threshold).
        fuzzy: Switch the fuzzy stage off entirely (exact and normalized only).
    """

    fuzzy_quote_threshold: float = 85.0
    fuzzy_name_threshold: float = 90.0
    min_fuzzy_chars: int = 5
    max_fuzzy_edits: int = 30
    fuzzy: bool = True


@dataclass(frozen=True, slots=True)
class Grounding:
    """Where a needle was found in the section text (section coordinates, end exclusive)."""

    status: GroundingStatus
    start: int | None = None
    end: int | None = None
    score: float = 0.0

    @property
    def found(self) -> bool:
        """Whether the needle was located at all."""
        return self.status != "not_found"


NOT_FOUND = Grounding(status="not_found")


def normalize_text(text: str) -> str:
    """The normalized form used by stage 2 (without the offset map); used for needles."""
    return " ".join(text.translate(_NEEDLE_TABLE).split()).lower()


class OffsetMap:
    """Normalized index → original index, stored as one entry per run rather than per character.

    Normalization maps long runs of text one-to-one (only whitespace runs, dropped and expanded
    characters break them), so a section of 1.5 M characters has a few thousand runs. Storing
    runs keeps the map a few kilobytes instead of 8 bytes per character, and building it costs one
    append per run instead of one per character (the per-character map was the largest single
    cost of loading a series at scale). Lookups are a binary search over run starts.
    """

    __slots__ = ("_len", "_nstart", "_ostart", "_step")

    def __init__(self) -> None:
        self._nstart: array[int] = array("q")
        self._ostart: array[int] = array("q")
        self._step = bytearray()
        self._len = 0

    def add_run(self, orig: int, length: int, step: int) -> None:
        """Append ``length`` normalized chars starting at ``orig`` (``step`` 1) or all at it (0)."""
        if length <= 0:
            return
        self._nstart.append(self._len)
        self._ostart.append(orig)
        self._step.append(step)
        self._len += length

    @classmethod
    def collapsed(cls, length: int, spans: list[tuple[int, int]]) -> "OffsetMap":
        """The map of a text of ``length`` chars whose space runs ``spans`` became one space."""
        offsets = cls()
        offsets._len = length - sum(b - a - 1 for a, b in spans)
        if length:
            offsets._nstart.append(0)
            offsets._ostart.append(0)
            offsets._step.append(1)
        shift = 0
        for a, b in spans:
            shift += b - a - 1
            if b < length:
                offsets._nstart.append(b - shift)
                offsets._ostart.append(b)
                offsets._step.append(1)
        return offsets

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> int:
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(index)
        k = bisect_right(self._nstart, index) - 1
        return self._ostart[k] + (index - self._nstart[k]) * self._step[k]

    def __iter__(self) -> Iterator[int]:
        for k, start in enumerate(self._nstart):
            end = self._nstart[k + 1] if k + 1 < len(self._nstart) else self._len
            orig, step = self._ostart[k], self._step[k]
            for i in range(end - start):
                yield orig + i * step


def _lower_map(segment: str, base: int, out: list[str], offsets: OffsetMap) -> None:
    """Append ``segment`` lower-cased, keeping the offset of each output character."""
    low = segment.lower()
    if len(low) == len(segment):
        out.append(low)
        offsets.add_run(base, len(segment), 1)
        return
    # Rare: a character whose lower case has another length (e.g. 'İ'); map char by char.
    for i, ch in enumerate(segment):
        lc = ch.lower()
        out.append(lc)
        offsets.add_run(base + i, len(lc), 0)


def _normalize_spaces_only(lowered: str) -> tuple[str, OffsetMap]:
    """Fast path: only runs of spaces change length, so every run of text keeps step 1.

    The normalized text comes from one ``re.sub``; the map needs one breakpoint per run of
    spaces (after a run ``[a, b)`` collapsed to one space, the normalized text resumes at ``b``).
    """
    spans = [m.span() for m in _SPACES_RE.finditer(lowered)]
    return _SPACES_RE.sub(" ", lowered), OffsetMap.collapsed(len(lowered), spans)


def normalize_with_offsets(text: str) -> tuple[str, OffsetMap]:
    """Normalize ``text`` like :func:`normalize_text` and map each output char to its source.

    Everything but runs of whitespace, dropped and expanded characters maps one-to-one, so the
    work is one ``translate`` plus one step per paragraph break, not one per character.

    Returns:
        ``(normalized, offsets)`` with ``offsets[i]`` = index in ``text`` of the character that
        produced ``normalized[i]``. Leading and trailing whitespace become (at most) one space,
        which never matters for a search.
    """
    translated = text.translate(_ONE_TO_ONE)
    if not any(ch in translated for ch in _RARE_CHARS):
        lowered = translated.lower()
        if len(lowered) == len(translated):
            return _normalize_spaces_only(lowered)
    out: list[str] = []
    offsets = OffsetMap()
    pos = 0
    for m in _SPECIAL_RE.finditer(translated):
        if m.start() > pos:
            _lower_map(translated[pos : m.start()], pos, out, offsets)
        token = m.group()
        if token in _EXPANDED:
            rep = _EXPANDED[token]
            out.append(rep)
            offsets.add_run(m.start(), len(rep), 0)
        elif token[0] == " ":  # a run of whitespace
            out.append(" ")
            offsets.add_run(m.start(), 1, 1)
        pos = m.end()
    if pos < len(translated):
        _lower_map(translated[pos:], pos, out, offsets)
    return "".join(out), offsets


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _bounded(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is not glued to letters on either side."""
    if start > 0 and _is_word_char(text[start - 1]) and _is_word_char(text[start]):
        return False
    return not (end < len(text) and _is_word_char(text[end]) and _is_word_char(text[end - 1]))


def _find_bounded(haystack: str, needle: str, limit: int = 64) -> int:
    """First occurrence of ``needle`` at word boundaries, else the first occurrence, else -1.

    Names must not be found inside other words ("Mira" in "Miranda"), but if the only occurrences
    are glued (e.g. in a compound) the first one is still better than nothing.
    """
    first = haystack.find(needle)
    idx = first
    tries = 0
    while idx >= 0 and tries < limit:
        if _bounded(haystack, idx, idx + len(needle)):
            return idx
        idx = haystack.find(needle, idx + 1)
        tries += 1
    return first


class SectionText:
    """One section's text with a lazily built normalized copy for stages 2 and 3.

    Build one per section and ground all of that section's needles through it; the normalized
    copy (and its run-length offset map) exists only for sections with misses.
    """

    __slots__ = ("_caps", "_norm", "_offsets", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._norm: str | None = None
        self._offsets: OffsetMap | None = None
        self._caps: dict[str, list[int]] | None = None

    def _cap_index(self) -> dict[str, list[int]]:
        """Positions of every capitalized word, built on first use (one regex pass)."""
        if self._caps is None:
            caps: dict[str, list[int]] = {}
            for m in _CAP_WORD_RE.finditer(self.text):
                caps.setdefault(m.group(), []).append(m.start())
            self._caps = caps
        return self._caps

    def _exact(self, needle: str, kind: NeedleKind) -> int:
        """First occurrence of ``needle`` (for names: at word boundaries), or -1.

        Names and most quotes start with a capitalized word. Looking that word up in an index of
        capitalized words and checking the few places it starts replaces a scan of the whole
        section per needle (on average half of a 1.5-million-character text), which was the
        largest cost of grounding at scale. Anything the index cannot answer is searched with
        ``str.find`` as before.
        """
        text = self.text
        first_word = _CAP_WORD_RE.match(needle)
        if first_word is not None:
            positions = self._cap_index().get(first_word.group())
            if positions is not None and len(positions) <= _MAX_INDEX_SCAN:
                glued = -1
                for p in positions:
                    if text.startswith(needle, p):
                        if kind == "quote" or _bounded(text, p, p + len(needle)):
                            return p
                        if glued < 0:
                            glued = p
                if glued >= 0:
                    return glued
        return _find_bounded(text, needle) if kind == "mention" else text.find(needle)

    def occurrences(self, needle: str) -> list[tuple[int, int]]:
        """Every exact, word-bounded occurrence of a name, in text order (section coordinates).

        A mention is an occurrence, not a distinct surface: "Dorothy" said forty times in a
        section is forty mentions. Only exact, case-sensitive matches count, so the count is what
        a reader would get with a search box; a name the model wrote differently from the text is
        still grounded once by :meth:`ground`.
        """
        needle = needle.strip()
        if not needle:
            return []
        text = self.text
        first_word = _CAP_WORD_RE.match(needle)
        if first_word is not None:
            positions = self._cap_index().get(first_word.group(), [])
            starts = [p for p in positions if text.startswith(needle, p)]
        else:
            starts = []
            idx = text.find(needle)
            while idx >= 0:
                starts.append(idx)
                idx = text.find(needle, idx + 1)
        return [(p, p + len(needle)) for p in starts if _bounded(text, p, p + len(needle))]

    def _normalized(self) -> tuple[str, OffsetMap]:
        if self._norm is None or self._offsets is None:
            self._norm, self._offsets = normalize_with_offsets(self.text)
        return self._norm, self._offsets

    def _span(self, nstart: int, nend: int) -> tuple[int, int]:
        """Map a normalized span back to the original text."""
        _, offsets = self._normalized()
        start = offsets[nstart]
        end = offsets[nend - 1] + 1
        # An expanded ellipsis maps three chars to one: the end is that one char, included.
        return start, max(end, start + 1)

    def ground(
        self, needle: str, kind: NeedleKind, config: GroundingConfig = GroundingConfig()
    ) -> Grounding:
        """Locate ``needle`` in the section (exact, then normalized, then fuzzy).

        Args:
            needle: A mention surface or an evidence quote as the model wrote it.
            kind: ``mention`` searches at word boundaries and uses the name threshold;
                ``quote`` uses the quote threshold.
            config: Fuzzy thresholds.

        Returns:
            The status and the span in section coordinates (``not_found`` has no span).
        """
        needle = needle.strip()
        if not needle:
            return NOT_FOUND
        idx = self._exact(needle, kind)
        if idx >= 0:
            return Grounding("exact", idx, idx + len(needle), 100.0)
        nneedle = normalize_text(needle)
        if not nneedle:
            return NOT_FOUND
        norm, _ = self._normalized()
        nidx = _find_bounded(norm, nneedle) if kind == "mention" else norm.find(nneedle)
        if nidx >= 0:
            start, end = self._span(nidx, nidx + len(nneedle))
            return Grounding("normalized", start, end, 100.0)
        if not config.fuzzy or len(nneedle) < config.min_fuzzy_chars:
            return NOT_FOUND
        threshold = (
            config.fuzzy_name_threshold if kind == "mention" else config.fuzzy_quote_threshold
        )
        found = self._fuzzy(nneedle, threshold, whole_text_fallback=kind == "mention")
        if found is None:
            return NOT_FOUND
        score, nstart, nend = found
        # Indel distance implied by the score: (1 - score) * (len(needle) + len(window)).
        edits = (1.0 - score / 100.0) * (len(nneedle) + (nend - nstart))
        if edits > config.max_fuzzy_edits + 1e-6:
            return NOT_FOUND
        start, end = self._span(nstart, nend)
        return Grounding("fuzzy", start, end, round(score, 2))

    def _fuzzy(
        self, nneedle: str, threshold: float, *, whole_text_fallback: bool
    ) -> tuple[float, int, int] | None:
        """Best fuzzy alignment of a normalized needle: ``(score, start, end)`` in ``norm``.

        Scanning a 1.5-million-character section costs about 10 ms per needle, so only windows
        around occurrences of the needle's longest words are scored (a match above the threshold
        keeps most words intact). Anchors are tried longest first; the scan stops at the first
        anchor whose windows give a match. Names with no intact word (a misspelt single name)
        fall back to the whole text.
        """
        norm, _ = self._normalized()
        span = len(nneedle)
        if len(norm) <= 8 * span + 4096:
            return _align(nneedle, norm, threshold, 0)
        words = sorted(
            {w for w in _WORD_RE.findall(nneedle) if len(w) >= 4},
            key=lambda w: (-len(w), w),
        )[:_MAX_ANCHORS]
        best: tuple[float, int, int] | None = None
        tried_any = False
        for word in words:
            starts: list[int] = []
            i = norm.find(word)
            while i >= 0 and len(starts) < _MAX_ANCHOR_HITS:
                starts.append(i)
                i = norm.find(word, i + 1)
            if not starts:
                continue
            tried_any = True
            for ws, we in _windows(starts, span, len(norm)):
                cutoff = threshold if best is None else max(threshold, best[0])
                hit = _align(nneedle, norm[ws:we], cutoff, ws)
                if hit is not None and (best is None or hit[0] > best[0]):
                    best = hit
            if best is not None:
                return best
        if not tried_any and whole_text_fallback:
            return _align(nneedle, norm, threshold, 0)
        return best


_MAX_ANCHORS = 3
_MAX_ANCHOR_HITS = 200


def _windows(starts: list[int], span: int, limit: int) -> list[tuple[int, int]]:
    """Merged windows of ``2 * span`` around each anchor hit (the match must contain it)."""
    out: list[tuple[int, int]] = []
    for p in starts:
        ws, we = max(0, p - span), min(limit, p + 2 * span)
        if out and ws <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], we))
        else:
            out.append((ws, we))
    return out


def _align(needle: str, haystack: str, cutoff: float, base: int) -> tuple[float, int, int] | None:
    found = fuzz.partial_ratio_alignment(needle, haystack, score_cutoff=cutoff)
    if found is None or found.dest_end <= found.dest_start:
        return None
    return float(found.score), base + found.dest_start, base + found.dest_end


@dataclass(frozen=True, slots=True)
class BookPosition:
    """A span located in a book: which book (file and 1-based number) and where."""

    book_file: str
    book_title: str
    start: int
    end: int


def locate_in_book(spans: Sequence[BookSpan], start: int, end: int) -> BookPosition | None:
    """Map a section span to book coordinates through the section's ``spans``.

    A section may cover the end of one book and the start of the next; the span is attributed to
    the book in which it starts. Returns ``None`` when the section has no spans (hand-made meta).
    """
    for span in spans:
        length = span.end - span.start
        if span.section_start <= start < span.section_start + length:
            offset = start - span.section_start
            book_start = span.start + offset
            return BookPosition(
                book_file=span.book,
                book_title=span.title,
                start=book_start,
                end=book_start + (end - start),
            )
    return None
