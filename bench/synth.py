"""Synthetic series, section texts and model answers at the guide's scale, deterministic.

The batch-extraction guide extracted three series: Harry Potter (7 sections, 1,562,150 tokens),
A Song of Ice and Fire (8 / 3,041,607) and The Wheel of Time (16 / 6,717,033), and its output was
about 15 % of its input. Ten times that is 310 sections, about 113 M input tokens and 17 M output
tokens. This module builds such a corpus: for each section a text of the same token size, and an
answer shaped like Claude's (entities with aliases, attributes and verbatim mentions;
relationships with verbatim evidence quotes), sized so its JSON is 15 % of the section's tokens.

Answers are realistic in the ways that cost time downstream: a recurring cast per series (so
resolution merges instances across sections), aliases and titles, most quotes verbatim but some
differing in whitespace or typographic quotes (normalized match), a few with one word changed
(fuzzy match) and about 1 % that do not occur at all (not found).
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GUIDE_SERIES = [
    # slug, title, sections, input tokens (the guide's cost table)
    ("harry_potter", "Harry Potter", 7, 1_562_150),
    ("asoiaf", "A Song of Ice and Fire", 8, 3_041_607),
    ("wheel_of_time", "The Wheel of Time", 16, 6_717_033),
]
OUTPUT_RATIO = 0.15
GENERATOR_VERSION = 1
"""Bump when the generated data changes (cached inputs under ``bench/_work`` are rebuilt)."""

_SYL = [
    "al",
    "an",
    "ar",
    "bel",
    "bran",
    "cal",
    "dar",
    "del",
    "dor",
    "el",
    "en",
    "fal",
    "gar",
    "gil",
    "hal",
    "is",
    "jor",
    "kel",
    "lan",
    "lor",
    "mar",
    "mel",
    "mor",
    "nar",
    "nel",
    "or",
    "per",
    "quin",
    "ral",
    "ren",
    "sar",
    "sel",
    "tor",
    "tal",
    "ul",
    "val",
    "ven",
    "wyn",
    "yr",
    "zan",
]
_TITLES = ["Lord", "Lady", "Ser", "Maester", "Captain", "Prince", "Princess", "Master"]
_EPITHETS = ["the Bold", "the Grey", "the Young", "the Elder", "Halfhand", "the Quiet", "Redcloak"]
_PLACE_KINDS = ["Keep", "Vale", "Hold", "Reach", "Ford", "Hollow", "Watch", "Harbor"]
_ORG_KINDS = ["Order of the", "Brotherhood of the", "Guild of the", "House of the", "Company of"]
_ORG_NOUNS = ["Ash", "Lantern", "Salt", "Thorn", "Raven", "Flame", "Tide", "Iron"]
_ARTIFACTS = ["Sword", "Crown", "Ring", "Horn", "Mirror", "Staff", "Cloak", "Chalice"]
_EVENTS = ["Battle of", "Siege of", "Burning of", "Fall of", "Council of"]
_FILLER_SUBJECTS = [
    "The wind",
    "A cold rain",
    "The old road",
    "Smoke",
    "The river",
    "Night",
    "A bell",
    "The crowd",
    "Dust",
    "The fire",
    "A rider",
    "The tower",
    "Silence",
    "The morning",
]
_FILLER_VERBS = [
    "drifted over",
    "settled upon",
    "crept across",
    "hung above",
    "ran beside",
    "fell across",
    "rose over",
    "wound through",
    "lingered near",
    "pressed against",
]
_FILLER_OBJECTS = [
    "the walls",
    "the hills",
    "the empty square",
    "the stables",
    "the harbor",
    "the long hall",
    "the market",
    "the bridge",
    "the gate",
    "the orchards",
    "the barracks",
    "the shore",
]
_FILLER_TAILS = [
    "and no one spoke of it",
    "as it had for a hundred years",
    "while the guards watched",
    "until the lamps were lit",
    "though few noticed",
    "and the dogs began to bark",
    "before the bells rang",
    "as the travelers slept",
]

# Relationship type → (source type, target type, sentence templates with {a} and {b}).
_REL_TEMPLATES: dict[str, tuple[str, str, list[str]]] = {
    "PARENT_OF": (
        "Character",
        "Character",
        [
            "{a} was the father of {b}, though few in the hall remembered it",
            "It was {a} who had raised {b} as a child in the north",
        ],
    ),
    "SIBLING_OF": (
        "Character",
        "Character",
        [
            "{a} and {b} had been born of the same mother",
            "{a} embraced {b}, the brother she had not seen in years",
        ],
    ),
    "SPOUSE_OF": (
        "Character",
        "Character",
        [
            "{a} had wed {b} in the spring before the war",
            "{a} took the hand of {b}, her husband of many years",
        ],
    ),
    "LOYAL_TO": (
        "Character",
        "Character",
        [
            "{a} knelt and swore fealty to {b} before the whole court",
            "{a} would follow {b} to the end of the world",
        ],
    ),
    "ENEMY_OF": (
        "Character",
        "Character",
        [
            "{a} had hated {b} since the day of the duel",
            "{a} drew steel against {b} once more",
        ],
    ),
    "MEMBER_OF": (
        "Character",
        "Organization",
        [
            "{a} had served in the {b} for eleven winters",
            "{a} wore the badge of the {b} upon his breast",
        ],
    ),
    "LEADS": (
        "Character",
        "Organization",
        [
            "{a} commanded the {b} from the high seat",
            "{a} was chosen to lead the {b} after the vote",
        ],
    ),
    "LIVES_IN": (
        "Character",
        "Location",
        [
            "{a} dwelt in {b} with her household",
            "{a} returned home to {b} at dusk",
        ],
    ),
    "LOCATED_IN": (
        "Location",
        "Location",
        [
            "{a} lay within the borders of {b}",
            "{a} stood on the road that crossed {b}",
        ],
    ),
    "POSSESSES": (
        "Character",
        "Artifact",
        [
            "{a} carried the {b} wrapped in oilcloth",
            "{a} held the {b} up so that all could see it",
        ],
    ),
    "PARTICIPATED_IN": (
        "Character",
        "Event",
        [
            "{a} had fought at the {b} and survived it",
            "{a} spoke often of the {b} and what was lost there",
        ],
    ),
}


@dataclass
class CastMember:
    """One recurring entity of a synthetic series."""

    id: str
    type: str
    name: str
    aliases: list[str]
    attributes: list[tuple[str, str]]


def _word(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYL) for _ in range(parts)).capitalize()


def make_cast(slug: str, size: int = 700) -> list[CastMember]:
    """A series' recurring cast: about 57 % characters, the rest places, groups, things, events."""
    rng = random.Random(f"cast|{slug}")
    cast: list[CastMember] = []
    used: set[str] = set()

    def unique(make: Any) -> str:
        while True:
            name = str(make())
            if name not in used:
                used.add(name)
                return name

    n_char = size * 57 // 100
    n_loc = size * 20 // 100
    n_org = size * 9 // 100
    n_art = size * 8 // 100
    n_evt = size - n_char - n_loc - n_org - n_art
    for _ in range(n_char):
        first, last = _word(rng, 2), _word(rng, 2)
        name = unique(lambda f=first, la=last: f"{f} {la}")
        title = rng.choice(_TITLES)
        aliases = [name.split()[0], f"{title} {name.split()[1]}"]
        if rng.random() < 0.3:
            aliases.append(f"{name.split()[0]} {rng.choice(_EPITHETS)}")
        attrs = [("title", title)]
        if rng.random() < 0.5:
            attrs.append(("occupation", rng.choice(["knight", "smith", "scholar", "sailor"])))
        cast.append(CastMember(_slugish(name), "Character", name, aliases, attrs))
    for _ in range(n_loc):
        name = unique(lambda: f"{_word(rng, 2)} {rng.choice(_PLACE_KINDS)}")
        cast.append(CastMember(_slugish(name), "Location", name, [name.split()[0]], []))
    for _ in range(n_org):
        name = unique(lambda: f"{rng.choice(_ORG_KINDS)} {rng.choice(_ORG_NOUNS)} {_word(rng, 1)}")
        cast.append(CastMember(_slugish(name), "Organization", name, [], []))
    for _ in range(n_art):
        name = unique(lambda: f"{rng.choice(_ARTIFACTS)} of {_word(rng, 2)}")
        cast.append(CastMember(_slugish(name), "Artifact", name, [], []))
    for _ in range(n_evt):
        name = unique(lambda: f"{rng.choice(_EVENTS)} {_word(rng, 2)}")
        cast.append(CastMember(_slugish(name), "Event", name, [], []))
    return cast


def _slugish(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def _filler(rng: random.Random) -> str:
    return (
        f"{rng.choice(_FILLER_SUBJECTS)} {rng.choice(_FILLER_VERBS)} "
        f"{rng.choice(_FILLER_OBJECTS)}, {rng.choice(_FILLER_TAILS)}."
    )


def _tokens(text: str) -> int:
    """The project's offline token estimate (the same one sectioning and pre-flight use)."""
    from fantasy_kg.domain.text.tokens import estimate_tokens

    return estimate_tokens(text)


@dataclass
class SectionPlan:
    """One synthetic section: where it goes, how big its text and answer should be."""

    slug: str
    title: str
    number: int
    input_tokens: int

    @property
    def stem(self) -> str:
        """``<slug>_section_NN`` (the custom_id and the file stem)."""
        return f"{self.slug}_section_{self.number:02d}"

    @property
    def output_tokens(self) -> int:
        """15 % of the input (the guide's ratio)."""
        return int(self.input_tokens * OUTPUT_RATIO)


def plan_sections(scale: int, fraction: float = 1.0) -> list[SectionPlan]:
    """Sections for ``scale`` times the guide's three series (``fraction`` keeps the first part).

    Every section of a series has that series' average size; at scale 10 there are 70, 80 and
    160 sections. ``fraction < 1`` keeps the same share of each series (at least one section).
    """
    plans: list[SectionPlan] = []
    for slug, title, sections, tokens in GUIDE_SERIES:
        total = sections * scale
        keep = max(1, round(total * fraction))
        per = tokens // sections
        plans.extend(SectionPlan(slug, title, n, per) for n in range(1, keep + 1))
    return plans


@dataclass
class Fact:
    """A relationship planted in a section text, with the quotes that state it."""

    type: str
    source: CastMember
    target: CastMember
    quotes: list[str]


def _answer_items(
    plan: SectionPlan, cast: list[CastMember], rng: random.Random
) -> tuple[dict[str, Any], list[Fact], list[str]]:
    """Entities and relationships for one section, grown until the JSON has its token share."""
    by_type: dict[str, list[CastMember]] = {}
    for member in cast:
        by_type.setdefault(member.type, []).append(member)
    target_tokens = plan.output_tokens
    entities: dict[str, dict[str, Any]] = {}
    rels: list[dict[str, Any]] = []
    facts: list[Fact] = []
    mention_lines: list[str] = []
    used_tokens = 60  # the envelope {"entities": [...], ...}
    rel_types = list(_REL_TEMPLATES)

    def add_entity(member: CastMember) -> None:
        nonlocal used_tokens
        if member.id in entities:
            return
        k = rng.randint(1, len(member.aliases) or 1)
        surfaces = [member.name, *member.aliases[:k]] if member.aliases else [member.name]
        item = {
            "id": member.id,
            "type": member.type,
            "name": member.name,
            "aliases": list(member.aliases),
            "attributes": [{"name": n, "value": v} for n, v in member.attributes],
            "mentions": surfaces,
            "confidence": round(rng.uniform(0.7, 1.0), 2),
        }
        entities[member.id] = item
        used_tokens += _tokens(json.dumps(item))
        for s in surfaces:
            mention_lines.append(f"{s} {rng.choice(_FILLER_VERBS)} {rng.choice(_FILLER_OBJECTS)}.")

    while used_tokens < target_tokens:
        rtype = rng.choice(rel_types)
        src_type, dst_type, templates = _REL_TEMPLATES[rtype]
        source = rng.choice(by_type[src_type])
        target = rng.choice(by_type[dst_type])
        if source.id == target.id:
            continue
        add_entity(source)
        add_entity(target)
        quotes = []
        for template in rng.sample(templates, k=rng.choice([1, 2])):
            a = source.name if rng.random() < 0.7 or not source.aliases else source.aliases[0]
            quotes.append(template.format(a=a, b=target.name))
        fact = Fact(rtype, source, target, quotes)
        facts.append(fact)
        rel = {
            "source": source.id,
            "target": target.id,
            "type": rtype,
            "description": f"{source.name} {rtype.lower().replace('_', ' ')} {target.name}.",
            "evidence": quotes,
            "confidence": round(rng.uniform(0.6, 1.0), 2),
        }
        used_tokens += _tokens(json.dumps(rel))
        rels.append(rel)
    answer = {"entities": list(entities.values()), "relationships": rels, "schema_proposals": []}
    return answer, facts, mention_lines


def _vary_quote(quote: str, rng: random.Random) -> tuple[str, str]:
    """How a quote appears in the text vs in the answer: (text form, answer form).

    93 % verbatim; 4 % the text breaks the line inside the quote (normalized match); 2 % the
    answer changes one word (fuzzy match); 1 % the answer quotes something the text lacks.
    """
    roll = rng.random()
    if roll < 0.93:
        return quote, quote
    if roll < 0.97:
        words = quote.split(" ")
        cut = len(words) // 2
        return " ".join(words[:cut]) + "\n" + " ".join(words[cut:]), quote
    if roll < 0.99:
        words = quote.split(" ")
        i = rng.randrange(len(words))
        changed = [*words[:i], "swiftly", *words[i + 1 :]]
        return quote, " ".join(changed)
    return quote, quote + " and then he wept beneath the silent stars of the far west"


def build_section(plan: SectionPlan, cast: list[CastMember]) -> tuple[str, dict[str, Any]]:
    """The text of one section and its wire-format answer (deterministic per section)."""
    rng = random.Random(f"section|{plan.stem}")
    answer, facts, mention_lines = _answer_items(plan, cast, rng)
    planted: list[str] = list(mention_lines)
    fixed_quotes: dict[int, list[str]] = {}
    for idx, fact in enumerate(facts):
        out_quotes = []
        for quote in fact.quotes:
            text_form, answer_form = _vary_quote(quote, rng)
            planted.append(text_form + ".")
            out_quotes.append(answer_form)
        fixed_quotes[idx] = out_quotes
    for idx, rel in enumerate(answer["relationships"]):
        rel["evidence"] = fixed_quotes[idx]
    rng.shuffle(planted)

    # Fill with prose around the planted sentences until the text reaches its token size.
    target_chars = int(plan.input_tokens * 4.05)  # the estimate gives ~0.247 tokens per char here
    paragraphs: list[str] = []
    chars = 0
    chapter = 1
    pi = 0
    while chars < target_chars or pi < len(planted):
        if len(paragraphs) % 60 == 0:
            heading = f"CHAPTER {chapter}"
            paragraphs.append(heading)
            chapter += 1
        sentences = [_filler(rng) for _ in range(rng.randint(3, 7))]
        for _ in range(rng.randint(0, 2)):
            if pi < len(planted):
                sentences.insert(rng.randrange(len(sentences) + 1), planted[pi])
                pi += 1
        para = " ".join(sentences)
        paragraphs.append(para)
        chars += len(para) + 2
    return "\n\n".join(paragraphs) + "\n", answer


def write_corpus(plans: list[SectionPlan], sections_dir: Path, answers_dir: Path) -> dict[str, Any]:
    """Write section files (``.txt`` + ``.meta.json``) and wire answers; return totals."""
    from fantasy_kg.domain.sections import BookSpan, SectionMeta, text_sha256, write_section
    from fantasy_kg.domain.text.tokens import estimate_method

    sections_dir.mkdir(parents=True, exist_ok=True)
    answers_dir.mkdir(parents=True, exist_ok=True)
    casts: dict[str, list[CastMember]] = {}
    totals = {
        "sections": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "text_bytes": 0,
        "answer_bytes": 0,
        "entity_instances": 0,
        "relationship_instances": 0,
        "mentions": 0,
        "evidence_quotes": 0,
        "aliases": 0,
        "attributes": 0,
    }
    for plan in plans:
        cast = casts.setdefault(plan.slug, make_cast(plan.slug))
        text, answer = build_section(plan, cast)
        book_file = f"{plan.number:02d}_{plan.slug}_book_{plan.number}.txt"
        tokens = _tokens(text)
        meta = SectionMeta(
            series=plan.slug,
            series_name=plan.title,
            section=plan.number,
            books=[f"{plan.title}, book {plan.number}"],
            book_files=[book_file],
            spans=[BookSpan(book=book_file, title=plan.title, start=0, end=len(text))],
            input_tokens=tokens,
            token_count_method=estimate_method(),
            sha256=text_sha256(text),
            chars=len(text),
        )
        write_section(sections_dir, plan.slug, text, meta)
        blob = json.dumps(answer, ensure_ascii=False)
        (answers_dir / f"{plan.stem}.json").write_text(blob, encoding="utf-8")
        totals["sections"] += 1
        totals["input_tokens"] += tokens
        totals["output_tokens"] += _tokens(blob)
        totals["text_bytes"] += len(text.encode("utf-8"))
        totals["answer_bytes"] += len(blob.encode("utf-8"))
        totals["entity_instances"] += len(answer["entities"])
        totals["relationship_instances"] += len(answer["relationships"])
        totals["mentions"] += sum(len(e["mentions"]) for e in answer["entities"])
        totals["aliases"] += sum(len(e["aliases"]) for e in answer["entities"])
        totals["attributes"] += sum(len(e["attributes"]) for e in answer["entities"])
        totals["evidence_quotes"] += sum(len(r["evidence"]) for r in answer["relationships"])
    totals["rows"] = sum(
        totals[k]
        for k in (
            "entity_instances",
            "relationship_instances",
            "mentions",
            "evidence_quotes",
            "aliases",
            "attributes",
        )
    )
    return totals
