"""Merge a learned tagger's entity spans into the rules' name occurrences.

The tagger decides what is a name and of which kind; the rules keep titles, aliases and cues.
How the two are combined: docs/architecture.md, "The embedded extractor".
"""

import bisect
import re
from collections.abc import Sequence

from fantasy_kg.domain.baseline import lexicon
from fantasy_kg.domain.baseline.names import (
    NameToken,
    Occurrence,
    add_votes,
    mark_lead,
    normalize,
    occurrences_of_run,
)
from fantasy_kg.domain.baseline.tagging import LABEL_KIND, TaggedSpan

# The tagger's type weighs as much as a structural cue ("the city of X"), once per name and
# section. (2 helped the sample series in small sections and hurt Oz: names glued by "the".)
TAG_VOTES = 3
_WORD_RE = re.compile(r"\S+")


def apply_tags(
    text: str,
    occurrences: list[Occurrence],
    spans: Sequence[TaggedSpan],
    initials: set[int],
    vocabulary: frozenset[str] = frozenset(),
) -> list[Occurrence]:
    """Occurrences with the tagger's kinds voted in, trimmed, and its extra names added.

    Args:
        text: The scanned section text (headings masked), as the occurrences were found in.
        occurrences: The rules' occurrences, in text order.
        spans: The tagger's spans over the same text.
        initials: Offsets of sentence-initial words.
        vocabulary: Words the section writes in lowercase (common words).

    Returns:
        All occurrences, in text order.
    """
    spans = sorted((s for s in spans if s.label in LABEL_KIND), key=lambda s: s.start)
    starts = [s.start for s in spans]
    used: set[int] = set()
    voted: set[str] = set()
    out: list[Occurrence] = []
    for occ in occurrences:
        k = bisect.bisect_left(starts, occ.end)
        hits = [i for i in range(max(0, k - 4), k) if spans[i].end > occ.start]
        if not hits:
            out.append(occ)
            continue
        used.update(hits)
        span = spans[hits[-1]]
        kind = LABEL_KIND[span.label]
        occ = _trim_to_span(text, occ, span, vocabulary)
        occ.tagged = kind
        if not occ.gazetteer_ids and occ.core not in voted:
            # One vote block per name and section, not per occurrence: the tagger says what a
            # name is when the context is silent, but "Princess Ozma", "said Ozma" outweigh it.
            voted.add(occ.core)
            occ.votes[kind] += TAG_VOTES
        out.append(occ)
    taken = sorted((o.start, o.end) for o in out)
    taken_starts = [t[0] for t in taken]
    for i, span in enumerate(spans):
        if i in used or _overlaps(taken, taken_starts, span.start, span.end):
            continue
        for occ in _new_occurrences(text, span, initials):
            occ.tagged = LABEL_KIND[span.label]
            if occ.core not in voted:
                voted.add(occ.core)
                occ.votes[occ.tagged] += TAG_VOTES
            out.append(occ)
    out.sort(key=lambda o: (o.start, -o.end))
    return out


def _overlaps(taken: list[tuple[int, int]], starts: list[int], start: int, end: int) -> bool:
    k = bisect.bisect_left(starts, end)
    return any(taken[i][1] > start for i in range(max(0, k - 4), k))


def _trim_to_span(
    text: str, occ: Occurrence, span: TaggedSpan, vocabulary: frozenset[str]
) -> Occurrence:
    """Drop words the tagger left out of a name.

    A sentence-initial word before it ("Instantly Dorothy"), or common words after it
    ("Dorothy Tries", from a contents line).
    """
    if occ.gazetteer_ids or occ.title:
        return occ
    start, end = occ.start, occ.end
    dropped = text[occ.start : span.start].split()
    if (
        occ.start < span.start < occ.end
        and span.end == occ.end
        and not occ.head_kind  # "Siege of Carreth", "Land of Oz": the head is the name
        and dropped[-1:] != ["of"]  # "King of Ev" is one name; "Tin Woodman the Wizard" is two
    ):
        # The tagger's name is the tail of the run ("Instantly Dorothy", "the great Head
        # Dorothy"); titles were already split off by the rules, so what is left is not a name.
        start = span.start
    if span.start <= start < span.end < occ.end:
        rest = text[span.end : occ.end].split()
        if rest and (rest[0] == "the" or all(w.lower() in vocabulary for w in rest)):
            # "Rinkitink the Pink Pearl" (an object after a name), "Dorothy Tries" (a contents
            # line): the tagger's name ends where the rules' capitalized run goes on.
            end = span.end
    if (start, end) == (occ.start, occ.end):
        return occ
    surface = text[start:end]
    if not surface[:1].isupper():
        return occ
    trimmed = Occurrence(start=start, end=end, surface=surface, core=normalize(surface))
    trimmed.initial = occ.initial and start == occ.start
    mark_lead(text, trimmed)
    add_votes(text, trimmed)
    return trimmed


def _new_occurrences(text: str, span: TaggedSpan, initials: set[int]) -> list[Occurrence]:
    """Occurrences for a tagger span the rules did not find (titles stripped, like theirs)."""
    tokens = [
        NameToken(m.group(), span.start + m.start(), span.start + m.end())
        for m in _WORD_RE.finditer(text[span.start : span.end])
    ]
    # Only names: a span must start with a capital and not be a lone stopword or title.
    if not tokens or not tokens[0].text[:1].isupper():
        return []
    if len(tokens) == 1 and (
        tokens[0].text in lexicon.STOPWORDS or tokens[0].text.rstrip(".") in lexicon.TITLES
    ):
        return []
    out = []
    for occ in occurrences_of_run(text, tokens):
        if "\n" in occ.core or not occ.core[:1].isupper():
            continue
        occ.initial = occ.start in initials
        mark_lead(text, occ)
        add_votes(text, occ)
        out.append(occ)
    return out
