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
