"""The local backend's "model": answer an Anthropic Messages request body deterministically.

The local HTTP server hands each request's ``params`` here and wraps the answer in a Message. An
extraction request (one whose ``output_config.format.schema`` is the extraction wire schema) gets
JSON valid against :class:`~fantasy_kg.domain.schemas.WireExtractionResult`; anything else gets a
short plain-text reply that says what this backend is, so a stray prompt is not mistaken for
Claude's answer.
"""

import json
from collections.abc import Callable
from typing import Any

from fantasy_kg.domain.baseline.extractor import extract
from fantasy_kg.domain.catalog import get_model
from fantasy_kg.domain.errors import ConfigError
from fantasy_kg.domain.prompts import parse_prompt
from fantasy_kg.domain.schemas import WireExtractionResult
from fantasy_kg.domain.text.tokens import estimate_tokens

# Keep answers this far under max_tokens: the server counts with the same estimate, so a small
# margin is enough, and a cut answer would be worse than a shorter one.
OUTPUT_MARGIN = 0.95

BASELINE_NOTICE = (
    "This is the fantasy_kg local backend: a deterministic rule-based baseline, not Claude. "
    "It only answers knowledge-graph extraction requests (an extraction prompt with the "
    "extraction output schema)."
)


def _text_of(content: Any) -> str:
    """Text of a ``system`` value or message ``content``: a string or a list of blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            block.get("text", "")
            for block in content
            if isinstance(block, dict) and block.get("type", "text") == "text"
        ]
        return "\n\n".join(p for p in parts if isinstance(p, str) and p)
    return ""


def prompt_text(params: dict[str, Any]) -> str:
    """The whole prompt as the model would read it: system text, then the user turns."""
    parts = [_text_of(params.get("system"))]
    for message in params.get("messages") or []:
        if isinstance(message, dict) and message.get("role", "user") == "user":
            parts.append(_text_of(message.get("content")))
    return "\n\n".join(p for p in parts if p)


def is_extraction_schema(schema: Any) -> bool:
    """Whether a JSON schema asks for the extraction answer (entities and relationships)."""
    if not isinstance(schema, dict):
        return False
    props = schema.get("properties")
    return isinstance(props, dict) and "entities" in props and "relationships" in props


def requested_schema(params: dict[str, Any]) -> Any:
    """``output_config.format.schema`` of a request, or ``None``."""
    config = params.get("output_config")
    if not isinstance(config, dict):
        return None
    fmt = config.get("format")
    return fmt.get("schema") if isinstance(fmt, dict) else None


def respond(params: dict[str, Any]) -> dict[str, Any]:
    """Answer one Messages request body.

    Args:
        params: The request body (``system``, ``messages``, ``output_config``, ...).

    Returns:
        ``{"text": ..., "stop_reason": "end_turn"}``; usage is the server's business.
    """
    prompt = prompt_text(params)
    schema = requested_schema(params)
    parsed = parse_prompt(prompt)
    wants_json = is_extraction_schema(schema) or (
        schema is None and parsed.ontology is not None and "TEXT CONTENT:" in prompt
    )
    if not wants_json:
        return {"text": BASELINE_NOTICE, "stop_reason": "end_turn"}
    result = extract(
        parsed.text,
        parsed.ontology,
        file_name=", ".join(parsed.book_names),
        section_id=parsed.section_id,
    )
    max_tokens = params.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0:
        factor = _tokenizer_factor(params.get("model"))
        budget = int(max_tokens * OUTPUT_MARGIN)
        result = fit_to_budget(result, lambda t: estimate_tokens(t, factor) <= budget)
    return {"text": render(result), "stop_reason": "end_turn"}


def render(result: WireExtractionResult) -> str:
    """The answer text: compact JSON (what the output tokens are counted on)."""
    return json.dumps(result.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))


def _tokenizer_factor(model: Any) -> float:
    if not isinstance(model, str):
        return 1.0
    try:
        return get_model(model).tokenizer_factor
    except ConfigError:
        return 1.0


def fit_to_budget(
    result: WireExtractionResult, fits: Callable[[str], bool]
) -> WireExtractionResult:
    """Keep the most salient entities (and the relationships among them) that fit the budget.

    A model with a limited output budget writes down the main cast first; a huge section (a
    whole book or more) would otherwise produce an answer longer than ``max_tokens`` and be cut
    mid-JSON. Salience: endpoints of relationships first, then confidence, then how many
    surface forms and aliases the text uses. Output order (first mention) is preserved.
    """
    if fits(render(result)):
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
        if fits(render(keep(mid))):
            lo = mid
        else:
            hi = mid
    return keep(lo)
