"""What the baseline extractor needs from an entity tagger, without depending on one.

The learned tagger (spaCy, in :mod:`fantasy_kg.nlp`) lives in the integration layer; the domain
sees only this protocol and plain spans, so the extractor stays a pure function of its inputs and
tests can hand it a fake tagger.
"""

import re
from dataclasses import dataclass
from typing import Protocol

from fantasy_kg.domain.baseline import lexicon
from fantasy_kg.domain.baseline.names import ARTIFACT, ORG, PERSON, PLACE

# LitBank's ACE labels → the extractor's kinds (the ontology's Character/Location/... types).
LABEL_KIND = {
    "PER": PERSON,
    "LOC": PLACE,
    "GPE": PLACE,
    "FAC": PLACE,
    "ORG": ORG,
    "VEH": ARTIFACT,
}


@dataclass(frozen=True)
class TaggedSpan:
    """One entity span found by a tagger: character offsets and a LitBank label."""

    start: int
    end: int
    label: str


class Tagger(Protocol):
    """Anything that finds entity spans in text."""

    def tag(self, text: str) -> list[TaggedSpan]:
        """Entity spans of ``text``, in order, non-overlapping."""
        ...


def _bounded(text: str, start: int, end: int) -> bool:
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    return not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_")


def propagate(
    text: str, spans: list[TaggedSpan], persons: frozenset[str] = frozenset()
) -> list[TaggedSpan]:
    """Document-level consistency: a name tagged once is tagged everywhere, with one type.

    A sequence tagger decides each occurrence from a few words around it, so the same name is
    found in one sentence and missed in the next (sentence-initial, in dialogue), or typed as a
    person here and a place there. A novel is consistent about its names, so: every other
    word-bounded occurrence of a tagged string becomes a span, and every occurrence gets the
    string's majority type (ties: the first seen). Longer names claim their words first.

    Args:
        text: The text the spans were found in.
        spans: The tagger's spans, non-overlapping.
        persons: Strings a speech cue shows to be persons (:func:`speakers`): PER whatever
            the majority says ("said Bessie" outweighs three guesses of a place).

    Returns:
        The spans plus the propagated ones, relabelled, in text order.
    """
    votes: dict[str, dict[str, int]] = {}
    for s in spans:
        label_votes = votes.setdefault(text[s.start : s.end], {})
        label_votes[s.label] = label_votes.get(s.label, 0) + 1
    label_of = {name: max(v, key=lambda lab: v[lab]) for name, v in votes.items()}
    for name in persons & label_of.keys():
        label_of[name] = "PER"
    taken = bytearray(len(text) + 1)
    out: list[TaggedSpan] = []
    for s in spans:
        taken[s.start : s.end] = b"\x01" * (s.end - s.start)
        out.append(TaggedSpan(s.start, s.end, label_of[text[s.start : s.end]]))
    for name in sorted(label_of, key=lambda n: (-len(n), n)):
        if len(name) < 2 or not name[:1].isupper():
            continue
        pos = text.find(name)
        while pos >= 0:
            end = pos + len(name)
            if not any(taken[pos:end]) and _bounded(text, pos, end):
                taken[pos:end] = b"\x01" * (end - pos)
                out.append(TaggedSpan(pos, end, label_of[name]))
            pos = text.find(name, pos + 1)
    out.sort(key=lambda s: s.start)
    return out


# Head nouns that make a name a place whatever the tagger says ("Meath Street", "Blodgett
# College", "Emu Point"): the model learns these from few examples and types most capitalized
# spans as persons, the majority class of LitBank's names.
_FACILITY_HEADS = frozenset(
    {
        "Abbey", "Avenue", "Bridge", "Castle", "Cathedral", "Chapel", "Church", "Citadel",
        "College", "Fortress", "Gate", "Gates", "Hall", "Hospital", "Hotel", "Inn", "Lane",
        "Manor", "Market", "Mill", "Palace", "Road", "Room", "Row", "School", "Square", "Street",
        "Tavern", "Temple", "Terrace", "Tower",
    }
)  # fmt: skip
_GPE_HEADS = frozenset(
    {"City", "Country", "County", "Empire", "Kingdom", "Province", "Realm", "Town", "Village"}
)
_LOC_HEADS = frozenset(
    {
        "Bay", "Cape", "Coast", "Desert", "Falls", "Forest", "Gulf", "Hill", "Hills", "Island",
        "Islands", "Isle", "Lake", "Mountain", "Mountains", "Ocean", "Park", "Point", "River",
        "Sea", "Valley", "Wood", "Woods",
    }
)  # fmt: skip


# Place nouns that come first ("Lake George", "Mount Munch", "Fort William").
_LOC_FIRST_HEADS = frozenset({"Lake", "Loch", "Mount", "Mt.", "Cape", "Isle", "Glen"})
_FAC_FIRST_HEADS = frozenset({"Fort", "Port", "Castle"})


def retype_by_head(text: str, spans: list[TaggedSpan]) -> list[TaggedSpan]:
    """Spans of two or more words with a place head noun are places (FAC, GPE or LOC).

    The head ends the name ("Meath Street") or, for a few nouns, starts it ("Lake George").
    """
    out = []
    for s in spans:
        words = text[s.start : s.end].split()
        head = words[-1] if len(words) > 1 else ""
        first = words[0] if len(words) > 1 else ""
        label = s.label
        if head in _FACILITY_HEADS:
            label = "FAC"
        elif head in _GPE_HEADS:
            label = "GPE"
        elif head in _LOC_HEADS or first in _LOC_FIRST_HEADS:
            label = "LOC"
        elif first in _FAC_FIRST_HEADS:
            label = "FAC"
        out.append(TaggedSpan(s.start, s.end, label) if label != s.label else s)
    return out


# Verbs that take a speaker: "said Jo", "Bessie cried". Only a person speaks, so a capitalized
# name right before or after one is a person, whatever the model guessed from a few words
# around it (it types rare given names such as "Bessie" or "Harvey" as places, and misses "Jo").
_SPEECH_VERBS = (
    "said|says|asked|asks|replied|replies|answered|cried|exclaimed|whispered|muttered|murmured|"
    "shouted|grumbled|retorted|remarked|inquired|sobbed|rejoined|stammered"
)  # not "demanded", "added", "continued": "Imperialism in Australia demanded his care"
_CAP = r"[A-Z][A-Za-z'’-]*"
# A capitalized run on one line; an abbreviated title keeps its period ("Mrs. Todd"), any other
# period ends the sentence ("said Jo. Then Bessie ...").
_ABBREVIATION = r"(?:Mr|Mrs|Ms|Dr|St|Mme|Mlle|Messrs|Prof|Capt|Col|Gen|Rev)\."
_RUN = rf"(?:(?:{_ABBREVIATION}|{_CAP})[ \t]+)*{_CAP}"
_SPEAKER_AFTER_RE = re.compile(rf"\b(?:{_SPEECH_VERBS})[ \t]+({_RUN})")
_SPEAKER_BEFORE_RE = re.compile(rf"(?<![\w.'’-])({_RUN})[ \t]+(?:{_SPEECH_VERBS})\b")
_DETERMINER_BEFORE_RE = re.compile(r"\b(?:the|a|an|this|that|his|her|their|our|my)[ \t]+$")
_LOWER_WORD_RE = re.compile(r"\b[a-z][a-z'’-]*\b")
_NOT_NAMES = lexicon.STOPWORDS | {"CHAPTER", "Chapter", "BOOK", "Book", "PART", "Part"}


def speakers(text: str) -> list[tuple[int, int]]:
    """Character spans of names that stand next to a verb of speech ("said Jo", "Jo said").

    Leading stopwords are dropped ("Then Jo said" → "Jo"), and, in a run the text does not
    repeat, leading words it also writes in lowercase ("Presently Zeb said"; titles excepted,
    since LitBank counts "Aunt Polly" as the name; "White Rabbit", said again and again, stays),
    as are runs that are only a title
    ("said Mr."): the title then belongs to a name the run does not reach. A run after a
    determiner ("the Mem Sahib cried") is an epithet whose bounds the model knows better.
    """
    out: list[tuple[int, int]] = []
    lowercase: set[str] | None = None
    for rx in (_SPEAKER_AFTER_RE, _SPEAKER_BEFORE_RE):
        for m in rx.finditer(text):
            start, end = m.span(1)
            words = text[start:end].split()
            if len(words) > 1 and lowercase is None:
                lowercase = set(_LOWER_WORD_RE.findall(text))
            # A run the text repeats is a name as it stands ("White Rabbit said"); a one-off
            # run may carry a sentence-initial word ("Presently Zeb said").
            once = len(words) > 1 and text.count(text[start:end]) < 2
            while words and (
                words[0].rstrip(".") in _NOT_NAMES
                or (
                    once
                    and len(words) > 1
                    and words[0] not in lexicon.TITLES
                    and words[0].lower() in (lowercase or ())
                )
            ):
                start = text.index(words[0], start) + len(words[0])
                start += len(text[start:end]) - len(text[start:end].lstrip())
                words = words[1:]
            if not words or all(w.rstrip(".") in lexicon.TITLES for w in words):
                continue
            if _DETERMINER_BEFORE_RE.search(text, max(0, start - 8), start):
                continue
            out.append((start, end))
    return sorted(set(out))


def with_speakers(text: str, spans: list[TaggedSpan]) -> tuple[list[TaggedSpan], frozenset[str]]:
    """Speakers the model missed become PER spans, and the strings of all speakers are returned.

    A speaker inside or across a span of the model's keeps the model's boundaries (the model
    knows names with lowercase linkers and titles better than a capitalized run does).
    """
    ordered = sorted(spans, key=lambda s: s.start)
    out = list(ordered)
    persons: set[str] = set()
    k = 0
    for start, end in speakers(text):
        while k < len(ordered) and ordered[k].end <= start:
            k += 1
        over = [s for s in ordered[max(0, k - 1) : k + 3] if s.start < end and s.end > start]
        if over:
            persons.update(text[s.start : s.end] for s in over if (s.start, s.end) == (start, end))
            continue
        out.append(TaggedSpan(start, end, "PER"))
        persons.add(text[start:end])
    out.sort(key=lambda s: s.start)
    return out, frozenset(persons)


def postprocess(text: str, spans: list[TaggedSpan]) -> list[TaggedSpan]:
    """What the tagger does after the model, at run time and when scored.

    Place heads first, then speakers (names next to a verb of speech are persons), then
    document consistency (so the majority type counts the fixed ones).
    """
    spans, persons = with_speakers(text, retype_by_head(text, spans))
    return propagate(text, spans, persons)
