"""A responder that answers at the size Claude would: the Claude-like loopback mode.

Why it works this way: docs/architecture.md, "The local backend".
"""

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from fantasy_kg.domain.baseline.respond import baseline_extraction, extraction_request, render
from fantasy_kg.domain.catalog import ModelInfo
from fantasy_kg.domain.errors import ConfigError, UserError
from fantasy_kg.domain.estimate import DEFAULT_OUTPUT_RATIO
from fantasy_kg.domain.paths import slugify
from fantasy_kg.domain.prompts import ParsedPrompt
from fantasy_kg.domain.schemas import WireAttribute, WireEntity, WireExtractionResult
from fantasy_kg.local_api.engine import ResponderAnswer, estimate_tokens, resolve_model
from fantasy_kg.nlp.tagger import shared_tagger

CLAUDE_LIKE_NOTICE = (
    "This is the fantasy_kg local backend in Claude-like mode: a sizing emulation, not Claude. "
    "It only answers knowledge-graph extraction requests."
)

MAX_OUTPUT_RATIO = 10.0

_SENTENCE = re.compile(r"[A-Z][^.!?]{20,400}[.!?]")
_LEAD_WORDS = re.compile(r"\S+(?:[ \t]+\S+){0,4}")
_PADDING_CONFIDENCE = 0.5


def check_output_ratio(ratio: float) -> float:
    """Return ``ratio`` if it is a usable output ratio (0 < ratio <= 10).

    Raises:
        ConfigError: one line naming the bad value.
    """
    if not 0.0 < ratio <= MAX_OUTPUT_RATIO:
        raise ConfigError(
            f"Claude-like output ratio {ratio} is outside (0, {MAX_OUTPUT_RATIO:g}]; try 0.15"
        )
    return ratio


@dataclass(frozen=True)
class ClaudeLikeResponder:
    """Answers extraction requests with about ``output_ratio`` x the section's tokens.

    Attributes:
        output_ratio: Answer tokens (thinking excluded) per token of section text; 0.15 is the
            guide's figure.
    """

    output_ratio: float = DEFAULT_OUTPUT_RATIO

    def __post_init__(self) -> None:
        check_output_ratio(self.output_ratio)

    def __call__(self, params: dict[str, Any]) -> ResponderAnswer:
        """Answer one (validated) Messages request body."""
        parsed = extraction_request(params)
        if parsed is None:
            return ResponderAnswer(text=CLAUDE_LIKE_NOTICE)
        model = resolve_model(params.get("model"))
        target = target_answer_tokens(parsed.text, model, self.output_ratio)
        result = trim_to_tokens(baseline_extraction(parsed, shared_tagger()), target, model)
        result = pad_to_tokens(result, parsed, target, model)
        return ResponderAnswer(text=render(result))


def target_answer_tokens(section_text: str, model: ModelInfo, output_ratio: float) -> int:
    """Answer size (thinking excluded) for a section: ``ceil(ratio x section tokens)``.

    Section tokens are counted the way the server counts usage (the project's estimate with the
    model's tokenizer factor), which is also how sectioning records ``input_tokens``.
    """
    return math.ceil(output_ratio * estimate_tokens(section_text, model))


def _padding_type(parsed: ParsedPrompt) -> str:
    types = [t.name for t in parsed.ontology.entity_types] if parsed.ontology else []
    if not types or "Event" in types:
        return "Event"
    return types[0]


def _sentences(text: str) -> list[str]:
    found = [m.group(0) for m in _SENTENCE.finditer(text)]
    if found:
        return found
    stripped = text.strip()
    return [stripped[:400]] if stripped else []


def trim_to_tokens(
    result: WireExtractionResult, target: int, model: ModelInfo
) -> WireExtractionResult:
    """The most salient entities of ``result`` (and their relationships) within ``target`` tokens.

    Salience as a model with a limited budget would write: endpoints of relationships first,
    then confidence, then how many surface forms and aliases the text uses. Output order (first
    mention) is kept. A result that fits comes back unchanged.
    """

    def fits(candidate: WireExtractionResult) -> bool:
        return estimate_tokens(render(candidate), model) <= target

    if fits(result):
        return result
    linked = {r.source for r in result.relationships} | {r.target for r in result.relationships}
    ranked = sorted(
        range(len(result.entities)),
        key=lambda i: (
            result.entities[i].id not in linked,
            -result.entities[i].confidence,
            -(len(result.entities[i].mentions) + len(result.entities[i].aliases)),
            i,
        ),
    )

    def keep(k: int) -> WireExtractionResult:
        chosen = set(ranked[:k])
        entities = [e for i, e in enumerate(result.entities) if i in chosen]
        ids = {e.id for e in entities}
        rels = [r for r in result.relationships if r.source in ids and r.target in ids]
        return WireExtractionResult(
            entities=entities, relationships=rels, schema_proposals=result.schema_proposals
        )

    lo, hi = 0, len(ranked)  # invariant: keep(lo) fits (or lo == 0), keep(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(keep(mid)):
            lo = mid
        else:
            hi = mid
    return keep(lo)


def pad_to_tokens(
    result: WireExtractionResult, parsed: ParsedPrompt, target: int, model: ModelInfo
) -> WireExtractionResult:
    """``result`` plus synthetic passage entities until its JSON holds ``target`` tokens.

    Never removes anything; a result already at or above ``target`` comes back unchanged. Each
    added entity's cost is counted as it is added (its compact JSON plus the separating comma),
    and the last one only when it brings the total closer to ``target``: the padded answer lands
    within half an entity (about 70 tokens) of the target.
    """
    tokens = estimate_tokens(render(result), model)
    sentences = _sentences(parsed.text)
    if tokens >= target or not sentences:
        return result
    kind = _padding_type(parsed)
    try:
        section = slugify(parsed.section_id)
    except UserError:  # no section id in the prompt
        section = "section"
    taken = {e.id for e in result.entities}
    extra: list[WireEntity] = []
    n = 0
    while tokens < target:
        sentence = sentences[n % len(sentences)]
        n += 1
        lead = _LEAD_WORDS.match(sentence)
        mention = lead.group(0) if lead else sentence
        entity_id = f"passage_{section}_{n:05d}"
        if entity_id in taken:
            continue
        entity = WireEntity(
            id=entity_id,
            type=kind,
            name=f"Passage {n}: {mention}",
            aliases=[],
            attributes=[WireAttribute(name="passage", value=sentence)],
            mentions=[mention],
            confidence=_PADDING_CONFIDENCE,
        )
        dumped = json.dumps(
            entity.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":")
        )
        cost = estimate_tokens(dumped, model) + 1
        if tokens + cost - target > target - tokens:
            break  # adding it would land further from the target than stopping here
        tokens += cost
        extra.append(entity)
    return WireExtractionResult(
        entities=[*result.entities, *extra],
        relationships=result.relationships,
        schema_proposals=result.schema_proposals,
    )
