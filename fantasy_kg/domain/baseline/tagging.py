"""What the baseline extractor needs from an entity tagger, without depending on one.

The learned tagger (spaCy, in :mod:`fantasy_kg.nlp`) lives in the integration layer; the domain
sees only this protocol and plain spans, so the extractor stays a pure function of its inputs and
tests can hand it a fake tagger.
"""

from dataclasses import dataclass
from typing import Protocol

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


def propagate(text: str, spans: list[TaggedSpan]) -> list[TaggedSpan]:
    """Document-level consistency: a name tagged once is tagged everywhere, with one type.

    A sequence tagger decides each occurrence from a few words around it, so the same name is
    found in one sentence and missed in the next (sentence-initial, in dialogue), or typed as a
    person here and a place there. A novel is consistent about its names, so: every other
    word-bounded occurrence of a tagged string becomes a span, and every occurrence gets the
    string's majority type (ties: the first seen). Longer names claim their words first.

    Args:
        text: The text the spans were found in.
        spans: The tagger's spans, non-overlapping.

    Returns:
        The spans plus the propagated ones, relabelled, in text order.
    """
    votes: dict[str, dict[str, int]] = {}
    for s in spans:
        label_votes = votes.setdefault(text[s.start : s.end], {})
        label_votes[s.label] = label_votes.get(s.label, 0) + 1
    label_of = {name: max(v, key=lambda lab: v[lab]) for name, v in votes.items()}
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


def retype_by_head(text: str, spans: list[TaggedSpan]) -> list[TaggedSpan]:
    """Spans of two or more words ending in a place head noun are places (FAC, GPE or LOC)."""
    out = []
    for s in spans:
        words = text[s.start : s.end].split()
        head = words[-1] if len(words) > 1 else ""
        label = s.label
        if head in _FACILITY_HEADS:
            label = "FAC"
        elif head in _GPE_HEADS:
            label = "GPE"
        elif head in _LOC_HEADS:
            label = "LOC"
        out.append(TaggedSpan(s.start, s.end, label) if label != s.label else s)
    return out


def postprocess(text: str, spans: list[TaggedSpan]) -> list[TaggedSpan]:
    """What the tagger does after the model, at run time and when scored.

    Place heads first, then document consistency (so the majority type counts the fixed ones).
    """
    return propagate(text, retype_by_head(text, spans))
