"""LitBank entity annotations as named-mention data: reading, the fixed split, and scoring.

LitBank (Bamman et al. 2019, CC BY 4.0) is flattened to one layer of named mentions, the layer the
tagger is trained and scored on. How and why: docs/architecture.md, "The embedded extractor".
"""

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# ACE types of LitBank; the ontology has one place type, so LOC/GPE/FAC are also scored together.
LITBANK_TYPES = ("PER", "LOC", "GPE", "FAC", "ORG", "VEH")
PLACE_TYPES = frozenset({"LOC", "GPE", "FAC"})
# Lowercase words that may sit inside a name ("Isle of Man", "Lincoln 's Inn", "Ludwig van B").
NAME_LINKERS = frozenset(
    {"of", "the", "'s", "’s", "and", "de", "van", "von", "der", "du", "la", "le", "da", "di", "y"}
)
# The held-out share of the split: one book in five, chosen by a hash of the file name.
HELDOUT_MODULO = 5


@dataclass(frozen=True)
class Mention:
    """One entity span in token indices (end exclusive) with its LitBank type."""

    start: int
    end: int
    label: str


@dataclass
class Sentence:
    """One tokenized sentence and its flat named mentions."""

    words: list[str]
    mentions: list[Mention] = field(default_factory=list)
    # Common-noun entities ("the village", "the old man") not overlapping a name: training
    # context only (they teach the tagger what places and people look like around them).
    nominals: list[Mention] = field(default_factory=list)


@dataclass
class Book:
    """The annotated excerpt of one LitBank book."""

    name: str
    sentences: list[Sentence]


def is_named(words: Sequence[str]) -> bool:
    """Whether a span reads as a proper name: capitalized words, lowercase only as linkers.

    Args:
        words: The span's tokens.

    Returns:
        True for "Tom", "TOM", "Lincoln 's Inn Hall", "Duke of York"; False for "the house",
        "the Lord Chancellor" (a leading lowercase word makes it a nominal phrase).
    """
    alpha = [w for w in words if any(c.isalpha() for c in w)]
    if not alpha or not alpha[0][0].isupper():
        return False
    return all(w[0].isupper() or w.lower() in NAME_LINKERS for w in alpha)


def _flatten(spans: Iterable[Mention]) -> list[Mention]:
    """Outermost spans first; a span nested in a kept one is dropped."""
    kept: list[Mention] = []
    for m in sorted(spans, key=lambda m: (-(m.end - m.start), m.start)):
        if all(m.end <= k.start or m.start >= k.end for k in kept):
            kept.append(m)
    return sorted(kept, key=lambda m: m.start)


def read_brat(txt: Path, ann: Path) -> Book:
    """Read one LitBank brat pair (one sentence per line, tokens split by single spaces).

    Args:
        txt: The ``*_brat.txt`` file.
        ann: Its ``*_brat.ann`` standoff annotations (``T1<TAB>PER 10 13<TAB>Tom``).

    Returns:
        The book with named mentions only, flattened to one layer.
    """
    text = txt.read_text(encoding="utf-8")
    sentences: list[Sentence] = []
    token_at: dict[int, tuple[int, int]] = {}  # char start -> (sentence, token)
    token_end: dict[int, tuple[int, int]] = {}  # char end -> (sentence, token)
    offset = 0
    for line in text.split("\n"):
        words: list[str] = []
        pos = offset
        for word in line.split(" "):
            if word:
                token_at[pos] = (len(sentences), len(words))
                token_end[pos + len(word)] = (len(sentences), len(words))
                words.append(word)
            pos += len(word) + 1
        offset += len(line) + 1
        sentences.append(Sentence(words=words))
    spans: dict[int, list[Mention]] = {}
    nominal: dict[int, list[Mention]] = {}
    for row in ann.read_text(encoding="utf-8").splitlines():
        parts = row.split("\t")
        if len(parts) < 2 or not parts[0].startswith("T"):
            continue
        label, start_s, end_s = parts[1].split(" ")[:3]
        first, last = token_at.get(int(start_s)), token_end.get(int(end_s))
        if first is None or last is None or first[0] != last[0]:
            continue  # a span that does not align to tokens of one sentence: skip, not guess
        sent = first[0]
        words = sentences[sent].words[first[1] : last[1] + 1]
        if label in LITBANK_TYPES:
            target = spans if is_named(words) else nominal
            target.setdefault(sent, []).append(Mention(first[1], last[1] + 1, label))
    for sent, found in spans.items():
        sentences[sent].mentions = _flatten(found)
    for sent, found in nominal.items():
        named = sentences[sent].mentions
        free = [m for m in found if all(m.end <= n.start or m.start >= n.end for n in named)]
        sentences[sent].nominals = _flatten(free)
    name = txt.name.removesuffix("_brat.txt")
    return Book(name=name, sentences=[s for s in sentences if s.words])


def read_litbank(root: Path) -> list[Book]:
    """All books of a LitBank checkout (``root/entities/brat`` or ``root`` itself), by name."""
    brat = root / "entities" / "brat" if (root / "entities" / "brat").is_dir() else root
    books = []
    for txt in sorted(brat.glob("*_brat.txt")):
        ann = txt.with_name(txt.name.removesuffix(".txt") + ".ann")
        if ann.is_file():
            books.append(read_brat(txt, ann))
    if not books:
        raise FileNotFoundError(f"no LitBank brat files under {root}")
    return books


def default_heldout(names: Iterable[str]) -> list[str]:
    """The held-out books: one in five, by a stable hash of the name (not by position).

    The list was written to ``fantasy_kg/data/litbank_heldout.txt`` once, before any training;
    training reads that file, so the split cannot drift if LitBank gains books.
    """
    return sorted(
        n for n in names if int(hashlib.sha256(n.encode()).hexdigest(), 16) % HELDOUT_MODULO == 0
    )


@dataclass
class Score:
    """Counts for one type: true positives, predicted, gold."""

    tp: int = 0
    predicted: int = 0
    gold: int = 0

    @property
    def precision(self) -> float:
        """Share of predicted spans that are right (0 when nothing was predicted)."""
        return self.tp / self.predicted if self.predicted else 0.0

    @property
    def recall(self) -> float:
        """Share of gold spans found."""
        return self.tp / self.gold if self.gold else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def score(
    gold: Sequence[Iterable[Mention]], predicted: Sequence[Iterable[Mention]]
) -> dict[str, Score]:
    """Exact-span, exact-type scores per type, per coarse group and over all (``ALL``).

    Args:
        gold: Per sentence, the gold mentions.
        predicted: Per sentence (same order), the predicted mentions.

    Returns:
        Scores keyed by LitBank type, by ``PLACE`` (LOC+GPE+FAC, typed as a group) and ``ALL``.
    """
    counts: dict[str, Counter[str]] = {"tp": Counter(), "pred": Counter(), "gold": Counter()}

    def keyed(mentions: Iterable[Mention]) -> set[tuple[int, int, str]]:
        keys = set()
        for m in mentions:
            keys.add((m.start, m.end, m.label))
            keys.add((m.start, m.end, "ALL"))
            if m.label in PLACE_TYPES:
                keys.add((m.start, m.end, "PLACE"))
        return keys

    for g_sent, p_sent in zip(gold, predicted, strict=True):
        g_keys, p_keys = keyed(g_sent), keyed(p_sent)
        counts["gold"].update(k[2] for k in g_keys)
        counts["pred"].update(k[2] for k in p_keys)
        counts["tp"].update(k[2] for k in g_keys & p_keys)
    labels = sorted(set(counts["gold"]) | set(counts["pred"]))
    return {
        lab: Score(counts["tp"][lab], counts["pred"][lab], counts["gold"][lab]) for lab in labels
    }


def book_text(book: Book) -> tuple[str, list[list[tuple[int, int]]]]:
    """The book as plain text (one sentence a line, tokens split by spaces) and token offsets.

    Returns:
        The text, and per sentence the ``(start, end)`` character offsets of its tokens.
    """
    lines: list[str] = []
    offsets: list[list[tuple[int, int]]] = []
    pos = 0
    for sent in book.sentences:
        spans = []
        for word in sent.words:
            spans.append((pos, pos + len(word)))
            pos += len(word) + 1
        offsets.append(spans)
        lines.append(" ".join(sent.words))
    return "\n".join(lines), offsets


def mentions_from_chars(book: Book, spans: Iterable[tuple[int, int, str]]) -> list[list[Mention]]:
    """Character spans over :func:`book_text` → per-sentence token mentions, for scoring.

    A span that does not start and end on token boundaries of one sentence cannot match gold;
    it is kept as a mention with negative indices so that it still counts as a false positive.
    """
    _, offsets = book_text(book)
    start_of: dict[int, tuple[int, int]] = {}
    end_of: dict[int, tuple[int, int]] = {}
    for si, sent in enumerate(offsets):
        for ti, (s, e) in enumerate(sent):
            start_of[s] = (si, ti)
            end_of[e] = (si, ti)
    out: list[list[Mention]] = [[] for _ in book.sentences]
    bad = 0
    for start, end, label in spans:
        first, last = start_of.get(start), end_of.get(end)
        if first is not None and last is not None and first[0] == last[0]:
            out[first[0]].append(Mention(first[1], last[1] + 1, label))
        else:
            where = first[0] if first is not None else (last[0] if last is not None else 0)
            bad += 1
            out[where].append(Mention(-bad, -bad, label))
    return out
