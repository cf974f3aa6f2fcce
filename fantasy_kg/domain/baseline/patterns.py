"""Relationship and alias cues: what the words *between* two names say about them.

Each cue is a regular expression over the whole gap between two names of one sentence; the first
relationship type the ontology allows for the endpoints wins.
Why: docs/architecture.md, "The embedded extractor".
"""

import re
from dataclasses import dataclass

from fantasy_kg.domain.baseline import lexicon

_BE = (
    r"(?:was|is|are|were|had been|has been|became|becomes|remained|remains|was once|"
    r"had once been|was still|is still|was now|is now|was also|is also)"
)
_DET = r"(?:(?:the|a|an|one|his|her|their|its)\s+)?"
_ADJ = (
    r"(?:(?:only|eldest|youngest|elder|younger|older|oldest|second|third|first|true|rightful|own|"
    r"beloved|trusted|loyal|faithful|sworn|bitter|old|great|mortal|last|late|chief|dearest|"
    r"favourite|favorite|secret|natural|twin|foster|adopted|long-lost|new|former|fellow|"
    r"devoted|staunch|bastard|firstborn|only)\s+)*"
)
_AUX = (
    r"(?:(?:had|has|have|once|long|also|still|then|later|now|always|openly|secretly|"
    r"faithfully|first|soon|already|often|too|had long|loyally|proudly)\s+)*"
)
_SUBJ = r"(?:\s+|,\s+(?:who|that|which)\s+)"
_PLACE_TAIL = r"(?:the\s+(?:" + "|".join(lexicon.PLACE_NOUNS) + r")\s+(?:of\s+)?)?"


def _noun(nouns: str) -> str:
    """``X was the <noun> of Y`` and the appositive ``X, the <noun> of Y``."""
    return rf"^(?:{_SUBJ}{_BE}\s+|,\s+){_DET}{_ADJ}(?:{nouns})\s+(?:of|to)\s+{_PLACE_TAIL}$"


def _verb(verbs: str) -> str:
    """``X <verb> Y`` and ``X, who had <verb> Y``."""
    return rf"^{_SUBJ}{_AUX}(?:{verbs})\s+{_PLACE_TAIL}$"


def _poss(nouns: str) -> str:
    """``X's <noun>, Y`` and ``X's <noun> was Y``."""
    return rf"^['’]s\s+{_ADJ}(?:{nouns})(?:,\s*|\s+(?:was|is)\s+|\s+)$"


@dataclass(frozen=True)
class Cue:
    """One relationship cue.

    Attributes:
        types: Candidate relationship type names, tried in order against the ontology.
        reverse: True when the later mention is the source ("X was the son of Y": Y → X).
        confidence: How explicit the cue is (0.9 for "was the daughter of", less for "had").
        gap: Must match the whole normalized gap between the two mentions.
        after: If set, must match the text right after the second mention.
        before: If set, must match the text right before the first mention.
    """

    types: tuple[str, ...]
    reverse: bool
    confidence: float
    gap: re.Pattern[str]
    after: re.Pattern[str] | None = None
    before: re.Pattern[str] | None = None


def _cue(
    types: str,
    gap: str,
    *,
    reverse: bool = False,
    confidence: float = 0.9,
    after: str | None = None,
    before: str | None = None,
) -> Cue:
    return Cue(
        types=tuple(types.split()),
        reverse=reverse,
        confidence=confidence,
        gap=re.compile(gap),
        after=re.compile(after) if after else None,
        before=re.compile(before) if before else None,
    )


_SPEECH = (
    r"said|spoke|called|cried|whispered|shouted|replied|answered|murmured|muttered|explained|"
    r"remarked|declared|called out|sang|wrote"
)

RELATION_CUES: tuple[Cue, ...] = (
    # Kinship
    _cue("PARENT_OF", _noun(r"daughter|son|child|heir|daughters|sons|children"), reverse=True),
    _cue("PARENT_OF", _noun(r"father|mother|parent|sire")),
    _cue("PARENT_OF", _poss(r"father|mother"), reverse=True),
    _cue("PARENT_OF", _poss(r"son|daughter|child|heir")),
    _cue(
        "PARENT_OF",
        r"^\s+(?:and|with)\s+(?:his|her|their)\s+(?:father|mother),?\s+$",
        reverse=True,
        confidence=0.8,
    ),
    _cue(
        "PARENT_OF",
        r"^\s+(?:and|with)\s+(?:his|her|their)\s+(?:son|daughter),?\s+$",
        confidence=0.8,
    ),
    _cue("SIBLING_OF MEMBER_OF", _noun(r"brother|sister|twin|sibling|half-brother|half-sister")),
    _cue("SIBLING_OF", _poss(r"brother|sister|twin")),
    _cue(
        "SIBLING_OF",
        r"^\s+(?:and|with)\s+(?:his|her)\s+(?:\w+\s+)?(?:brother|sister),?\s+$",
        confidence=0.8,
    ),
    _cue(
        "SIBLING_OF",
        r"^\s+and\s+$",
        after=r"^\s+(?:were|are)\s+(?:\w+\s+)?"
        r"(?:brothers|sisters|siblings|twins|brother and sister)\b",
        confidence=0.85,
    ),
    _cue("SPOUSE_OF", _noun(r"wife|husband|spouse|widow|widower|consort|bride|betrothed")),
    _cue("SPOUSE_OF", _poss(r"wife|husband|consort|widow|bride")),
    _cue("SPOUSE_OF", _verb(r"married|marries|wed|weds|wedded")),
    _cue(
        "SPOUSE_OF",
        r"^\s+and\s+$",
        after=r"^\s+(?:were|are)\s+(?:\w+\s+)?(?:married|wed|husband and wife)\b",
        confidence=0.85,
    ),
    # Allegiance and enmity
    _cue(
        "LOYAL_TO",
        _verb(
            r"(?:sworn|swore|swears|pledged|pledges|given|gave|owed|owes)\s+(?:(?:his|her|their)\s+)?"
            r"(?:fealty|allegiance|loyalty|service|sword|oath|life|faith)(?:\s+and\s+\w+)?\s+to"
        ),
    ),
    _cue(
        "LOYAL_TO",
        rf"^(?:{_SUBJ}{_BE}\s+|,\s+)(?:(?:ever|always|fiercely|utterly|still|deeply)\s+)?"
        r"(?:loyal|faithful|devoted|sworn|bound|true|pledged)\s+to\s+$",
    ),
    _cue(
        "LOYAL_TO MEMBER_OF",
        _verb(
            r"served|serves|serve|obeyed|obeys|served under|fought for|"
            r"rode for|worked for|works for|spied for"
        ),
        confidence=0.85,
    ),
    _cue(
        "LOYAL_TO MEMBER_OF",
        _noun(
            r"servant|vassal|liegeman|retainer|bannerman|champion|herald|squire|bodyguard|"
            r"sworn sword|sworn shield|man-at-arms|spy|agent|envoy|emissary"
        ),
        confidence=0.85,
    ),
    _cue("ENEMY_OF", _noun(r"enemy|enemies|foe|foes|nemesis|rival|adversary|bane")),
    _cue(
        "ENEMY_OF",
        _verb(
            r"hated|hates|despised|despises|loathed|loathes|opposed|opposes|warred with|"
            r"waged war on|made war on|betrayed|betrays"
        ),
        confidence=0.7,
    ),
    _cue(
        "ENEMY_OF",
        r"^\s+and\s+$",
        after=r"^\s+(?:were|are)\s+(?:\w+\s+)?(?:enemies|foes|rivals)\b",
        confidence=0.85,
    ),
    # Membership and leadership
    _cue(
        "MEMBER_OF",
        _noun(
            r"member|members|knight|knights|soldier|soldiers|officer|initiate|novice|adept|"
            r"acolyte|brethren|sisters|brothers|councillor|councilor|priest|priestess|monk|"
            r"one|part"
        ),
    ),
    _cue(
        "MEMBER_OF",
        _verb(
            r"joined|joins|belonged to|belongs to|served in|serves in|rode with|"
            r"was sworn into|was admitted to|entered the service of"
        ),
        confidence=0.85,
    ),
    _cue(
        "LEADS PARTICIPATED_IN",
        _verb(
            r"led|leads|lead|ruled|rules|rule|commanded|commands|governed|governs|headed|"
            r"heads|founded|reigned over|reigns over|presided over|presides over|captained"
        ),
    ),
    _cue(
        "LEADS",
        _noun(
            r"leader|head|ruler|lord|lady|master|mistress|captain|commander|queen|king|prince|"
            r"princess|chief|chieftain|grandmaster|founder|general|emperor|empress|sovereign|"
            r"governor|regent|warden|guildmistress|guildmaster|high priestess|high priest"
        ),
        confidence=0.8,
    ),
    # Places
    _cue(
        "LIVES_IN",
        _verb(
            r"(?:lived|lives|live|dwelt|dwells|dwell|resided|resides|settled|"
            r"made (?:his|her|their) home|kept house)\s+(?:in|at|on|within|near)"
        ),
    ),
    _cue(
        "LOCATED_IN",
        r"^(?:\s+|,\s+(?:which|that)\s+)(?:lay|lies|lie|stood|stands|sat|sits|was|is|rose|rises|"
        r"nestled|sprawled|perched|was built|is built)\s+"
        r"(?:(?:far|deep|high|just|somewhere|north|south|east|west|down|up|away)\s+)*"
        r"(?:in|within|inside|on|upon|beside|by|among|at)\s+" + _PLACE_TAIL + r"$",
        confidence=0.85,
    ),
    _cue("LOCATED_IN", r"^,\s+(?:in|within|inside)\s+" + _PLACE_TAIL + r"$", confidence=0.75),
    _cue(
        "LOCATED_IN",
        r"^,\s+(?:an?|the)\s+(?:[a-z-]+\s+){0,2}(?:" + "|".join(lexicon.PLACE_NOUNS) + r")\s+"
        r"(?:in|of|on|within)\s+" + _PLACE_TAIL + r"$",
        confidence=0.8,
    ),
    # Possession
    _cue(
        "POSSESSES",
        _verb(
            r"carried|carries|carry|carrying|wore|wears|wear|wearing|bore|bears|bear|bearing|"
            r"held|holds|hold|holding|possessed|possesses|owned|owns|wielded|wields|kept|keeps|"
            r"clutched|clutches|inherited|inherits|guarded|guards|treasured"
        ),
    ),
    _cue(
        "POSSESSES",
        _verb(
            r"had|has|took|takes|stole|steals|found|finds|received|receives|gained|won|"
            r"drew|draws|took out|snatched|seized|claimed"
        ),
        confidence=0.7,
    ),
    _cue("POSSESSES", r"^['’]s\s+$", confidence=0.7),
    # Events
    _cue(
        "PARTICIPATED_IN",
        _verb(
            r"(?:fought|fell|died|bled|served|stood|triumphed|perished|was wounded|was killed|"
            r"was slain|was captured|was present|was|were|took part|rode|marched|burned|"
            r"was born|vanished|disappeared|lost|won)\s+(?:at|in|on|during)"
        ),
    ),
    _cue(
        "PARTICIPATED_IN",
        _verb(r"survived|witnessed|won|lost|fought|attended|escaped|remembered|started|began"),
        confidence=0.8,
    ),
    # Dialogue (edges only if the ontology has such a type; otherwise proposal evidence)
    _cue("SPOKE_TO", rf"^,?\s+(?:{_SPEECH})\s+to\s+$", confidence=0.8),
    _cue(
        "SPOKE_TO",
        _verb(
            r"told|tells|asked|asks|thanked|warned|promised|begged|greeted|addressed|"
            r"answered|scolded|reassured|urged|implored"
        ),
        confidence=0.7,
    ),
    _cue("SPOKE_TO", r"^\s+to\s+$", before=rf"(?:{_SPEECH})\s+$", confidence=0.8),
    # Proposal-only cues (no default ontology type covers them)
    _cue(
        "MENTOR_OF", _noun(r"apprentice|pupil|student|disciple|ward|protege|protégé"), reverse=True
    ),
    _cue(
        "MENTOR_OF",
        _verb(r"trained|trains|taught|teaches|tutored|tutors|mentored|mentors|schooled|instructed"),
        confidence=0.8,
    ),
    _cue(
        "MENTOR_OF",
        _verb(r"apprenticed to|studied under|learned from|trained under|was apprenticed to"),
        reverse=True,
        confidence=0.8,
    ),
    _cue("ALLY_OF", _noun(r"ally|allies|friend|friends|companion|companions|comrade|comrades")),
    _cue(
        "ALLY_OF",
        _verb(
            r"befriended|befriends|allied with|allied (?:himself|herself|themselves) with|"
            r"sided with|aided|helped|rescued|saved|protected"
        ),
        confidence=0.7,
    ),
    _cue(
        "KILLED",
        _verb(
            r"killed|kills|slew|slays|murdered|murders|destroyed|destroys|melted|assassinated|"
            r"beheaded|executed|poisoned|drowned|slaughtered"
        ),
    ),
    _cue(
        "CREATED",
        _verb(
            r"forged|forges|crafted|crafts|made|makes|built|builds|created|creates|"
            r"enchanted|wrought"
        ),
        confidence=0.7,
    ),
)

ALIAS_CUES: tuple[Cue, ...] = (
    _cue(
        "ALIAS",
        r"^,\s+(?:whom|which)\s+(?:[^,;:\"“”]{1,60}?\s+)?(?:had\s+)?"
        r"(?:called|call|calls|named|name|knew as|know as|dubbed|styled|nicknamed)\s+$",
    ),
    _cue(
        "ALIAS",
        r"^,\s+(?:also\s+|better\s+|once\s+|sometimes\s+|often\s+|commonly\s+|widely\s+)?"
        r"(?:known as|called|named|styled|nicknamed|dubbed)\s+$",
    ),
    _cue(
        "ALIAS",
        r"^\s+(?:also\s+|better\s+|commonly\s+|widely\s+)?(?:known as|nicknamed|dubbed)\s+$",
    ),
    _cue(
        "ALIAS",
        r"^,?\s+(?:who|which)\s+(?:was|is|were|had been)\s+(?:also\s+|better\s+|once\s+|"
        r"sometimes\s+|often\s+)?(?:called|known as|named|nicknamed|dubbed|styled)\s+$",
    ),
    _cue(
        "ALIAS",
        r"^,\s+as\s+$",
        after=r"^\s+(?:was|is|had been)\s+(?:\w+\s+)?(?:called|known)\b",
        reverse=True,
    ),
    _cue("ALIAS", r"^\s+\((?:also\s+)?(?:called\s+|known as\s+)?$", after=r"^\s*\)"),
)

# "a Yookoohoo, named Reera": a common noun before the cue, not a name with an alias.
INDEFINITE_BEFORE_RE = re.compile(r"(?<![A-Za-z])(?:a|an|one|some|any|every)\s+$", re.IGNORECASE)

# What each relationship cue may connect, whatever a permissive ontology allows: "led Dorothy
# through a doorway" is not leadership, "stayed in the Throne Room" is not residence.
REL_KINDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "PARENT_OF": (frozenset({"person"}), frozenset({"person"})),
    "SIBLING_OF": (frozenset({"person"}), frozenset({"person"})),
    "SPOUSE_OF": (frozenset({"person"}), frozenset({"person"})),
    "LOYAL_TO": (frozenset({"person", "org"}), frozenset({"person", "org"})),
    "ENEMY_OF": (frozenset({"person", "org"}), frozenset({"person", "org"})),
    "MEMBER_OF": (frozenset({"person"}), frozenset({"org"})),
    "LEADS": (frozenset({"person"}), frozenset({"org", "place"})),
    "LIVES_IN": (frozenset({"person"}), frozenset({"place"})),
    "LOCATED_IN": (frozenset({"place"}), frozenset({"place"})),
    "POSSESSES": (frozenset({"person", "org"}), frozenset({"artifact"})),
    "PARTICIPATED_IN": (frozenset({"person", "org"}), frozenset({"event"})),
    "SPOKE_TO": (frozenset({"person"}), frozenset({"person"})),
    "MENTOR_OF": (frozenset({"person"}), frozenset({"person"})),
    "ALLY_OF": (frozenset({"person", "org"}), frozenset({"person", "org"})),
    "KILLED": (frozenset({"person"}), frozenset({"person"})),
    "CREATED": (frozenset({"person"}), frozenset({"artifact"})),
}


# What proposal-only relationship types mean, for the proposal text.
PROPOSAL_TYPES: dict[str, tuple[str, str]] = {
    "MENTOR_OF": ("Source trained, taught or took as apprentice the target.", "person person"),
    "SPOKE_TO": ("Source addressed the target in dialogue.", "person person"),
    "ALLY_OF": ("Source and target are allies, friends or companions.", "person person"),
    "KILLED": ("Source killed or destroyed the target.", "person person"),
    "CREATED": ("Source made, forged or built the target artifact.", "person artifact"),
}

# Names other ontologies use for the same proposal-only type (so we emit edges, not proposals).
TYPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "MENTOR_OF": ("MENTOR_OF", "MENTORS", "TRAINED", "TEACHES", "TAUGHT", "TEACHER_OF"),
    "SPOKE_TO": ("SPOKE_TO", "SPEAKS_TO", "TALKED_TO", "TALKS_TO", "ADDRESSED", "CONVERSED_WITH"),
    "ALLY_OF": ("ALLY_OF", "ALLIED_WITH", "FRIEND_OF", "FRIENDS_WITH", "COMPANION_OF"),
    "KILLED": ("KILLED", "KILLS", "SLEW", "MURDERED"),
    "CREATED": ("CREATED", "MADE", "FORGED", "CREATOR_OF", "CREATED_BY_INVERSE"),
}

# Minimum cue count in one section before a missing type is proposed.
PROPOSAL_MIN_CUES: dict[str, int] = {
    "MENTOR_OF": 1,
    "SPOKE_TO": 3,
    "ALLY_OF": 2,
    "KILLED": 2,
    "CREATED": 2,
}

UNDIRECTED = frozenset({"SIBLING_OF", "SPOUSE_OF", "ENEMY_OF", "ALLY_OF"})

DESCRIPTIONS: dict[str, str] = {
    "PARENT_OF": "{s} is a parent of {t}.",
    "SIBLING_OF": "{s} and {t} are siblings.",
    "SPOUSE_OF": "{s} and {t} are married.",
    "LOYAL_TO": "{s} is loyal to {t}.",
    "ENEMY_OF": "{s} and {t} are enemies.",
    "MEMBER_OF": "{s} is a member of {t}.",
    "LEADS": "{s} leads {t}.",
    "LIVES_IN": "{s} lives in {t}.",
    "LOCATED_IN": "{s} lies in {t}.",
    "POSSESSES": "{s} possesses {t}.",
    "PARTICIPATED_IN": "{s} took part in {t}.",
    "SPOKE_TO": "{s} spoke to {t}.",
    "MENTOR_OF": "{s} trained {t}.",
    "ALLY_OF": "{s} and {t} are allies.",
    "KILLED": "{s} killed {t}.",
    "CREATED": "{s} made {t}.",
}

_APPOSITIVE_RE = re.compile(r"^,\s[^,;:\"“”()]{1,120}?,\s*(\S.*)$", re.DOTALL)


def gap_variants(gap: str) -> list[str]:
    """The gap itself, plus the gap with a leading appositive clause skipped."""
    out = [gap]
    m = _APPOSITIVE_RE.match(gap)
    if m:
        out.append(" " + m.group(1))
    return out


# --- Guards: a cue matched, but the sentence does not state the relation. ---

KIN_TYPES = frozenset({"PARENT_OF", "SIBLING_OF", "SPOUSE_OF"})
# "not", "never", "nor", "no longer", "didn't": in the gap, or in the clause before the first
# mention ("Nor does the king of A rule B", "It is not true that X married Y").
NEGATION_RE = re.compile(
    r"(?<![\w'’])(?:not|never|nor|neither|no|cannot)(?![\w'’])|n['’]t\b", re.IGNORECASE
)
# Where a clause starts, looking back from the first mention.
CLAUSE_BREAK_RE = re.compile(r"[,;:.!?\"“”()—]|\s--\s")
# The first mention is the object of a noun ("the king of A", "great-granddaughter of A", "the
# east edge of A"): it is not the clause's subject, and an appositive after it describes the
# head noun ("great-granddaughter of A, daughter of B" says nothing about A and B).
OF_OBJECT_RE = re.compile(r"\b[A-Za-z-]+\s+of\s+(?:the\s+)?$")
# A kin noun used as a likeness ("like a daughter to him", "as a son of the sea").
SIMILE_RE = re.compile(r"(?<![\w'’])(?:like|as)\s+(?:a|an|the|his|her|their)\s", re.IGNORECASE)
# "a true daughter of", "a son of": an indefinite kin noun, figurative unless the object is a
# person by other evidence.
INDEFINITE_KIN_RE = re.compile(
    r"(?<![\w'’])(?:a|an)\s+(?:[a-z-]+\s+)?"
    r"(?:daughter|son|child|heir|father|mother|parent|brother|sister|twin|sibling|"
    r"wife|husband|bride|widow)\s+(?:of|to)\s",
    re.IGNORECASE,
)


def negated(gap: str, clause_before: str) -> bool:
    """Whether the statement between two mentions is negated (in the gap or the clause before)."""
    return bool(NEGATION_RE.search(gap) or NEGATION_RE.search(clause_before))


def clause_before(text: str, sentence_start: int, lead: int) -> str:
    """The text from the start of the clause that holds the first mention up to it."""
    before = text[sentence_start:lead]
    breaks = list(CLAUSE_BREAK_RE.finditer(before))
    return before[breaks[-1].end() :] if breaks else before
