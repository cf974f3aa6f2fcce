"""Split a series into sections whose whole extraction request fits the model's context window.

Why it works this way: docs/architecture.md, "Text, sections and answer sizing".
"""

import itertools
import json
import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from fantasy_kg.domain.catalog import ModelInfo
from fantasy_kg.domain.errors import ConfigError, InputFileError
from fantasy_kg.domain.prompts import SECTION_MARKER, SECTION_TEMPLATE, render_prefix
from fantasy_kg.domain.schemas import Ontology, wire_json_schema
from fantasy_kg.domain.sections import BookSpan, SectionMeta, text_sha256
from fantasy_kg.domain.text.chapters import chapter_at
from fantasy_kg.domain.text.ingest import Book
from fantasy_kg.domain.text.tokens import (
    ESTIMATE_MARGIN,
    EXACT_MARGIN,
    TOKENS_PER_PIECE,
    EstimateCounter,
    TokenCounter,
    count_pieces,
    estimate_tokens,
    with_margin,
)

BOOK_SEPARATOR = "\n\n\n"
"""Joins book texts into the series text (two blank lines, a paragraph break)."""

REQUEST_OVERHEAD_TOKENS = 1000
"""Reserve for what the API adds around our text: the structured-output system prompt and the
message framing (the schema itself is estimated separately)."""

MIN_TEXT_BUDGET = 256
"""Below this many tokens of text per section, sectioning is pointless: a configuration error."""

_SENTENCE_END_RE = re.compile(r"[.!?\u2026]+[\"'\u2019\u201d)\]]*\s+")
_WORD_RE = re.compile(r"\S+\s*")
_BALANCE_SLACK = 0.05
_MAX_ATTEMPTS = 8

# Boundary preference (lower is better).
_RANK_BOOK = 0
_RANK_CHAPTER = 1
_RANK_PARAGRAPH = 2
_RANK_INSIDE = 3


@dataclass(frozen=True)
class PlannedSection:
    """One section of a plan: its text, where it comes from and its token counts."""

    number: int
    text: str
    start: int
    end: int
    spans: tuple[BookSpan, ...]
    chapter_start: str
    chapter_end: str
    input_tokens: int
    prompt_tokens: int

    @property
    def section_id(self) -> str:
        """Zero-padded number, as in the file name and the prompt's ``Section ID``."""
        return f"{self.number:02d}"


@dataclass(frozen=True)
class SeriesPlan:
    """The sections of one series and everything needed to write their meta files."""

    slug: str
    series_name: str
    model: ModelInfo
    max_tokens: int
    books: tuple[Book, ...]
    sections: tuple[PlannedSection, ...]
    prefix_tokens: int
    token_count_method: str
    exact: bool
    text_budget: int

    @property
    def input_tokens(self) -> int:
        """Tokens of all section texts (what the guide's tables price)."""
        return sum(s.input_tokens for s in self.sections)

    def meta(self, section: PlannedSection) -> SectionMeta:
        """The ``.meta.json`` content of ``section``."""
        titles = {b.file_name: b.title for b in self.books}
        files = [sp.book for sp in section.spans]
        return SectionMeta(
            series=self.slug,
            series_name=self.series_name,
            section=section.number,
            books=[titles[f] for f in files],
            book_files=files,
            chapter_start=section.chapter_start,
            chapter_end=section.chapter_end,
            spans=list(section.spans),
            input_tokens=section.input_tokens,
            token_count_method=self.token_count_method,
            sha256=text_sha256(section.text),
            chars=len(section.text),
            prompt_tokens=section.prompt_tokens,
            prefix_tokens=self.prefix_tokens,
            token_model=self.model.id,
            max_tokens=self.max_tokens,
            context_window=self.model.context_window,
        )


@dataclass(frozen=True)
class _Unit:
    """A piece of series text that is never cut: a paragraph, or part of an oversized one."""

    start: int
    end: int
    weight: int
    rank: int


def series_text(books: Sequence[Book]) -> str:
    """The books' texts joined with :data:`BOOK_SEPARATOR`: what the sections tile exactly."""
    return BOOK_SEPARATOR.join(b.text for b in books)


def format_overhead_tokens(model: ModelInfo) -> int:
    """Estimated tokens the structured-output schema and request framing add to every request."""
    schema = json.dumps(wire_json_schema(), separators=(",", ":"))
    return estimate_tokens(schema, model.tokenizer_factor) + REQUEST_OVERHEAD_TOKENS


def _sentence_cuts(text: str, start: int, end: int) -> list[int]:
    """Absolute offsets right after each sentence end (plus whitespace) in ``[start, end)``."""
    cuts = [start]
    for m in _SENTENCE_END_RE.finditer(text, start, end):
        pos = m.end()
        if start < pos < end:
            cuts.append(pos)
    cuts.append(end)
    return cuts


def _split_words(text: str, start: int, end: int, budget: int, rank: int) -> list[_Unit]:
    """Split ``[start, end)`` at whitespace into chunks of at most ``budget // 2`` pieces.

    A "word" longer than the budget (no whitespace at all) is cut every ``budget`` characters,
    which is always within budget since a character is at most one piece.
    """
    units: list[_Unit] = []
    chunk_start = start
    chunk_weight = 0
    target = max(1, budget // 2)
    for m in _WORD_RE.finditer(text, start, end):
        w_start, w_end = m.start(), m.end()
        if w_start > chunk_start and chunk_weight == 0:
            w_start = chunk_start  # leading whitespace joins the first word
        weight = count_pieces(text[w_start:w_end])
        if weight > budget:
            if chunk_weight:
                units.append(_Unit(chunk_start, w_start, chunk_weight, rank))
                rank = _RANK_INSIDE
            for pos in range(w_start, w_end, budget):
                stop = min(w_end, pos + budget)
                units.append(_Unit(pos, stop, count_pieces(text[pos:stop]), rank))
                rank = _RANK_INSIDE
            chunk_start, chunk_weight = w_end, 0
            continue
        if chunk_weight and chunk_weight + weight > target:
            units.append(_Unit(chunk_start, w_start, chunk_weight, rank))
            rank = _RANK_INSIDE
            chunk_start, chunk_weight = w_start, 0
        chunk_weight += weight
    if chunk_start < end:
        units.append(_Unit(chunk_start, end, count_pieces(text[chunk_start:end]), rank))
    return units


def _split_oversized(text: str, start: int, end: int, budget: int, rank: int) -> list[_Unit]:
    """Split a paragraph that alone exceeds the budget: at sentences, then at whitespace."""
    units: list[_Unit] = []
    cuts = _sentence_cuts(text, start, end)
    for a, b in itertools.pairwise(cuts):
        weight = count_pieces(text[a:b])
        if weight > budget:
            units.extend(_split_words(text, a, b, budget, rank))
        else:
            units.append(_Unit(a, b, weight, rank))
        rank = _RANK_INSIDE
    return units


def _build_units(books: Sequence[Book], text: str, budget: int) -> list[_Unit]:
    units: list[_Unit] = []
    offset = 0
    for bi, book in enumerate(books):
        paras = book.paragraph_spans()
        chapter_starts = {c.start for c in book.chapters}
        tail = len(BOOK_SEPARATOR) if bi < len(books) - 1 else 0
        for pi, para in enumerate(paras):
            start = offset + (0 if pi == 0 else para.start)
            end = offset + para.next_start + (tail if pi == len(paras) - 1 else 0)
            if pi == 0:
                rank = _RANK_BOOK
            elif para.start in chapter_starts:
                rank = _RANK_CHAPTER
            else:
                rank = _RANK_PARAGRAPH
            weight = count_pieces(text[start:end])
            if weight > budget:
                units.extend(_split_oversized(text, start, end, budget, rank))
            else:
                units.append(_Unit(start, end, weight, rank))
        offset += len(book.text) + len(BOOK_SEPARATOR)
    return units


def _try_partition(prefix: list[int], ranks: list[int], budget: int, k: int) -> list[int] | None:
    """Cut ``n`` units into ``k`` sections near equal weight, each within ``budget``.

    Returns the unit index where each section starts plus ``n`` at the end, or ``None`` if this
    ``k`` does not fit.
    """
    n = len(ranks)
    total = prefix[n]
    bounds = [0]
    prev = 0
    for j in range(1, k):
        left = k - j + 1
        share = (total - prefix[prev]) / left
        ideal = prefix[prev] + share
        lo = prev + 1
        hi = min(n - (k - j), bisect_right(prefix, prefix[prev] + budget) - 1)
        if hi < lo:
            return None
        slack = _BALANCE_SLACK * share
        w_lo = max(lo, bisect_left(prefix, ideal - slack))
        w_hi = min(hi, bisect_right(prefix, ideal + slack) - 1)
        if w_lo <= w_hi:
            best = min(range(w_lo, w_hi + 1), key=lambda b: (ranks[b], abs(prefix[b] - ideal)))
        else:
            near = min(max(bisect_left(prefix, ideal), lo), hi)
            options = {near, max(lo, near - 1)}
            best = min(options, key=lambda b: abs(prefix[b] - ideal))
        bounds.append(best)
        prev = best
    if total - prefix[prev] > budget:
        return None
    bounds.append(n)
    return bounds


def _partition(units: list[_Unit], budget: int) -> list[int]:
    """Fewest sections within ``budget``, then cut them as evenly as the boundaries allow."""
    prefix = [0]
    for unit in units:
        prefix.append(prefix[-1] + unit.weight)
    ranks = [u.rank for u in units]
    k = max(1, math.ceil(prefix[-1] / budget))
    while k < len(units):
        bounds = _try_partition(prefix, ranks, budget, k)
        if bounds is not None:
            return bounds
        k += 1
    return list(range(len(units) + 1))


def _spans(
    books: Sequence[Book], book_starts: list[int], start: int, end: int
) -> tuple[list[BookSpan], str, str]:
    spans: list[BookSpan] = []
    first_chapter: str | None = None
    last_chapter = ""
    for book, b_start in zip(books, book_starts, strict=True):
        b_end = b_start + len(book.text)
        lo, hi = max(start, b_start), min(end, b_end)
        if lo >= hi:
            continue
        chapters = list(book.chapters)
        rel_lo, rel_hi = lo - b_start, hi - b_start
        at_start = chapter_at(chapters, rel_lo)
        covered = ([at_start] if at_start else []) + [
            c.title for c in chapters if rel_lo < c.start < rel_hi
        ]
        if first_chapter is None:
            first_chapter = at_start
        last_chapter = chapter_at(chapters, rel_hi - 1)
        spans.append(
            BookSpan(
                book=book.file_name,
                title=book.title,
                start=rel_lo,
                end=rel_hi,
                section_start=lo - start,
                chapters=covered,
            )
        )
    return spans, first_chapter or "", last_chapter


def plan_sections(
    books: Sequence[Book],
    *,
    slug: str,
    series_name: str,
    ontology: Ontology,
    model: ModelInfo,
    max_tokens: int,
    max_section_tokens: int | None = None,
    counter: TokenCounter | None = None,
) -> SeriesPlan:
    """Plan the sections of one series.

    Args:
        books: The series' books in reading order (file-name order).
        slug: Series slug (file names, the Dagster partition key).
        series_name: Human title; part of the prompt prefix, so part of its token count.
        ontology: The series ontology; part of the prompt prefix.
        model: Target model (context window, output cap, tokenizer factor).
        max_tokens: The ``max_tokens`` the extraction requests will use.
        max_section_tokens: Optional cap on a section's text tokens (smaller requests, e.g. to
            keep each answer short or to spread work over more requests).
        counter: Exact or estimated token counter; the estimate when ``None``.

    Returns:
        The plan; its sections tile :func:`series_text` exactly.

    Raises:
        ConfigError: ``max_tokens`` above the model's cap, or no room left for text.
        InputFileError: no books.
    """
    counter = counter or EstimateCounter()
    if not books:
        raise InputFileError(f"series {slug!r} has no books")
    if not 1 <= max_tokens <= model.max_output_tokens:
        raise ConfigError(
            f"max_tokens {max_tokens} is outside 1..{model.max_output_tokens}, the output cap "
            f"of {model.id}; pass a smaller --max-tokens"
        )
    if max_section_tokens is not None and max_section_tokens < MIN_TEXT_BUDGET:
        raise ConfigError(
            f"max_section_tokens {max_section_tokens} is below {MIN_TEXT_BUDGET}; "
            "pass a larger --max-section-tokens"
        )
    margin = 1.0 + (EXACT_MARGIN if counter.exact else ESTIMATE_MARGIN)
    window = model.context_window
    prefix = render_prefix(series_name, ontology)
    prefix_tokens = counter.count(model, prefix)
    fmt_tokens = format_overhead_tokens(model)
    all_titles = ", ".join(b.title for b in books)
    empty_part = SECTION_MARKER + SECTION_TEMPLATE.format(
        book_names=all_titles, section_id="9999", text=""
    )
    part_tokens = counter.count(model, empty_part)
    budget_tokens = math.floor((window - max_tokens) / margin) - (
        prefix_tokens + part_tokens + fmt_tokens
    )
    if max_section_tokens is not None:
        budget_tokens = min(budget_tokens, max_section_tokens)
    if budget_tokens < MIN_TEXT_BUDGET:
        raise ConfigError(
            f"{model.id}: max_tokens {max_tokens} plus the prompt prefix ({prefix_tokens} "
            f"tokens, instructions and ontology) leave {max(budget_tokens, 0)} tokens of the "
            f"{window}-token window for text; lower --max-tokens or shorten the ontology"
        )
    text = series_text(books)
    book_starts: list[int] = []
    pos = 0
    for book in books:
        book_starts.append(pos)
        pos += len(book.text) + len(BOOK_SEPARATOR)

    tokens_per_piece = TOKENS_PER_PIECE * model.tokenizer_factor
    budget = max(1, math.floor(budget_tokens / tokens_per_piece))
    for _attempt in range(_MAX_ATTEMPTS):
        units = _build_units(books, text, budget)
        bounds = _partition(units, budget)
        sections: list[PlannedSection] = []
        shrink = 1.0
        for i, (a, b) in enumerate(itertools.pairwise(bounds), start=1):
            start, end = units[a].start, units[b - 1].end
            sec_text = text[start:end]
            spans, ch_start, ch_end = _spans(books, book_starts, start, end)
            input_tokens = counter.count(model, sec_text)
            part = SECTION_MARKER + SECTION_TEMPLATE.format(
                book_names=", ".join(sp.title for sp in spans),
                section_id=f"{i:02d}",
                text=sec_text if counter.exact else "",
            )
            part_count = counter.count(model, part) + (0 if counter.exact else input_tokens)
            prompt_tokens = prefix_tokens + part_count + fmt_tokens
            allowed_text = math.floor((window - max_tokens) / margin) - (
                prompt_tokens - input_tokens
            )
            if max_section_tokens is not None:
                allowed_text = min(allowed_text, max_section_tokens)
            if with_margin(prompt_tokens, counter.exact) + max_tokens > window or (
                input_tokens > allowed_text
            ):
                shrink = min(shrink, max(allowed_text, 1) / max(input_tokens, 1))
            sections.append(
                PlannedSection(
                    number=i,
                    text=sec_text,
                    start=start,
                    end=end,
                    spans=tuple(spans),
                    chapter_start=ch_start,
                    chapter_end=ch_end,
                    input_tokens=input_tokens,
                    prompt_tokens=prompt_tokens,
                )
            )
        if shrink >= 1.0:
            return SeriesPlan(
                slug=slug,
                series_name=series_name,
                model=model,
                max_tokens=max_tokens,
                books=tuple(books),
                sections=tuple(sections),
                prefix_tokens=prefix_tokens,
                token_count_method=counter.method(model),
                exact=counter.exact,
                text_budget=budget_tokens,
            )
        budget = math.floor(budget * shrink * 0.98)
        if budget < 1:
            break
    raise ConfigError(
        f"could not fit the sections of {slug!r} into the {window}-token window of {model.id} "
        f"with max_tokens {max_tokens}; lower --max-tokens or --max-section-tokens"
    )
