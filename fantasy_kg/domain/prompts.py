"""The extraction prompt: the guide's instructions, split so the series-wide part can be cached.

Why it works this way: docs/architecture.md, "Text, sections and answer sizing".
"""

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache

from fantasy_kg.domain.schemas import Ontology, schema_fingerprint

PROMPT_VERSION = "extract-v1"

SECTION_MARKER = "\n\n=== SECTION ===\n"
_GUIDE_TEXT_MARKER = "TEXT CONTENT:\n"

INSTRUCTIONS_TEMPLATE = """\
You are an expert knowledge graph extractor for the "{series_name}" series.
Your goal is to extract a comprehensive list of entities and relationships from the provided text.

STRICT ADHERENCE & ADAPTIVE EVOLUTION:
1. Use the Ontology Schema below to categorize entities and relationships.
2. If a significant entity or relationship clearly does NOT fit the existing definitions, do not
   force it into a wrong category and do not ignore it: propose a schema update in
   `schema_proposals` ("new_entity_type", "new_relationship_type", "new_attribute").
3. Use the Canonical Renaming Rules to normalize entity ids and names; list every other name the
   text uses as an alias.

TASK:
1. Identify all significant entities (characters, locations, organizations, artifacts, events).
2. Extract the attributes the text states for each entity.
3. Identify all relationships between these entities that the text states.
4. Give evidence for every relationship: quotes copied VERBATIM from the text.
5. Assign a confidence score (0.0-1.0) to each entity and relationship.
6. Identify gaps in the ontology and propose updates in `schema_proposals`.

OUTPUT FORMAT:
Return one JSON object that matches the required schema (entities, relationships,
schema_proposals). Ids are snake_case; relationship endpoints must be ids of extracted entities."""

SECTION_TEMPLATE = """\
INPUT CONTEXT:
This text is from: {book_names}
Section ID: {section_id}

TEXT CONTENT:
{text}"""


@dataclass(frozen=True)
class PromptParts:
    """A prompt split at the cache boundary."""

    prefix: str
    section: str

    def render(self) -> str:
        """The whole prompt as one string (the guide's ``prompt`` argument)."""
        return f"{self.prefix}{SECTION_MARKER}{self.section}"


@dataclass(frozen=True)
class ParsedPrompt:
    """What :func:`parse_prompt` recovers from a rendered prompt."""

    series_name: str
    ontology: Ontology | None
    book_names: list[str]
    section_id: str
    text: str


def render_prefix(series_name: str, ontology: Ontology) -> str:
    """The cacheable, series-wide part: instructions, ontology and canonical renaming rules.

    Memoized on the ontology's content: every section of a series shares this prefix, and
    rendering it (indented JSON, pure-Python encoder) costs about 4 ms, which would otherwise be
    paid once per request (400 s for 100,000 requests). The key is the ontology's JSON, so an
    ontology edited in place is never served a stale prefix.
    """
    return _render_prefix(series_name, ontology.model_dump_json())


@lru_cache(maxsize=64)
def _render_prefix(series_name: str, ontology_json: str) -> str:
    ontology = Ontology.model_validate_json(ontology_json)
    onto = ontology.model_dump(mode="json", exclude={"canonical_rules", "do_not_merge"})
    rules = [r.model_dump(mode="json") for r in ontology.canonical_rules]
    keep_apart = [r.model_dump(mode="json") for r in ontology.do_not_merge]
    return (
        INSTRUCTIONS_TEMPLATE.format(series_name=series_name)
        + "\n\nONTOLOGY:\n"
        + json.dumps(onto, indent=1, ensure_ascii=False)
        + "\n\nCANONICAL RENAMING RULES:\n"
        + json.dumps(rules, indent=1, ensure_ascii=False)
        + "\n\nDIFFERENT ENTITIES THAT SHARE NAMES (never merge):\n"
        + json.dumps(keep_apart, indent=1, ensure_ascii=False)
    )


def build_prompt(
    *, series_name: str, ontology: Ontology, book_names: list[str], section_id: str, text: str
) -> PromptParts:
    """Build the extraction prompt for one section."""
    section = SECTION_TEMPLATE.format(
        book_names=", ".join(book_names), section_id=section_id, text=text
    )
    return PromptParts(prefix=render_prefix(series_name, ontology), section=section)


def build_prompt_versioned(
    *,
    series_name: str,
    ontology: Ontology,
    book_names: list[str],
    section_id: str,
    text: str,
    model: str,
) -> tuple[PromptParts, str]:
    """:func:`build_prompt` and :func:`prompt_version` together, serializing the ontology once.

    Both memos are keyed on the ontology's JSON; a request builder needs both for every section,
    and producing that JSON twice was a fifth of request building at 100,000 requests.
    """
    ontology_json = ontology.model_dump_json()
    section = SECTION_TEMPLATE.format(
        book_names=", ".join(book_names), section_id=section_id, text=text
    )
    parts = PromptParts(prefix=_render_prefix(series_name, ontology_json), section=section)
    return parts, _prompt_version(ontology_json, model)


def split_prompt(prompt: str) -> PromptParts | None:
    """Find the cache boundary in a single-string prompt, or ``None`` if there is none.

    Our own prompts use :data:`SECTION_MARKER`; prompts written the guide's way are split before
    their ``TEXT CONTENT:`` line so at least the instructions and ontology can be cached.
    """
    if SECTION_MARKER in prompt:
        prefix, section = prompt.split(SECTION_MARKER, 1)
        return PromptParts(prefix=prefix, section=section)
    idx = prompt.rfind(_GUIDE_TEXT_MARKER)
    if idx > 0:
        return PromptParts(prefix=prompt[:idx].rstrip("\n"), section=prompt[idx:])
    return None


_SERIES_RE = re.compile(r'knowledge graph extractor for the "(?P<name>[^"\n]*)" series')
_BOOKS_RE = re.compile(r"^This text is from: (?P<books>.*)$", re.MULTILINE)
_SECTION_RE = re.compile(r"^Section ID: (?P<sid>.*)$", re.MULTILINE)


def parse_prompt(prompt: str) -> ParsedPrompt:
    """Recover series name, ontology, books, section id and text from a rendered prompt.

    Tolerant by design: a prompt without an ontology block yields ``ontology=None``, and a prompt
    without a ``TEXT CONTENT:`` line is taken as all text.
    """
    series = _SERIES_RE.search(prompt)
    ontology: Ontology | None = None
    start = prompt.find("ONTOLOGY:\n")
    if start >= 0:
        decoder = json.JSONDecoder()
        try:
            raw, end = decoder.raw_decode(prompt, start + len("ONTOLOGY:\n"))
            rules_at = prompt.find("CANONICAL RENAMING RULES:\n", end)
            if rules_at >= 0:
                raw["canonical_rules"], end2 = decoder.raw_decode(
                    prompt, rules_at + len("CANONICAL RENAMING RULES:\n")
                )
                apart_at = prompt.find("(never merge):\n", end2)
                if apart_at >= 0:
                    raw["do_not_merge"], _ = decoder.raw_decode(
                        prompt, apart_at + len("(never merge):\n")
                    )
            ontology = Ontology.model_validate(raw)
        except (ValueError, TypeError):
            ontology = None
    text_at = prompt.rfind(_GUIDE_TEXT_MARKER)
    text = prompt[text_at + len(_GUIDE_TEXT_MARKER) :] if text_at >= 0 else prompt
    books = _BOOKS_RE.search(prompt)
    sid = _SECTION_RE.search(prompt)
    return ParsedPrompt(
        series_name=series.group("name") if series else "",
        ontology=ontology,
        book_names=[b.strip() for b in books.group("books").split(",")] if books else [],
        section_id=sid.group("sid").strip() if sid else "",
        text=text,
    )


def prompt_version(ontology: Ontology, model: str) -> str:
    """Hash of everything that changes the answer besides the text: template, ontology, schema.

    Together with a section's sha256 it decides whether a section must be extracted again.
    Memoized on the ontology's content like :func:`render_prefix` (it is computed per request).
    """
    return _prompt_version(ontology.model_dump_json(), model)


@lru_cache(maxsize=256)
def _prompt_version(ontology_json: str, model: str) -> str:
    ontology = Ontology.model_validate_json(ontology_json)
    blob = "|".join(
        [
            PROMPT_VERSION,
            INSTRUCTIONS_TEMPLATE,
            SECTION_TEMPLATE,
            ontology.fingerprint(),
            schema_fingerprint(),
            model,
        ]
    )
    return f"{PROMPT_VERSION}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"
