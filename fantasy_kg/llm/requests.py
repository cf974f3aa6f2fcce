"""Batch requests: the guide's request builder and the section request builder.

Requests are plain dicts in the API's shape (``{"custom_id": ..., "params": {...}}``) so code
written against the guide keeps working; :class:`PreparedRequest` wraps one with what the rest
of the pipeline needs to know about it. This module also re-exports the request types
(:mod:`~fantasy_kg.llm.request_types`) and pre-flight (:mod:`~fantasy_kg.llm.preflight`), so
``fantasy_kg.llm.requests`` stays the one import for request code.
"""

import json
import logging
import re
from functools import cache
from typing import Any, Literal

import anthropic
from pydantic import BaseModel

from fantasy_kg.domain.prompts import (
    SECTION_MARKER,
    PromptParts,
    build_prompt_versioned,
    split_prompt,
)
from fantasy_kg.domain.schemas import ExtractionResult, Ontology, WireExtractionResult
from fantasy_kg.domain.sections import SectionFile, text_sha256
from fantasy_kg.llm.preflight import (
    MAX_OPTIONAL_PARAMS,
    MAX_UNION_PARAMS,
    MIN_EXPECTED_OUTPUT,
    PreflightReport,
    RequestEstimate,
    SchemaComplexity,
    estimate_cost,
    preflight,
    schema_complexity,
    split_into_batches,
)
from fantasy_kg.llm.prompt_tokens import estimate_tokens
from fantasy_kg.llm.request_size import request_bytes
from fantasy_kg.llm.request_types import (
    API_VERSION,
    LEGACY_API_VERSION,
    MAX_BATCH_BYTES,
    MAX_CUSTOM_ID,
    MAX_REQUESTS_PER_BATCH,
    SAMPLING_API_VERSIONS,
    PreparedRequest,
    RequestMeta,
    as_prepared,
    half_custom_id,
    make_custom_id,
    meta_from_custom_id,
    model_info,
    settings_of,
)

logger = logging.getLogger(__name__)

CacheTTL = Literal["5m", "1h"]

_temperature_warned = False


# ------------------------------------------------------------------------------------------
# Request building
# ------------------------------------------------------------------------------------------


@cache
def _wire_schema_for(schema: type[BaseModel]) -> dict[str, Any]:
    """The strict JSON schema sent for ``schema`` (stored models map to their wire model).

    ``ExtractionResult`` holds a free-form ``attributes`` dict that strict structured output cannot
    express, so the guide's ``schema=ExtractionResult`` is sent as :class:`WireExtractionResult`
    and converted back on the way in.
    """
    wire = WireExtractionResult if schema is ExtractionResult else schema
    schema_dict: dict[str, Any] = anthropic.transform_schema(wire)
    return schema_dict


def output_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """Return a copy of the JSON schema placed in ``output_config.format`` for ``schema``."""
    copied: dict[str, Any] = json.loads(json.dumps(_wire_schema_for(schema)))
    return copied


def _warn_temperature_dropped(api_version: str, model: str) -> None:
    global _temperature_warned
    if not _temperature_warned:
        _temperature_warned = True
        logger.warning(
            "temperature dropped: API version %s (or model %s) rejects sampling parameters, and "
            "inside a batch each such request would come back errored a day later",
            api_version,
            model,
        )


def build_extraction_batch_request(
    custom_id: str,
    prompt: str,
    model: str,
    schema: type[BaseModel],
    max_tokens: int,
    temperature: float | None = None,
    *,
    effort: str | None = None,
    cache_ttl: CacheTTL | None = "1h",
    api_version: str = API_VERSION,
) -> dict[str, Any]:
    """Build one Message Batches request for the extraction ``prompt`` (the guide's signature).

    The prompt is split at its cache boundary (:func:`fantasy_kg.domain.prompts.split_prompt`):
    the series-wide prefix becomes a system block marked ``cache_control`` (1-hour TTL, because a
    batch can run longer than the 5-minute default lifetime), the section part becomes the user
    message. Structured output goes through ``output_config.format``.

    Args:
        custom_id: The request's id inside the batch; must match ``^[a-zA-Z0-9_-]{1,64}$``.
        prompt: The rendered prompt (``PromptParts.render()`` or the guide's single string).
        model: Model id or alias from the catalog.
        schema: Pydantic model of the answer; ``ExtractionResult`` is sent as its wire schema.
        max_tokens: Output budget (thinking tokens included on thinking models).
        temperature: Sent only when ``api_version`` accepts sampling parameters and the model does;
            otherwise dropped with a one-time warning (API 2026-10-21 rejects it with a 400).
        effort: ``output_config.effort`` (low|medium|high|xhigh|max) on models that think; ignored
            on models without thinking, which reject it.
        cache_ttl: TTL of the prefix cache block, or ``None`` for no ``cache_control``.
        api_version: The ``anthropic-version`` the client sends.

    Returns:
        ``{"custom_id": ..., "params": {...}}`` ready for ``messages.batches.create``.

    Raises:
        ConfigError: unknown model.
    """
    return _batch_request(
        custom_id,
        prompt,
        split_prompt(prompt),
        model,
        schema,
        max_tokens,
        temperature,
        effort=effort,
        cache_ttl=cache_ttl,
        api_version=api_version,
    )


def _batch_request(
    custom_id: str,
    prompt: str,
    parts: PromptParts | None,
    model: str,
    schema: type[BaseModel],
    max_tokens: int,
    temperature: float | None,
    *,
    effort: str | None,
    cache_ttl: CacheTTL | None,
    api_version: str,
) -> dict[str, Any]:
    """:func:`build_extraction_batch_request` with the prompt already split (``parts``)."""
    info = model_info(model)
    params: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    cache_control: dict[str, str] | None = (
        {"type": "ephemeral", "ttl": cache_ttl} if cache_ttl is not None else None
    )
    if parts is not None:
        system_block: dict[str, Any] = {"type": "text", "text": parts.prefix}
        if cache_control is not None:
            system_block["cache_control"] = cache_control
        params["system"] = [system_block]
        user_text = parts.section
    else:
        user_text = prompt
    params["messages"] = [{"role": "user", "content": [{"type": "text", "text": user_text}]}]
    # One schema object shared by every request (never mutated: split_request deep-copies):
    # a copy per request cost ~40 KB and 0.1 ms each, 4 GB and 10 s at 100,000 requests.
    output_config: dict[str, Any] = {
        "format": {"type": "json_schema", "schema": _wire_schema_for(schema)}
    }
    if effort is not None and info.thinking_default != "off":
        output_config["effort"] = effort
    params["output_config"] = output_config
    if temperature is not None:
        if api_version in SAMPLING_API_VERSIONS and info.accepts_sampling_params:
            params["temperature"] = temperature
        else:
            _warn_temperature_dropped(api_version, model)
    return {"custom_id": custom_id, "params": params}


def build_section_request(
    section: SectionFile,
    ontology: Ontology,
    model: str,
    max_tokens: int,
    *,
    series_name: str | None = None,
    custom_id: str | None = None,
    effort: str | None = None,
    temperature: float | None = None,
    cache_ttl: CacheTTL | None = "1h",
    api_version: str = API_VERSION,
    used_ids: set[str] | None = None,
) -> PreparedRequest:
    """Build the extraction request for one section file.

    The prompt is the guide's (series name, book names, section id, ontology, canonical renaming
    rules, then the text) built by :func:`fantasy_kg.domain.prompts.build_prompt`. The custom_id
    defaults to the section's file stem (``<slug>_section_01``).
    """
    extra = section.meta.model_extra or {}
    name = series_name or ontology.name or str(extra.get("series_name", ""))
    name = name or section.meta.series
    parts, version = build_prompt_versioned(
        series_name=name,
        ontology=ontology,
        book_names=list(section.meta.books),
        section_id=section.section_id,
        text=section.text,
        model=model,
    )
    cid = make_custom_id(custom_id or section.stem, used_ids)
    # Splitting the rendered prompt again finds exactly these parts unless the prefix itself
    # holds the marker (only a pathological series name could); then take the guide's path.
    direct = _splits_back(parts.prefix)
    body = _batch_request(
        cid,
        "" if direct else parts.render(),
        parts if direct else split_prompt(parts.render()),
        model,
        ExtractionResult,
        max_tokens,
        temperature,
        effort=effort,
        cache_ttl=cache_ttl,
        api_version=api_version,
    )
    meta = RequestMeta(
        custom_id=cid,
        file_name=section.file_name,
        chunk_id=section.section_id,
        series=section.meta.series,
        section_path=str(section.path),
        sha256=section.meta.sha256 or text_sha256(section.text),
        prompt_version=version,
        **settings_of(body["params"], model),
    )
    return PreparedRequest(body=body, meta=meta)


#: The last prefix :func:`_splits_back` accepted (strings are immutable; compared by identity).
_SPLIT_OK: list[str] = []


def _splits_back(prefix: str) -> bool:
    """True when ``split_prompt(PromptParts(prefix, s).render())`` returns ``prefix`` and ``s``.

    The split is at the first marker, so it lands at the join unless the marker occurs in the
    prefix or starts inside its tail.
    """
    if _SPLIT_OK and _SPLIT_OK[0] is prefix:
        return True
    tail = prefix[-len(SECTION_MARKER) :]
    ok = SECTION_MARKER not in prefix and (tail + SECTION_MARKER).find(SECTION_MARKER) == len(tail)
    if ok:
        _SPLIT_OK[:] = [prefix]
    return ok


# ------------------------------------------------------------------------------------------
# Splitting a truncated section
# ------------------------------------------------------------------------------------------

_TEXT_MARKER = "TEXT CONTENT:\n"
MIN_SPLIT_CHARS = 400


def split_text(text: str) -> tuple[str, str] | None:
    """Split ``text`` in two near its middle at the best boundary available.

    Paragraph breaks are preferred, then line breaks, then sentence ends, then spaces; the cut
    is the boundary nearest to the middle. Returns ``None`` when the text is too short to split
    usefully (:data:`MIN_SPLIT_CHARS`).
    """
    if len(text) < MIN_SPLIT_CHARS:
        return None
    middle = len(text) // 2
    for pattern in (r"\n\s*\n", r"\n", r"(?<=[.!?])\s+", r"\s+"):
        cuts = [m.end() for m in re.finditer(pattern, text)]
        cuts = [c for c in cuts if len(text) // 5 <= c <= len(text) - len(text) // 5]
        if cuts:
            cut = min(cuts, key=lambda c: abs(c - middle))
            return text[:cut], text[cut:]
    return text[:middle], text[middle:]


def split_request(body: dict[str, Any], ids: tuple[str, str]) -> tuple[dict[str, Any], ...] | None:
    """Make two requests from one whose answer was truncated, each with half the section text.

    The cached prefix, schema and all other params stay identical (so the halves still hit the
    prompt cache); only the text after ``TEXT CONTENT:`` in the user message is halved.
    """
    params = body["params"]
    try:
        content = params["messages"][0]["content"]
        user_text = content if isinstance(content, str) else content[0]["text"]
    except (KeyError, IndexError, TypeError):
        return None
    at = user_text.rfind(_TEXT_MARKER)
    head, text = (
        (user_text[: at + len(_TEXT_MARKER)], user_text[at + len(_TEXT_MARKER) :])
        if at >= 0
        else ("", user_text)
    )
    halves = split_text(text)
    if halves is None:
        return None
    out = []
    for cid, half in zip(ids, halves, strict=True):
        new_params = json.loads(json.dumps(params))
        new_params["messages"][0]["content"] = [{"type": "text", "text": head + half}]
        out.append({"custom_id": cid, "params": new_params})
    return tuple(out)


def is_rendered_prompt(prompt: str) -> bool:
    """True when ``prompt`` carries the project's cache-boundary marker."""
    return SECTION_MARKER in prompt


__all__ = [
    "API_VERSION",
    "LEGACY_API_VERSION",
    "MAX_BATCH_BYTES",
    "MAX_CUSTOM_ID",
    "MAX_OPTIONAL_PARAMS",
    "MAX_REQUESTS_PER_BATCH",
    "MAX_UNION_PARAMS",
    "MIN_EXPECTED_OUTPUT",
    "MIN_SPLIT_CHARS",
    "CacheTTL",
    "PreflightReport",
    "PreparedRequest",
    "RequestEstimate",
    "RequestMeta",
    "SchemaComplexity",
    "as_prepared",
    "build_extraction_batch_request",
    "build_section_request",
    "estimate_cost",
    "estimate_tokens",
    "half_custom_id",
    "is_rendered_prompt",
    "make_custom_id",
    "meta_from_custom_id",
    "output_schema",
    "preflight",
    "request_bytes",
    "schema_complexity",
    "split_into_batches",
    "split_request",
    "split_text",
]
