"""From name occurrences to entities: alias links, first-name resolution, kinds, attributes.

Resolution is per occurrence, in text order, so that two different men called Tomas stay apart:
a bare "Tomas" goes to the Tomas mentioned most recently before it (or, failing that, the next
one mentioned), never to a merged "Tomas" node. Gazetteer entities (canonical renaming rules) are
never merged with each other, which is also how do-not-merge rules are honoured.
"""

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from fantasy_kg.domain.baseline import lexicon
from fantasy_kg.domain.baseline.names import (
    ARTIFACT,
    EVENT,
    KINDS,
    ORG,
    PERSON,
    PLACE,
    Gazetteer,
    Occurrence,
    normalize,
)
from fantasy_kg.domain.unionfind import find_root

# Ranks and forms of address that are not names when they stand alone.
_BARE_RANKS = lexicon.TITLES | {
    "Ruler", "Chief", "Master", "Mistress", "Madam", "Majesty", "Highness", "Excellency",
    "Lordship", "Ladyship", "Royal",
}  # fmt: skip
# "Your Majesty", "His Royal Highness", "Your Grace": a possessive before ranks is a form of
# address ("Grace" and "Honor" alone may be given names).
_ADDRESS_OWNERS = frozenset({"Your", "His", "Her", "Their", "My", "Our"})
_ADDRESS_RANKS = _BARE_RANKS | {"Grace", "Honour", "Honor", "Worship"}
# Bare capitalized spans seen once with no cue are usually sentence-initial noise.
MIN_VOTES_ALONE = 2
MIN_COUNT_ALONE = 2

_OCCUPATION_AFTER_RE = re.compile(
    r"^(?:,\s+(?:the|a|an)\s+|\s+(?:was|is)\s+(?:the|a|an)\s+)"
    r"(?:(?:old|young|local|royal|village|river|chief|head|master|king's|queen's)\s+)?"
    r"(" + "|".join(sorted(lexicon.OCCUPATIONS)) + r")\b"
)


@dataclass
class Entity:
    """An entity of one section, with everything the output needs."""

    key: str
    gazetteer_id: str = ""
    gazetteer_name: str = ""
    gazetteer_type: str = ""
    kind: str = ""
    occurrences: list[Occurrence] = field(default_factory=list)
    votes: Counter[str] = field(default_factory=Counter)
    alias_cores: set[str] = field(default_factory=set)
    # Words the section writes in lowercase: "Friend Scarecrow", "Tiny Trot" are a common word
    # glued to a name, when the bare name is far more frequent.
    vocabulary: frozenset[str] = frozenset()

    @property
    def first(self) -> int:
        """Offset of the first mention (output order)."""
        return self.occurrences[0].start if self.occurrences else 0

    def name(self) -> str:
        """Canonical name: the rule's, else the fullest non-epithet form, else the most frequent."""
        if self.gazetteer_name:
            return self.gazetteer_name
        forms: Counter[str] = Counter()
        first_seen: dict[str, int] = {}
        epithet: dict[str, bool] = {}
        for occ in self.occurrences:
            forms[occ.core] += 1
            first_seen.setdefault(occ.core, occ.start)
            epithet[occ.core] = epithet.get(occ.core, True) and occ.the

        def glued(form: str) -> bool:
            head, _, tail = form.partition(" ")
            return head.lower() in self.vocabulary and forms.get(tail, 0) > 4 * forms[form]

        return min(
            forms,
            key=lambda f: (
                f in self.alias_cores,
                glued(f),
                epithet[f] and self.kind == PERSON,
                -len(f.split(" ")) if self.kind == PERSON else 0,
                -forms[f],
                first_seen[f],
            ),
        )


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        return find_root(self.parent, key)

    def union(self, a: str, b: str) -> str:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            # Keep gazetteer roots as roots so their ids survive.
            if rb.startswith("g:") and not ra.startswith("g:"):
                ra, rb = rb, ra
            self.parent[rb] = ra
        return ra


def occurrence_key(occ: Occurrence) -> str:
    """Union-find key of an occurrence before resolution."""
    if len(occ.gazetteer_ids) == 1:
        return "g:" + occ.gazetteer_ids[0]
    return "c:" + occ.core


def build_entities(
    text: str,
    occurrences: list[Occurrence],
    gazetteer: Gazetteer,
    alias_links: list[tuple[int, int]],
    type_kind: dict[str, str],
    vocabulary: frozenset[str] = frozenset(),
    *,
    tagged: bool = False,
) -> tuple[list[Entity], list[Entity | None]]:
    """Group occurrences into entities.

    Args:
        text: The section text (for attribute cues).
        occurrences: All name occurrences, in text order.
        gazetteer: The ontology's canonical names.
        alias_links: ``(name_index, alias_index)`` pairs from alias introductions.
        type_kind: Ontology type name → internal kind, for gazetteer entities.
        vocabulary: Words the section writes in lowercase (common words, not given names).
        tagged: Whether a learned tagger ran: then an entity it found even once is kept, and
            one it never found must still read as a name (see :func:`_name_like`).

    Returns:
        The entities (in order of first mention) and, for each occurrence, its entity or
        ``None`` when the occurrence was dropped as noise.
    """
    uf = _UnionFind()
    gaz_of_root: dict[str, str] = {}
    for occ in occurrences:
        key = occurrence_key(occ)
        uf.find(key)
        if key.startswith("g:"):
            gaz_of_root[key] = key
    alias_cores: set[str] = set()
    for name_i, alias_i in alias_links:
        a, b = occurrences[name_i], occurrences[alias_i]
        if len(a.gazetteer_ids) > 1 or len(b.gazetteer_ids) > 1:
            continue
        if a.head_kind and b.head_kind and a.head_kind != b.head_kind:
            continue  # "the Order of X, called the Red Keep": a group is not a fortress
        ra, rb = uf.find(occurrence_key(a)), uf.find(occurrence_key(b))
        ga, gb = gaz_of_root.get(ra), gaz_of_root.get(rb)
        if ga and gb and ga != gb:
            continue  # two canonical entities: never merge (do-not-merge rules)
        root = uf.union(ra, rb)
        alias_cores.add(b.core)
        if ga or gb:
            gaz_of_root[root] = ga or gb or ""

    # Votes per group decide the kind of non-gazetteer groups.
    group_votes: dict[str, Counter[str]] = {}
    group_count: Counter[str] = Counter()
    group_multi: set[str] = set()
    for occ in occurrences:
        root = uf.find(occurrence_key(occ))
        group_votes.setdefault(root, Counter()).update(occ.votes)
        group_count[root] += 1
        if len(occ.tokens) > 1:
            group_multi.add(root)

    def kind_of(root: str) -> str:
        gaz = gaz_of_root.get(root)
        if gaz:
            return type_kind.get(gazetteer.entries[gaz[2:]].entity_type, "")
        votes = group_votes.get(root, Counter())
        if not votes:
            return PERSON
        return max(KINDS, key=lambda k: (votes[k], -KINDS.index(k)))

    # Index of "full names" by their words, to resolve bare first names and surnames. A full name
    # starts with a word that is never written in lowercase ("Mira Thorne", not "Tin Woodman" or
    # "Head Dorothy"), or is a canonical name, or recurs as it is.
    core_count = Counter(o.core for o in occurrences)
    word_index: dict[str, set[str]] = {}
    for occ in occurrences:
        root = uf.find(occurrence_key(occ))
        words = [w for w in occ.tokens if w[0].isupper()]
        if occ.gazetteer_ids and len(occ.gazetteer_ids) == 1:
            entry = gazetteer.entries[occ.gazetteer_ids[0]]
            words = [w for w in entry.name.split() if w[0].isupper()]
        if len(words) < 2 or occ.the or "of" in occ.tokens or "the" in occ.tokens:
            continue
        if not occ.gazetteer_ids and words[0].lower() in vocabulary and core_count[occ.core] < 2:
            continue
        for w in (words[0], words[-1]):
            word_index.setdefault(w, set()).add(root)

    first_pos: dict[str, list[int]] = {}
    for occ in occurrences:
        first_pos.setdefault(uf.find(occurrence_key(occ)), []).append(occ.start)

    root_words: dict[str, set[str]] = {}
    for occ in occurrences:
        root_words.setdefault(uf.find(occurrence_key(occ)), set()).update(occ.tokens)

    assigned: list[str | None] = []
    last_seen: dict[str, int] = {}
    for occ in occurrences:
        found = _resolve(
            occ, uf, gaz_of_root, word_index, last_seen, first_pos, kind_of, root_words
        )
        assigned.append(found)
        if found is not None:
            last_seen[found] = occ.start

    entities: dict[str, Entity] = {}
    per_occ: list[Entity | None] = []
    for occ, group in zip(occurrences, assigned, strict=True):
        if group is None:
            per_occ.append(None)
            continue
        root = group
        ent = entities.get(root)
        if ent is None:
            ent = Entity(key=root, alias_cores=alias_cores, vocabulary=vocabulary)
            gaz = gaz_of_root.get(root)
            if gaz:
                entry = gazetteer.entries[gaz[2:]]
                ent.gazetteer_id = entry.canonical_id
                ent.gazetteer_name = entry.name
                ent.gazetteer_type = entry.entity_type
            ent.kind = kind_of(root)
            entities[root] = ent
        ent.occurrences.append(occ)
        ent.votes.update(occ.votes)
        per_occ.append(ent)

    kept: list[Entity] = []
    for ent in entities.values():
        if ent.gazetteer_id:
            kept.append(ent)
        elif _plural_of_name(ent, word_index):
            continue  # "the two Tomases": a plural of names, not an entity
        elif tagged and all(_bare_rank(o.core) for o in ent.occurrences):
            continue  # "the Prince", "the Ruler": a rank alone names nobody in particular
        elif tagged and any(o.tagged for o in ent.occurrences):
            kept.append(ent)  # the tagger is confident, however often the name occurs
        elif tagged and not _name_like(ent, vocabulary):
            # Capitalized, never tagged, no structural cue (a title, a head noun such as "the
            # Nome King", "the city of X"), and a common word: "Fate smiled" is not a name.
            continue
        elif _significant(ent, group_count[ent.key], ent.key in group_multi):
            kept.append(ent)
    kept_keys = {e.key for e in kept}
    per_occ = [e if e is not None and e.key in kept_keys else None for e in per_occ]
    kept.sort(key=lambda e: e.first)
    return kept, per_occ


def _bare_rank(core: str) -> bool:
    """Whether a name is only ranks, maybe after a possessive ("Your Royal Highness")."""
    words = core.replace(".", "").split(" ")
    if len(words) > 1 and words[0] in _ADDRESS_OWNERS:
        return all(w in _ADDRESS_RANKS for w in words[1:])
    return all(w in _BARE_RANKS for w in words)


def _name_like(ent: Entity, vocabulary: frozenset[str]) -> bool:
    """Whether an entity the tagger never found still reads as a name.

    A structural cue (title, head noun, "the city of X") is enough. Otherwise it must be
    capitalized mid-sentence at least twice and either be a word the section never writes in
    lowercase ("Toto") or be used as an epithet with "the" ("the Scarecrow", "the Tin Woodman");
    "Fate" and "Truth", written in lowercase elsewhere and never with "the", are not names.
    """
    occs = ent.occurrences
    if any(o.head_kind or o.title or o.place_noun for o in occs):
        return True
    if sum(1 for o in occs if not o.initial) < 2:
        return False
    first_words = {o.core.split(" ")[0].lower() for o in occs}
    return bool(first_words - vocabulary) or sum(1 for o in occs if o.the) >= 2


def _plural_of_name(ent: Entity, word_index: dict[str, set[str]]) -> bool:
    cores = {o.core for o in ent.occurrences}
    if len(cores) != 1:
        return False
    core = next(iter(cores))
    if " " in core or not core.endswith("s"):
        return False
    return core[:-1] in word_index or (core.endswith("es") and core[:-2] in word_index)


def _significant(ent: Entity, group_count: int, multiword: bool) -> bool:
    top = max(ent.votes.values(), default=0)
    if top == 0 and all(o.initial and len(o.tokens) == 1 for o in ent.occurrences):
        return False  # only ever capitalized because it starts a sentence ("Instantly")
    if top >= MIN_VOTES_ALONE:
        return True
    if len(ent.occurrences) >= MIN_COUNT_ALONE or group_count >= MIN_COUNT_ALONE:
        return True
    return multiword and top >= 1


def _resolve(
    occ: Occurrence,
    uf: _UnionFind,
    gaz_of_root: dict[str, str],
    word_index: dict[str, set[str]],
    last_seen: dict[str, int],
    first_pos: dict[str, list[int]],
    kind_of: Callable[[str], str],
    root_words: dict[str, set[str]],
) -> str | None:
    """The group an occurrence belongs to, resolving bare and ambiguous names by proximity."""
    if len(occ.gazetteer_ids) > 1:
        return _nearest([uf.find("g:" + g) for g in occ.gazetteer_ids], occ, last_seen, first_pos)
    own = uf.find(occurrence_key(occ))
    if own in gaz_of_root or len(occ.tokens) > 1:
        return own
    word = occ.core
    # "the Order", "the Court": a head word alone refers back to a named group of that kind.
    head_kind = _head_word_kind(word)
    if head_kind and occ.the:
        cands = [r for r in last_seen if kind_of(r) == head_kind and word in root_words.get(r, ())]
        return _nearest(cands, occ, last_seen, first_pos) if cands else None
    cands = sorted(word_index.get(word, set()) - {own})
    # A bare name said before any full name containing it is its own entity: "Trot" and "the
    # Ork" are two characters long before a song called "Ork Trot" turns up.
    own_first = first_pos.get(own, [occ.start])[0]
    cands = [c for c in cands if first_pos.get(c, [own_first])[0] < own_first]
    if not cands:
        return own
    own_kind = kind_of(own)
    votes = occ.votes
    if own_kind != PERSON and max(votes.values(), default=0) >= 2:
        return own  # a place or group that shares a word with a person's name
    return _nearest(cands, occ, last_seen, first_pos)


def _head_word_kind(word: str) -> str:
    if word in lexicon.ORG_HEADS:
        return ORG
    if word in lexicon.PLACE_HEADS:
        return PLACE
    if word in lexicon.ARTIFACT_HEADS:
        return ARTIFACT
    if word in lexicon.EVENT_TAIL_HEADS:
        return EVENT
    return ""


def _nearest(
    cands: list[str], occ: Occurrence, last_seen: dict[str, int], first_pos: dict[str, list[int]]
) -> str:
    """The candidate mentioned most recently before ``occ``, else the next one after it."""
    seen = [(last_seen[c], c) for c in cands if c in last_seen]
    if seen:
        return max(seen)[1]
    after: list[tuple[int, str]] = []
    for c in cands:
        later = [p for p in first_pos.get(c, []) if p > occ.start]
        if later:
            after.append((later[0], c))
    if after:
        return min(after)[1]
    return sorted(cands)[0]


def attributes_of(text: str, ent: Entity) -> list[tuple[str, str]]:
    """Attributes read off the text: title, occupation (persons), kind (places)."""
    out: list[tuple[str, str]] = []
    kind = ent.kind
    titles = Counter(o.title for o in ent.occurrences if o.title)
    if titles:
        out.append(("title", min(titles, key=lambda t: (-titles[t], t))))
    if kind in (PERSON, "") or ent.gazetteer_type:
        occs: Counter[str] = Counter()
        for occ in ent.occurrences:
            m = _OCCUPATION_AFTER_RE.match(text[occ.end : occ.end + 60])
            if m:
                occs[m.group(1)] += 1
        if occs:
            out.append(("occupation", min(occs, key=lambda t: (-occs[t], t))))
    nouns = Counter(o.place_noun for o in ent.occurrences if o.place_noun)
    if nouns and (kind == PLACE or ent.gazetteer_type):
        out.append(("kind", min(nouns, key=lambda t: (-nouns[t], t))))
    return out


def surface_forms(ent: Entity) -> list[str]:
    """Distinct surface forms (verbatim, first spelling of each), in order of appearance."""
    seen: set[str] = set()
    out: list[str] = []
    for occ in ent.occurrences:
        norm = normalize(occ.surface)
        if norm not in seen:
            seen.add(norm)
            out.append(occ.surface)
    return out


def alias_forms(ent: Entity, name: str) -> list[str]:
    """Other names of the entity: cores, titled forms and "the" epithets, whitespace-normalized.

    Forms that differ only by a leading "the" count once ("the Lantern Maid", "Lantern Maid").
    """
    seen = {_bare(name)}
    out: list[str] = []
    for occ in ent.occurrences:
        forms = [f"the {occ.core}" if occ.the and not occ.title else occ.core]
        if occ.title:
            forms.append(f"{occ.title} {occ.core}")
        for form in forms:
            if _bare(form) not in seen:
                seen.add(_bare(form))
                out.append(form)
    return out


def _bare(name: str) -> str:
    return name[4:] if name.startswith(("the ", "The ")) else name


def snake_id(name: str) -> str:
    """snake_case id of a name (accents folded); ``entity`` if nothing usable is left."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "_", folded.lower()).strip("_")
    return slug or "entity"
