"""Name normalization for entity resolution: case, punctuation, possessives, articles, titles.

Two keys come out of every surface form:

Why it works this way: docs/architecture.md, "Graph build".
"""

import re
from dataclasses import dataclass
from functools import lru_cache

from fantasy_kg.domain.graph.grounding import normalize_text

ARTICLES: frozenset[str] = frozenset({"the", "a", "an"})

# Honorifics and titles that precede a personal name in English-language fantasy. Stripping is
# only ever done for person-like types and never empties a name.
_TITLE_WORDS = """
    mr mrs ms miss mister master mistress madam madame sir ser dame lord lady lords ladies
    king queen prince princess duke duchess earl count countess baron baroness marquis emperor
    empress regent steward chancellor herald warden captain capt commander general lieutenant
    lt sergeant sgt marshal admiral knight squire father mother brother sister uncle aunt
    grandfather grandmother granny gran old young little saint st dr doctor professor maester
    archmaester magister mage archmage wizard witch high grand guildmaster guildmistress prior
    prioress abbot abbess bishop archbishop priest priestess elder chief chieftain headman
"""
TITLES: frozenset[str] = frozenset(_TITLE_WORDS.split())

_TOKEN_RE = re.compile(r"[^\W_]+")
_POSSESSIVE_RE = re.compile(r"(?:'s|s')$")

# Type names that denote people: their names get titles stripped and partial-name matching.
PERSON_TYPE_NAMES: frozenset[str] = frozenset(
    {"character", "person", "people", "being", "creature", "deity", "god", "human"}
)


@dataclass(frozen=True, slots=True)
class NameKeys:
    """The normalized keys of one surface form."""

    full: str
    core: str
    proper: bool  # the surface has an upper-case letter (a proper name, not "the old man")
    only_titles: bool  # nothing but titles/articles ("the Captain"): useless for merging

    @property
    def core_tokens(self) -> int:
        """Number of words in ``core``."""
        return self.core.count(" ") + 1 if self.core else 0


def tokens(surface: str) -> list[str]:
    """Normalized word tokens of a surface (possessive on the last word removed)."""
    text = normalize_text(surface)
    text = _POSSESSIVE_RE.sub("", text.rstrip(" .,;:!?"))
    return _TOKEN_RE.findall(text.replace("'", ""))


def name_keys(surface: str, *, person: bool) -> NameKeys:
    """Compute the ``full`` and ``core`` keys of a surface form.

    Cached: a series repeats the same few thousand names across millions of instances.

    Args:
        surface: A name, alias or mention as written.
        person: Whether the entity type is person-like (strip titles).
    """
    return _name_keys(surface, person)


@lru_cache(maxsize=1 << 18)
def _name_keys(surface: str, person: bool) -> NameKeys:
    toks = tokens(surface)
    while len(toks) > 1 and toks[0] in ARTICLES:
        toks = toks[1:]
    full = " ".join(toks)
    core_toks = toks
    if person:
        while len(core_toks) > 1 and core_toks[0] in TITLES:
            core_toks = core_toks[1:]
    only_titles = all(t in TITLES or t in ARTICLES for t in toks) if toks else True
    return NameKeys(
        full=full,
        core=" ".join(core_toks),
        proper=any(ch.isupper() for ch in surface) or not any(ch.isalpha() for ch in surface),
        only_titles=only_titles,
    )


@lru_cache(maxsize=1 << 18)
def id_key(entity_id: str) -> str:
    """Normalize an id for comparison: ``Mira_Thorne``, ``mira-thorne``, ``mira thorne`` agree."""
    return " ".join(_TOKEN_RE.findall(entity_id.replace("_", " ").lower()))


def snake_id(text: str) -> str:
    """A snake_case id made from a name (used when a cluster needs an id of its own)."""
    return "_".join(tokens(text)) or "entity"
