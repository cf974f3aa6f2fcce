"""The local backend's "model": answer an Anthropic Messages request body deterministically.

The local HTTP server hands each request's ``params`` here and wraps the answer in a Message. An
extraction request (one whose ``output_config.format.schema`` is the extraction wire schema) gets
JSON valid against :class:`~fantasy_kg.domain.schemas.WireExtractionResult`; anything else gets a
short plain-text reply that says what this backend is, so a stray prompt is not mistaken for
Claude's answer.
"""

import json
from typing import Any

from fantasy_kg.domain.baseline.extractor import extract
from fantasy_kg.domain.baseline.tagging import Tagger
from fantasy_kg.domain.prompts import ParsedPrompt, parse_prompt
from fantasy_kg.domain.schemas import WireExtractionResult

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


def extraction_request(params: dict[str, Any]) -> ParsedPrompt | None:
    """The parsed prompt of an extraction request, or ``None`` for any other request.

    An extraction request has the extraction schema as its ``output_config.format.schema``, or
    (guide style, no schema) an ontology block and a ``TEXT CONTENT:`` line in its prompt.
    """
    prompt = prompt_text(params)
    schema = requested_schema(params)
    parsed = parse_prompt(prompt)
    wants_json = is_extraction_schema(schema) or (
        schema is None and parsed.ontology is not None and "TEXT CONTENT:" in prompt
    )
    return parsed if wants_json else None


def baseline_extraction(parsed: ParsedPrompt, tagger: Tagger | None = None) -> WireExtractionResult:
    """The baseline extractor's whole answer for a parsed extraction prompt.

    Args:
        parsed: The parsed extraction prompt.
        tagger: The learned entity tagger the integration layer injects (rules alone if None).
    """
    return extract(
        parsed.text,
        parsed.ontology,
        file_name=", ".join(parsed.book_names),
        section_id=parsed.section_id,
        tagger=tagger,
    )


def respond(params: dict[str, Any], tagger: Tagger | None = None) -> dict[str, Any]:
    """Answer one Messages request body with the baseline's whole answer.

    The answer is never shortened to fit ``max_tokens``: like Claude, the local backend writes
    its whole answer and the server cuts it where the cap falls (``stop_reason: "max_tokens"``),
    so the client's split path runs exactly as it would against Claude. Dropping entities here
    instead would lose them silently.

    Args:
        params: The request body (``system``, ``messages``, ``output_config``, ...).
        tagger: The learned entity tagger (see :func:`baseline_extraction`).

    Returns:
        ``{"text": ..., "stop_reason": "end_turn"}``; usage and the cut are the server's business.
    """
    parsed = extraction_request(params)
    if parsed is None:
        return {"text": BASELINE_NOTICE, "stop_reason": "end_turn"}
    return {"text": render(baseline_extraction(parsed, tagger)), "stop_reason": "end_turn"}


def render(result: WireExtractionResult) -> str:
    """The answer text: compact JSON (what the output tokens are counted on)."""
    return json.dumps(result.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))
