"""Name occurrences in one section: gazetteer hits, capitalized spans, and their kinds.

An *occurrence* is one place in the text where a name stands, with the cues around it. Kinds are
internal (person, place, org, artifact, event); :mod:`.entities` maps them onto the ontology's
type names. Everything here is a linear regex pass over the section, so a 300 KB book section
takes milliseconds.
"""

import re
from collections import Counter
from dataclasses import dataclass, field

from fantasy_kg.domain.baseline import lexicon
from fantasy_kg.domain.baseline.text import Sentences
from fantasy_kg.domain.schemas import Ontology

PERSON = "person"
PLACE = "place"
ORG = "org"
ARTIFACT = "artifact"
EVENT = "event"
KINDS: tuple[str, ...] = (PERSON, PLACE, ORG, ARTIFACT, EVENT)

# A capitalized word; an apostrophe inside is kept ("O'Brien"), a possessive "'s" is not.
_WORD = r"[A-Z][A-Za-z]*(?:['’](?!s\b)[A-Za-z]+)?(?:-[A-Za-z][a-z]*)*"
_SPACE = r"(?:[ \t]+|[ \t]*\n[ \t]*)"
_CONNECTOR = r"(?:of|of the|the|de|du|da|von|van|la|le)"
_SPAN_RE = re.compile(
    rf"(?<![A-Za-z'’-]){_WORD}(?:{_SPACE}(?:{_CONNECTOR}{_SPACE})?{_WORD})*(?![A-Za-z])"
)
_TOKEN_RE = re.compile(r"\S+")
_WS_RE = re.compile(r"\s+")
_ROMAN_RE = re.compile(r"^[IVXLCDM]+$")
# "You're", "Don't", "I'll": contractions are never names.
_CONTRACTION_RE = re.compile(r"^[A-Z][a-z]*['’](?:re|m|ll|ve|d|t|s)$")
_THE_BEFORE_RE = re.compile(r"(?<![A-Za-z])[Tt]he\s+$")

_PLACE_NOUN_BEFORE_RE = re.compile(
    r"\b[Tt]he\s+(" + "|".join(lexicon.PLACE_NOUNS) + r")\s+(?:of\s+(?:the\s+)?)?$"
)
_PLACE_PREP_BEFORE_RE = re.compile(
    r"\b(?:" + "|".join(lexicon.PLACE_PREPOSITIONS) + r")\s+(?:the\s+)?$"
)
_PERSON_VERB_BEFORE_RE = re.compile(r"\b(?:" + "|".join(lexicon.PERSON_VERBS) + r")\s+(?:the\s+)?$")
_PERSON_AFTER_RE = re.compile(
    r"^(?:,?\s+(?:" + "|".join(lexicon.PERSON_VERBS) + r")\b"
    r"|,\s+(?:who|whom)\b"
    r"|\s+(?:was|is)\s+(?:the\s+)?(?:daughter|son|wife|husband|brother|sister|father|mother|"
    r"child|heir|widow|king|queen|lord|lady)\b"
    r"|['’]s\s+(?:father|mother|brother|sister|son|daughter|wife|husband|own|face|eyes|hand|"
    r"hands|voice|head)\b)"
)
_ARTIFACT_VERB_BEFORE_RE = re.compile(
    r"\b(?:carried|carries|carry|carrying|wore|wears|wear|wearing|bore|bears|held|holds|hold|"
    r"holding|wielded|wields|clutched|clutches|took out|drew|draws|raised|lifted|hid|hides|"
    r"stole|steals|found|finds|polished|forged|broke|shattered|owned|owns|possessed)\s+the\s+$"
)
_ORG_AFTER_RE = re.compile(r"^\s+(?:was|is)\s+(?:an?\s+)?(?:order|guild|company|fellowship)\b")


@dataclass
class Occurrence:
    """One name in the text with the cues read around it."""

    start: int
    end: int
    surface: str
    core: str
    title: str = ""
    the: bool = False
    gazetteer_ids: tuple[str, ...] = ()
    head_kind: str = ""
    place_noun: str = ""
    lead: int = -1
    initial: bool = False
    votes: Counter[str] = field(default_factory=Counter)
    # The kind the learned tagger gave this span ("" when untagged or no tagger ran).
    tagged: str = ""

    @property
    def tokens(self) -> list[str]:
        """Words of the core name (connectors included)."""
        return self.core.split(" ")


@dataclass(frozen=True)
class GazetteerEntry:
    """A canonical entity from the ontology's renaming rules."""

    canonical_id: str
    name: str
    entity_type: str
    aliases: tuple[str, ...]


class Gazetteer:
    """Canonical names and aliases of the ontology, matched longest first and case-sensitively."""

    def __init__(self, ontology: Ontology) -> None:
        self.entries: dict[str, GazetteerEntry] = {}
        forms: dict[str, list[str]] = {}
        for rule in ontology.canonical_rules:
            aliases = tuple(a for a in rule.aliases if a.strip())
            self.entries[rule.canonical_id] = GazetteerEntry(
                rule.canonical_id, rule.canonical_name, rule.entity_type, aliases
            )
            for form in (rule.canonical_name, *aliases):
                bare = _strip_article(_WS_RE.sub(" ", form.strip()))
                # Lowercase aliases ("the old captain") are descriptions, too common to match.
                if not bare or not any(c.isupper() for c in bare):
                    continue
                ids = forms.setdefault(bare, [])
                if rule.canonical_id not in ids:
                    ids.append(rule.canonical_id)
        self.forms: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in forms.items()}
        ordered = sorted(self.forms, key=lambda f: (-len(f), f))
        self._re: re.Pattern[str] | None = None
        if ordered:
            alts = "|".join(_SPACE.join(re.escape(w) for w in f.split(" ")) for f in ordered)
            self._re = re.compile(rf"(?<![A-Za-z'’-])(?:{alts})(?![A-Za-z])")

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """Every gazetteer form in ``text`` as ``(start, end, normalized form)``."""
        if self._re is None:
            return []
        return [(m.start(), m.end(), _WS_RE.sub(" ", m.group())) for m in self._re.finditer(text)]


def _strip_article(name: str) -> str:
    for article in ("the ", "The "):
        if name.startswith(article):
            return name[len(article) :]
    return name


@dataclass(frozen=True)
class NameToken:
    """A capitalized word of a name run with its offsets in the section text."""

    text: str
    start: int
    end: int


def find_occurrences(
    text: str,
    sentences: Sentences,
    initials: set[int],
    vocabulary: frozenset[str],
    gazetteer: Gazetteer,
) -> list[Occurrence]:
    """All name occurrences of a section, in text order, with their context votes."""
    del sentences  # positions come from ``initials``; kept in the signature for symmetry
    occurrences: list[Occurrence] = []
    taken: list[tuple[int, int]] = []
    for start, end, form in gazetteer.find(text):
        occ = Occurrence(
            start=start,
            end=end,
            surface=text[start:end],
            core=form,
            gazetteer_ids=gazetteer.forms[form],
        )
        occurrences.append(occ)
        taken.append((start, end))

    spans = list(_SPAN_RE.finditer(text))
    midcaps: Counter[str] = Counter()
    for m in spans:
        for tok in _TOKEN_RE.finditer(m.group()):
            if tok.group()[0].isupper() and m.start() + tok.start() not in initials:
                midcaps[tok.group()] += 1

    taken.sort()
    ti = 0
    for m in spans:
        while ti < len(taken) and taken[ti][1] <= m.start():
            ti += 1
        tokens = [
            NameToken(t.group(), m.start() + t.start(), m.start() + t.end())
            for t in _TOKEN_RE.finditer(m.group())
        ]
        # Drop the parts a gazetteer hit already covers; keep capitalized remainders.
        j = ti
        while j < len(taken) and taken[j][0] < m.end():
            s, e = taken[j]
            tokens = [t for t in tokens if t.end <= s or t.start >= e]
            j += 1
        for group in _split_runs(tokens):
            occurrences.extend(_occurrences_from_tokens(text, group, initials, vocabulary, midcaps))

    occurrences.sort(key=lambda o: (o.start, -o.end))
    occurrences = _join_possessive_epithets(text, occurrences)
    for occ in occurrences:
        occ.initial = occ.start in initials
        mark_lead(text, occ)
        add_votes(text, occ)
    return occurrences


_TITLE_BEFORE_RE = re.compile(r"(?<![A-Za-z])(" + "|".join(sorted(lexicon.TITLES)) + r")\s+$")


def mark_lead(text: str, occ: Occurrence) -> None:
    """Find where the name phrase begins: before its title and before a leading "the"."""
    lead = occ.start
    if occ.title:
        m = _TITLE_BEFORE_RE.search(text, max(0, lead - 24), lead)
        if m:
            lead = m.start(1)
    m = _THE_BEFORE_RE.search(text, max(0, lead - 6), lead)
    if m:
        lead = m.start()
        if not occ.title:
            occ.the = True
    occ.lead = lead


_SENTENCE_OPENERS = frozenset(
    {
        "Meantime", "Meanwhile", "Tomorrow", "Today", "Tonight", "Yesterday", "Instantly",
        "Suddenly", "Presently", "Afterward", "Afterwards", "Finally", "Perhaps", "Soon",
        "Then", "Now", "Once", "Still", "Yet", "Here", "There", "Thus", "Hence", "Indeed",
        "Surely", "Truly", "Quickly", "Slowly", "Immediately", "Evidently", "Fortunately",
        "Unfortunately", "Luckily", "Later", "Next", "Again", "Also", "Besides", "Dragging",
        "Friend", "Dear", "Poor",
    }
)  # fmt: skip
_HEADS = lexicon.PLACE_HEADS | lexicon.ORG_HEADS | lexicon.ARTIFACT_HEADS | lexicon.EVENT_TAIL_HEADS

_POSSESSIVE_GAP_RE = re.compile(r"['’]s[ \t]+$")


def _join_possessive_epithets(text: str, occs: list[Occurrence]) -> list[Occurrence]:
    """Join "the Lantern's Eye" into one name: after "the", a possessive starts an epithet.

    "Mira's Lantern" stays two things (a person and what she owns); a person's name does not
    take "the", so "the X's Y" names one thing.
    """
    out: list[Occurrence] = []
    i = 0
    while i < len(occs):
        a = occs[i]
        if i + 1 < len(occs) and not a.gazetteer_ids and not a.title and a.the:
            b = occs[i + 1]
            gap = text[a.end : b.start]
            if not b.gazetteer_ids and not b.title and _POSSESSIVE_GAP_RE.fullmatch(gap):
                joined = Occurrence(
                    start=a.start,
                    end=b.end,
                    surface=text[a.start : b.end],
                    core=f"{a.core}{gap[:2]} {b.core}",
                    the=True,
                    head_kind=b.head_kind
                    or (ARTIFACT if b.tokens[-1] in lexicon.ARTIFACT_HEADS else ""),
                )
                out.append(joined)
                i += 2
                continue
        out.append(a)
        i += 1
    return out


def _split_runs(tokens: list[NameToken]) -> list[list[NameToken]]:
    """Split a token list where a removed gazetteer hit left a hole."""
    runs: list[list[NameToken]] = []
    current: list[NameToken] = []
    for tok in tokens:
        if current and tok.start - current[-1].end > 4:
            runs.append(current)
            current = []
        current.append(tok)
    if current:
        runs.append(current)
    return runs


def _is_connector(word: str) -> bool:
    return word in {"of", "the", "de", "du", "da", "von", "van", "la", "le"}


def _is_noise(
    tok: NameToken, initials: set[int], vocabulary: frozenset[str], midcaps: Counter[str]
) -> bool:
    word = tok.text
    if _is_connector(word):
        return True
    if word in lexicon.TITLES:
        return False  # "Captain Sable" at a sentence start still carries its title
    if word in lexicon.STOPWORDS:
        return True
    if len(word) == 1 or (len(word) > 1 and word.isupper()):
        return True
    if _CONTRACTION_RE.match(word):
        return True
    if _ROMAN_RE.match(word) and len(word) > 1:
        return True
    # Capitalized only because it starts a sentence: a common word ("Out", "Behind").
    return tok.start in initials and word.lower() in vocabulary and midcaps[word] == 0


def _occurrences_from_tokens(
    text: str,
    tokens: list[NameToken],
    initials: set[int],
    vocabulary: frozenset[str],
    midcaps: Counter[str],
) -> list[Occurrence]:
    # Any stopword inside splits the run ("Yes Mira" is two things, not one name).
    out: list[Occurrence] = []
    run: list[NameToken] = []
    for k, tok in enumerate(tokens):
        if (
            not run
            and k + 1 < len(tokens)
            and tokens[k + 1].text in _HEADS
            and tok.text not in lexicon.STOPWORDS
            and not _is_connector(tok.text)
        ):
            run.append(tok)  # "Cinder Ford lay...": a common word before a head noun is a name
            continue
        if not run and tok.start in initials and tok.text in _SENTENCE_OPENERS:
            # "Meantime Rinkitink", "Tomorrow Uncle Henry": an adverb that opens the sentence,
            # not the first word of a name (even where the section never writes it lowercase).
            continue
        if not _is_connector(tok.text) and _is_noise(tok, initials, vocabulary, midcaps):
            if run:
                out.extend(occurrences_of_run(text, run))
            run = []
            continue
        run.append(tok)
    if run:
        out.extend(occurrences_of_run(text, run))
    return out


def occurrences_of_run(text: str, tokens: list[NameToken]) -> list[Occurrence]:
    """Turn a clean token run into occurrences: strip titles, split or keep "X of Y"."""
    while tokens and _is_connector(tokens[0].text):
        tokens = tokens[1:]
    while tokens and _is_connector(tokens[-1].text):
        tokens = tokens[:-1]
    if not tokens:
        return []
    title = ""
    words = [t.text for t in tokens]
    if words[0] in lexicon.TITLES:
        if len(words) == 1:
            return []  # a title alone names nobody in particular
        if not (words[1] == "of" and words[0] in lexicon.PERSON_OF_HEADS):
            title = words[0]
            tokens = tokens[1:]
            words = words[1:]
            while words and words[0] in lexicon.TITLES and len(words) > 1:
                tokens, words = tokens[1:], words[1:]
            if _is_connector(words[0]):
                return []
    if "of" in words:
        i = words.index("of")
        head = words[i - 1] if i > 0 else ""
        kind = ""
        if i == 1 and head in lexicon.EVENT_HEADS:
            kind = EVENT
        elif head in lexicon.ORG_HEADS:
            kind = ORG
        elif head in lexicon.PLACE_HEADS:
            kind = PLACE
        elif head in lexicon.PERSON_OF_HEADS:
            kind = PERSON
        elif head in lexicon.ARTIFACT_HEADS:
            kind = ARTIFACT
        if not kind:
            rest = tokens[i + 1 :]
            return occurrences_of_run(text, tokens[:i]) + occurrences_of_run(text, rest)
        occ = _make(text, tokens, title)
        occ.head_kind = kind
        return [occ]
    occ = _make(text, tokens, title)
    last = words[-1]
    if title:
        occ.head_kind = PERSON
    elif (last in lexicon.PLACE_HEADS and (len(words) > 1 or occ.the)) or (
        words[0] in lexicon.PLACE_FIRST_HEADS and len(words) > 1
    ):
        occ.head_kind = PLACE
    elif last in lexicon.ORG_HEADS and (len(words) > 1 or occ.the):
        occ.head_kind = ORG
    elif last in lexicon.ARTIFACT_HEADS and occ.the:
        occ.head_kind = ARTIFACT
    elif last in lexicon.EVENT_TAIL_HEADS and occ.the and len(words) > 1:
        occ.head_kind = EVENT
    elif last in lexicon.TITLES and len(words) > 1:
        occ.head_kind = PERSON  # "the Nome King", "the Snow Queen"
    return [occ]


def _make(text: str, tokens: list[NameToken], title: str) -> Occurrence:
    start, end = tokens[0].start, tokens[-1].end
    core = " ".join(t.text for t in tokens)
    the = not title and bool(_THE_BEFORE_RE.search(text, max(0, start - 6), start))
    return Occurrence(
        start=start, end=end, surface=text[start:end], core=core, title=title, the=the
    )


def add_votes(text: str, occ: Occurrence) -> None:
    """Add context votes: what the words around this occurrence say about its kind."""
    if occ.head_kind:
        occ.votes[occ.head_kind] += 3
    if occ.title:
        occ.votes[PERSON] += 3
    before = text[max(0, occ.start - 40) : occ.start]
    if occ.title:
        before = text[max(0, occ.start - 40 - len(occ.title) - 1) : occ.start - len(occ.title) - 1]
    after = text[occ.end : occ.end + 60]
    noun = _PLACE_NOUN_BEFORE_RE.search(before)
    if noun:
        occ.votes[PLACE] += 3
        occ.place_noun = noun.group(1)
    elif _PLACE_PREP_BEFORE_RE.search(before) and not after.startswith(("'s", "’s")):
        # "in the Westreach": a name that takes "the" after "in" is a region, not a person.
        occ.votes[PLACE] += 2 if occ.the and not occ.title else 1
    if _PERSON_VERB_BEFORE_RE.search(before):
        occ.votes[PERSON] += 2
    if _PERSON_AFTER_RE.match(after):
        occ.votes[PERSON] += 2
    if _ORG_AFTER_RE.match(after):
        occ.votes[ORG] += 2
    if occ.the and not occ.title and _ARTIFACT_VERB_BEFORE_RE.search(before):
        occ.votes[ARTIFACT] += 2


def normalize(surface: str) -> str:
    """A surface form with its whitespace (hard wraps) collapsed to single spaces."""
    return _WS_RE.sub(" ", surface).strip()
