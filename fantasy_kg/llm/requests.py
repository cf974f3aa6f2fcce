"""Batch requests: the guide's request builder, readable custom_ids and pre-flight checks.

A Message Batch validates each request's ``params`` only after the whole batch has ended, up to
24 hours later (reference §1.2). Everything the API would reject is therefore checked here, before
anything leaves the machine (design invariant 4): custom_id pattern and uniqueness, prompt plus
``max_tokens`` within the context window, ``max_tokens`` within the model's output cap, the
structured-output schema's complexity limits, and the 100,000-request / 256 MB envelope (above
which the work is split into several batches).

Requests are plain dicts in the API's shape (``{"custom_id": ..., "params": {...}}``) so code
written against the guide keeps working; :class:`PreparedRequest` wraps one with what the rest of
the pipeline needs to know about it (which section, which text hash, which prompt version).
"""

import hashlib
import json
import logging
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from json.encoder import encode_basestring as _encode_basestring
from typing import Any, Literal

import anthropic
from pydantic import BaseModel

from fantasy_kg.domain import answer as answer_sizing
from fantasy_kg.domain.answer import AnswerSize
from fantasy_kg.domain.catalog import ModelInfo, catalog, get_model
from fantasy_kg.domain.errors import ConfigError, PreflightError
from fantasy_kg.domain.pricing import Cost, TokenUsage, price_usage
from fantasy_kg.domain.prompts import (
    SECTION_MARKER,
    PromptParts,
    build_prompt_versioned,
    split_prompt,
)
from fantasy_kg.domain.schemas import ExtractionResult, Ontology, WireExtractionResult
from fantasy_kg.domain.sections import SectionFile, text_sha256

logger = logging.getLogger(__name__)

#: API version the installed SDK (2.x) sends; it rejects temperature/top_p/top_k with a 400.
API_VERSION = "2026-10-21"
#: The last API version that accepts sampling parameters.
LEGACY_API_VERSION = "2023-06-01"
_SAMPLING_API_VERSIONS = frozenset({LEGACY_API_VERSION})

CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_CUSTOM_ID = 64
MAX_REQUESTS_PER_BATCH = 100_000
# The docs say "256 MB" without saying which MB; the decimal reading is the stricter one, and a
# 413 from the edge proxy costs a whole re-plan, so split under 256,000,000 bytes.
MAX_BATCH_BYTES = 256_000_000
#: Bytes kept free under the 256 MB limit for the JSON envelope and HTTP framing.
_BATCH_BYTES_MARGIN = 64 * 1024
MAX_OPTIONAL_PARAMS = 24
MAX_UNION_PARAMS = 16

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
    info = _model_info(model)
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
        if api_version in _SAMPLING_API_VERSIONS and info.accepts_sampling_params:
            params["temperature"] = temperature
        else:
            _warn_temperature_dropped(api_version, model)
    return {"custom_id": custom_id, "params": params}


# ------------------------------------------------------------------------------------------
# custom_ids
# ------------------------------------------------------------------------------------------

_INVALID_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]+")


def make_custom_id(base: str, used: set[str] | None = None) -> str:
    """Turn ``base`` into a valid, unique custom_id, readable whenever possible.

    ``ashen_crown_section_01`` stays as it is. Invalid characters become ``_``; an id that is
    too long, or that had to be changed, is cut and suffixed with a 12-hex hash of the original,
    so two different long names never collide. When ``used`` is given the result is added to it,
    and a clash gets a hash suffix too.
    """
    cleaned = _INVALID_ID_CHARS.sub("_", base).strip("_") or "req"
    digest = hashlib.sha256(base.encode("utf-8")).hexdigest()
    candidate = cleaned
    if cleaned != base or len(cleaned) > MAX_CUSTOM_ID:
        candidate = f"{cleaned[: MAX_CUSTOM_ID - 13]}_{digest[:12]}"
    n = 0
    while used is not None and candidate in used:
        n += 1
        suffix = hashlib.sha256(f"{base}#{n}".encode()).hexdigest()[:12]
        candidate = f"{cleaned[: MAX_CUSTOM_ID - 13]}_{suffix}"
    if used is not None:
        used.add(candidate)
    return candidate


def half_custom_id(custom_id: str, half: Literal["a", "b"]) -> str:
    """The custom_id of one half of a section split after truncation (``<id>_a`` / ``<id>_b``)."""
    return make_custom_id(f"{custom_id}_{half}")


# ------------------------------------------------------------------------------------------
# Section requests
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestMeta:
    """What the pipeline knows about one request beyond its body.

    Attributes:
        custom_id: The request's id in the batch.
        file_name: Section file the answer is about (stamped on mentions and evidence).
        chunk_id: Section id within the series (``01``).
        series: Series slug.
        section_path: Path of the section ``.txt`` ("" when built from a bare prompt).
        sha256: sha256 of the section text (or of the prompt for bare prompts).
        prompt_version: Hash of template, ontology, schema and model.
        split_of: For a half of a truncated section: the custom_id it was split from.
        split_root: For a half: the custom_id whose ``_extracted.json`` the halves merge into.
        effort: The effort the request runs at ("" on models that do not think): part of a
            result's identity (invariant 10), like ``max_tokens``.
        max_tokens: The request's ``max_tokens`` (0: unknown).
    """

    custom_id: str
    file_name: str
    chunk_id: str
    series: str = ""
    section_path: str = ""
    sha256: str = ""
    prompt_version: str = ""
    split_of: str = ""
    split_root: str = ""
    effort: str = ""
    max_tokens: int = 0


@dataclass(frozen=True)
class PreparedRequest:
    """A request body plus its metadata; what ``create_batch`` accepts besides bare dicts."""

    body: dict[str, Any]
    meta: RequestMeta

    @property
    def custom_id(self) -> str:
        """The request's custom_id."""
        return str(self.body["custom_id"])


_SECTION_ID_RE = re.compile(r"_section_(?P<num>\d+)")


def meta_from_custom_id(custom_id: str) -> RequestMeta:
    """Best-effort metadata for a guide-style request that came without any.

    ``ashen_crown_section_01`` → file ``ashen_crown_section_01.txt``, chunk ``01``.
    """
    m = _SECTION_ID_RE.search(custom_id)
    chunk = m.group("num") if m else custom_id
    series = custom_id[: m.start()] if m else ""
    return RequestMeta(
        custom_id=custom_id, file_name=f"{custom_id}.txt", chunk_id=chunk, series=series
    )


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
        **_settings_of(body["params"], model),
    )
    return PreparedRequest(body=body, meta=meta)


def _settings_of(params: dict[str, Any], model: str) -> dict[str, Any]:
    """``effort`` (the effective one) and ``max_tokens`` of a request, for :class:`RequestMeta`."""
    cfg = params.get("output_config")
    sent = cfg.get("effort") if isinstance(cfg, dict) else None
    try:
        effort = answer_sizing.effective_effort(
            _model_info(model), sent if isinstance(sent, str) else None
        )
    except ConfigError:
        effort = str(sent)
    tokens = params.get("max_tokens")
    return {"effort": effort or "", "max_tokens": tokens if isinstance(tokens, int) else 0}


def _model_info(name: str) -> ModelInfo:
    """:func:`get_model`, looked up once per name and loaded catalog (it runs per request)."""
    key = (name, id(catalog()))
    hit = _MODEL_INFO.get(key)
    if hit is None or hit[0] is not catalog():
        info = get_model(name)  # raises ConfigError for an unknown name, as before
        _MODEL_INFO[key] = (catalog(), info)
        return info
    return hit[1]


_MODEL_INFO: dict[tuple[str, int], tuple[Any, ModelInfo]] = {}
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


def as_prepared(requests: Iterable[dict[str, Any] | PreparedRequest]) -> list[PreparedRequest]:
    """Wrap guide-style dicts (metadata guessed from the custom_id) and pass prepared ones on."""
    out: list[PreparedRequest] = []
    for req in requests:
        if isinstance(req, PreparedRequest):
            out.append(req)
            continue
        cid = req.get("custom_id")
        if not isinstance(cid, str):
            raise PreflightError(
                "a request has no string custom_id: build requests with "
                "build_extraction_batch_request(custom_id, ...)"
            )
        meta = meta_from_custom_id(cid)
        params = req.get("params", {})
        digest = hashlib.sha256(_canonical(params).encode()).hexdigest()
        settings = (
            _settings_of(params, str(params.get("model", "")))
            if isinstance(params, dict) and params.get("model")
            else {}
        )
        out.append(PreparedRequest(body=req, meta=replace(meta, sha256=digest, **settings)))
    return out


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def request_bytes(body: dict[str, Any]) -> int:
    """Size of one request as it travels inside the batch body (compact JSON, UTF-8).

    The ASCII-escaping encoder is about twice as fast; when its output holds no unicode escape,
    every character was ASCII and the UTF-8 size is its length, so only bodies with non-ASCII
    (or control) characters pay for the second, exact encoding.
    """
    text = json.dumps(body, separators=(",", ":"))
    if "\\u" not in text:
        return len(text)
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


class _NotSizable(Exception):
    """A value the structural sizer does not handle; the caller falls back to ``json.dumps``."""


#: Shared strings at least this long are memoized by value (the prompt prefix).
_MEMO_STR_CHARS = 256
#: A container with more references than this is taken as shared between bodies.
_SHARED_REFS = 8


class _BodySizer:
    """:func:`request_bytes` for many bodies, without re-encoding the parts they share.

    Every request of a series carries the same prompt prefix and the same schema object, about
    two thirds of each body; serializing all of it per request cost as much as the ``json.dumps``
    baseline itself. The compact JSON size of a container is the sum of its members' sizes plus
    the brackets, colons and commas, so this sums per-value sizes: strings through the same C
    escaping ``json`` uses (memoized when long), shared containers once per object. Anything
    ``json.dumps`` would treat specially (non-``str`` keys, non-finite floats, subclasses,
    unknown types, cycles) falls back to :func:`request_bytes` for that body.
    """

    def __init__(self) -> None:
        self._strings: dict[str, int] = {}
        self._keys: dict[str, int] = {}  # key -> its size plus the colon
        # id -> (object, size); the object is held so its id cannot be reused meanwhile.
        self._containers: dict[int, tuple[Any, int]] = {}

    def size(self, body: dict[str, Any]) -> int:
        """Bytes of ``body`` as compact UTF-8 JSON (exactly :func:`request_bytes`)."""
        try:
            return self._value(body, 0)
        except (_NotSizable, RecursionError):
            return request_bytes(body)

    def _string(self, text: str) -> int:
        # Long strings held by many bodies (the prefix) are sized once; a long string held by
        # one body (its section text) would only pay for hashing it.
        memo = len(text) >= _MEMO_STR_CHARS and sys.getrefcount(text) > _SHARED_REFS
        if memo:
            hit = self._strings.get(text)
            if hit is not None:
                return hit
        encoded = _encode_basestring(text)
        n = len(encoded) if encoded.isascii() else len(encoded.encode("utf-8"))
        if memo:
            self._strings[text] = n
        return n

    def _value(self, value: Any, depth: int) -> int:
        kind = type(value)
        if kind is str:
            return self._string(value)
        if kind is dict or kind is list:
            # Only containers referenced from many places (the shared schema) are worth a memo
            # entry; the reference count only decides that, never the size.
            shared = sys.getrefcount(value) > _SHARED_REFS
            if shared:
                hit = self._containers.get(id(value))
                if hit is not None and hit[0] is value:
                    return hit[1]
            if depth > 64:
                raise _NotSizable
            if kind is dict:
                n = 1 + len(value) if value else 2
                keys = self._keys
                for key, item in value.items():
                    if type(key) is not str:
                        raise _NotSizable
                    key_size = keys.get(key)
                    if key_size is None:
                        key_size = keys[key] = self._string(key) + 1
                    n += key_size + (
                        self._string(item) if type(item) is str else self._value(item, depth + 1)
                    )
            else:
                n = 1 + len(value) if value else 2
                for item in value:
                    n += self._string(item) if type(item) is str else self._value(item, depth + 1)
            if shared:
                self._containers[id(value)] = (value, n)
            return n
        if kind is int:
            return len(int.__repr__(value))
        if kind is bool:
            return 4 if value else 5
        if value is None:
            return 4
        if kind is float and math.isfinite(value):
            return len(float.__repr__(value))
        raise _NotSizable


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


# ------------------------------------------------------------------------------------------
# Pre-flight
# ------------------------------------------------------------------------------------------


def estimate_tokens(text: str, model: ModelInfo) -> int:
    """Conservative token estimate for ``text`` on ``model`` when no count is available.

    Uses the domain's calibrated estimate (``fantasy_kg.domain.text.tokens``) plus its safety
    margin for budget decisions; without it, chars/3 (the Claude 4.5 tokenizer averages about 3.5
    characters per token on English prose) times the model's tokenizer factor, which errs high.
    """
    module = _domain_tokens()
    if module is not None:
        raw = int(module.estimate_tokens(text, model.tokenizer_factor))
        return int(module.with_margin(raw, False))
    return math.ceil(len(text) / 3 * model.tokenizer_factor)


@cache
def _domain_tokens() -> Any:
    import importlib

    try:
        module = importlib.import_module("fantasy_kg.domain.text.tokens")
    except ImportError:
        return None
    if hasattr(module, "estimate_tokens") and hasattr(module, "with_margin"):
        return module
    return None


def _request_text(params: dict[str, Any]) -> str:
    chunks: list[str] = []
    system = params.get("system")
    if isinstance(system, str):
        chunks.append(system)
    elif isinstance(system, list):
        chunks.extend(str(b.get("text", "")) for b in system if isinstance(b, dict))
    for msg in params.get("messages", []):
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            chunks.append(content)
        elif isinstance(content, list):
            chunks.extend(str(b.get("text", "")) for b in content if isinstance(b, dict))
    fmt = params.get("output_config", {}).get("format")
    if fmt:
        chunks.append(json.dumps(fmt))
    return "\n".join(chunks)


class _PromptTokens:
    """Prompt and prefix token estimates for pre-flight, each shared part counted once.

    Every request of a series carries the same prefix string and the same output-schema object,
    so re-estimating them per request (as ``estimate_tokens(_request_text(params))`` does) spends
    most of pre-flight on text already counted. The estimate counts "pieces" additively (a part
    joined with a newline adds exactly its own pieces), so summing memoized per-part counts gives
    the same number as estimating the joined text. Without the domain estimator it falls back to
    estimating the joined text.
    """

    def __init__(self) -> None:
        self._module = _domain_tokens()
        self._exact_parts = self._module is not None and hasattr(self._module, "count_pieces")
        self._texts: dict[str, int] = {}
        self._formats: dict[tuple[Any, ...], int] = {}

    def _shared(self, text: str) -> int:
        hit = self._texts.get(text)
        if hit is None:
            hit = self._texts[text] = int(self._module.count_pieces(text))
        return hit

    def _format(self, fmt: dict[str, Any]) -> int:
        key = tuple((k, id(v) if isinstance(v, dict | list) else v) for k, v in fmt.items())
        hit = self._formats.get(key)
        if hit is None:
            hit = self._formats[key] = int(self._module.count_pieces(json.dumps(fmt)))
        return hit

    def _tokens(self, pieces: int, model: ModelInfo) -> int:
        module = self._module
        raw = math.ceil(pieces * module.TOKENS_PER_PIECE * model.tokenizer_factor) if pieces else 0
        return int(module.with_margin(raw, False))

    def prompt(self, params: dict[str, Any], model: ModelInfo) -> int:
        """``estimate_tokens(_request_text(params), model)``, without re-counting shared parts."""
        if not self._exact_parts:
            return estimate_tokens(_request_text(params), model)
        pieces = 0
        system = params.get("system")
        if isinstance(system, str):
            pieces += self._shared(system)
        elif isinstance(system, list):
            pieces += sum(
                self._shared(str(b.get("text", ""))) for b in system if isinstance(b, dict)
            )
        for msg in params.get("messages", []):
            content = msg.get("content") if isinstance(msg, dict) else None
            if isinstance(content, str):
                pieces += self._module.count_pieces(content)
            elif isinstance(content, list):
                for b in content:
                    if isinstance(b, dict):
                        pieces += self._module.count_pieces(str(b.get("text", "")))
        fmt = params.get("output_config", {}).get("format")
        if fmt:
            pieces += self._format(fmt) if isinstance(fmt, dict) else self._shared(json.dumps(fmt))
        return self._tokens(pieces, model)

    def format(self, params: dict[str, Any], model: ModelInfo) -> int:
        """Tokens of the structured-output format (the schema the API explains in its prompt)."""
        fmt = params.get("output_config", {}).get("format")
        if not fmt:
            return 0
        if not self._exact_parts:
            return estimate_tokens(json.dumps(fmt), model)
        pieces = self._format(fmt) if isinstance(fmt, dict) else self._shared(json.dumps(fmt))
        return self._tokens(pieces, model)

    def prefix(self, params: dict[str, Any], model: ModelInfo) -> int:
        """``estimate_tokens(_prefix_text(params), model)``, memoized on the prefix text."""
        text = _prefix_text(params)
        if not self._exact_parts:
            return estimate_tokens(text, model)
        return self._tokens(self._shared(text), model)


def _prefix_text(params: dict[str, Any]) -> str:
    system = params.get("system")
    if isinstance(system, list):
        return "\n".join(
            str(b.get("text", ""))
            for b in system
            if isinstance(b, dict) and b.get("cache_control") is not None
        )
    return ""


@dataclass(frozen=True)
class SchemaComplexity:
    """Counts the API limits for strict schemas (24 optional, 16 union-typed parameters)."""

    optional_params: int
    union_params: int


def schema_complexity(schema: dict[str, Any]) -> SchemaComplexity:
    """Count optional and union-typed properties across a JSON schema (``$defs`` included once)."""
    optional = 0
    union = 0

    def walk(node: Any) -> None:
        nonlocal optional, union
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                required = set(node.get("required", []))
                for name, prop in props.items():
                    if name not in required:
                        optional += 1
                    if isinstance(prop, dict) and (
                        "anyOf" in prop or "oneOf" in prop or isinstance(prop.get("type"), list)
                    ):
                        union += 1
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return SchemaComplexity(optional_params=optional, union_params=union)


@dataclass
class RequestEstimate:
    """Pre-flight numbers for one request.

    ``prompt_tokens`` and ``prefix_tokens`` are plain estimates (what billing will be near); the
    window check used the same counts plus the estimate's safety margin.
    """

    custom_id: str
    prompt_tokens: int
    prefix_tokens: int
    max_tokens: int
    bytes: int
    answer: AnswerSize | None = None

    @property
    def expected_output(self) -> int:
        """Expected billed output (answer + thinking), capped at ``max_tokens``."""
        if self.answer is None:
            return min(self.max_tokens, MIN_EXPECTED_OUTPUT)
        return min(self.max_tokens, self.answer.output_tokens)


@dataclass
class PreflightReport:
    """What pre-flight found: per-request numbers, batch split, cost estimate, warnings.

    Attributes:
        model: The catalog entry checked against.
        requests: One estimate per request, in input order.
        batches: Request indices per batch (several when 100,000 / 256 MB would be exceeded).
        estimated_cost: Expected cost (batch rate, real-time beside it); see :func:`estimate_cost`.
        worst_case_cost: Cost if every request used its whole ``max_tokens`` and no cache hit.
        warnings: Non-fatal findings (e.g. a prefix too short to be cached).
        token_count_method: ``estimate`` (or what the domain estimator reports).
        output_ratio: Expected answer tokens per section token used for the answer sizes.
    """

    model: ModelInfo
    requests: list[RequestEstimate]
    batches: list[list[int]]
    estimated_cost: Cost
    worst_case_cost: Cost
    warnings: list[str] = field(default_factory=list)
    token_count_method: str = "estimate"
    output_ratio: float = answer_sizing.DEFAULT_OUTPUT_RATIO

    @property
    def total_bytes(self) -> int:
        """Bytes of all request bodies."""
        return sum(r.bytes for r in self.requests)

    @property
    def largest_answer(self) -> AnswerSize | None:
        """The request whose expected answer needs the most of its ``max_tokens``."""
        sizes = [r.answer for r in self.requests if r.answer is not None]
        return max(sizes, key=lambda a: a.required_tokens / a.max_tokens, default=None)

    @property
    def expected_output_tokens(self) -> int:
        """Expected billed output of all requests (answers plus thinking)."""
        return sum(r.expected_output for r in self.requests)

    @property
    def expected_thinking_tokens(self) -> int:
        """Expected thinking tokens of all requests (billed as output)."""
        return sum(r.answer.thinking_tokens for r in self.requests if r.answer is not None)


def _section_name(body: dict[str, Any], meta: RequestMeta | None) -> str:
    if meta is not None and meta.section_path:
        return f"section {meta.file_name} (custom_id {meta.custom_id!r})"
    return f"request custom_id {body.get('custom_id')!r}"


#: Expected output of a request with no answer estimate (a bare prompt).
MIN_EXPECTED_OUTPUT = 1024


def estimate_cost(
    estimates: Sequence[RequestEstimate], model: ModelInfo, *, cache_hit_rate: float = 0.3
) -> Cost:
    """Expected cost of the requests at the batch rate (real-time equivalent beside it).

    Assumptions, chosen to err high: the cached prefix is written once with the 1-hour TTL and
    read by only ``cache_hit_rate`` of the other requests (the batch guide reports 30-98%); the
    others write it again. Output is the expected answer plus the thinking for the request's
    effort (:func:`fantasy_kg.domain.answer.expected_answer`; thinking is billed as output),
    capped at ``max_tokens``. A prefix below the model's minimum cacheable length is priced as
    plain input (the API silently does not cache it).
    """
    total = Cost(batch_usd=0.0, realtime_usd=0.0)
    # Requests with the same token numbers cost the same: each distinct (prompt, prefix, output,
    # first-or-not) is priced once and its terms are added in the original order, so the sum
    # is bit-for-bit what pricing every request would give, without three pydantic objects each.
    terms: dict[tuple[int, int, int, bool], tuple[float, ...]] = {}
    batch_usd, realtime_usd = total.batch_usd, total.realtime_usd
    for i, est in enumerate(estimates):
        key = (est.prompt_tokens, est.prefix_tokens, est.expected_output, i > 0)
        term = terms.get(key)
        if term is None:
            term = terms[key] = _cost_terms(est, model, cache_hit_rate, i > 0)
        if len(term) == 2:
            batch_usd = batch_usd + term[0]
            realtime_usd = realtime_usd + term[1]
        else:
            batch_usd = batch_usd + term[0] + term[1]
            realtime_usd = realtime_usd + term[2] + term[3]
    return Cost(batch_usd=batch_usd, realtime_usd=realtime_usd)


def _cost_terms(
    est: RequestEstimate, model: ModelInfo, cache_hit_rate: float, later: bool
) -> tuple[float, ...]:
    """What one request adds to :func:`estimate_cost`'s sums, as the terms it adds in order.

    Two terms (batch, real-time) when the prefix is too short to be cached; otherwise four:
    the cache-read and cache-write shares of the batch sum, then of the real-time sum.
    """
    body_tokens = max(0, est.prompt_tokens - est.prefix_tokens)
    out = est.expected_output
    if est.prefix_tokens < model.min_cacheable_prefix_tokens:
        # Too short to be cached: the prefix is plain input on every request.
        cost = price_usage(model, TokenUsage(input_tokens=est.prompt_tokens, output_tokens=out))
        return (cost.batch_usd, cost.realtime_usd)
    base = TokenUsage(input_tokens=body_tokens, output_tokens=out)
    write = price_usage(model, base + TokenUsage(cache_creation_1h_input_tokens=est.prefix_tokens))
    read = price_usage(model, base + TokenUsage(cache_read_input_tokens=est.prefix_tokens))
    hit = cache_hit_rate if later else 0.0
    return (
        hit * read.batch_usd,
        (1 - hit) * write.batch_usd,
        hit * read.realtime_usd,
        (1 - hit) * write.realtime_usd,
    )


def _worst_case(estimates: Sequence[RequestEstimate], model: ModelInfo) -> Cost:
    batch = realtime = 0.0
    costs: dict[tuple[int, int, int], Cost] = {}  # same numbers, same cost: price each once
    for est in estimates:
        key = (est.prompt_tokens, est.prefix_tokens, est.max_tokens)
        cost = costs.get(key)
        if cost is None:
            usage = TokenUsage(
                input_tokens=est.prompt_tokens - est.prefix_tokens,
                cache_creation_1h_input_tokens=est.prefix_tokens,
                output_tokens=est.max_tokens,
            )
            cost = costs[key] = price_usage(model, usage)
        batch += cost.batch_usd
        realtime += cost.realtime_usd
    return Cost(batch_usd=batch, realtime_usd=realtime)


def split_into_batches(
    sizes: Sequence[int],
    *,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BATCH_BYTES - _BATCH_BYTES_MARGIN,
) -> list[list[int]]:
    """Group request indices (in order) into batches under both the count and the byte limit.

    Args:
        sizes: Byte size of each request body.
        max_requests: Requests per batch (API: 100,000).
        max_bytes: Body bytes per batch (API: 256 MB, minus a margin for the envelope).

    Raises:
        PreflightError: if a single request alone is larger than ``max_bytes``.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for i, size in enumerate(sizes):
        # ``,`` between requests plus the surrounding ``{"requests":[...]}``.
        cost = size + 1
        if cost > max_bytes:
            raise PreflightError(
                f"request #{i} is {size:,} bytes, above the {max_bytes:,}-byte batch limit: "
                "split the section into smaller sections"
            )
        if current and (len(current) >= max_requests or current_bytes + cost > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(i)
        current_bytes += cost
    if current:
        batches.append(current)
    return batches


def preflight(
    requests: Sequence[dict[str, Any] | PreparedRequest],
    model: str,
    *,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BATCH_BYTES - _BATCH_BYTES_MARGIN,
    output_ratio: float = answer_sizing.DEFAULT_OUTPUT_RATIO,
    api_version: str = API_VERSION,
    check_answer_fit: bool = True,
) -> PreflightReport:
    """Check requests against everything the API would reject, before any is sent.

    Beyond what the API rejects, a request whose expected answer cannot fit its ``max_tokens``
    (invariant 8) is refused too: it would come back cut at ``max_tokens`` a day later and cost a
    split, a resubmission and a second batch round.

    Args:
        requests: Bodies or prepared requests.
        model: The batch's model.
        max_requests: Requests per batch.
        max_bytes: Body bytes per batch.
        output_ratio: Expected answer tokens per section token.
        api_version: The ``anthropic-version`` the client sends; 2026-10-21 rejects sampling
            parameters on every model.
        check_answer_fit: Refuse requests whose expected answer does not fit (follow-up halves
            of a cut answer are sent regardless: splitting is the repair).

    Raises:
        PreflightError: one line naming the section (or custom_id) and why: bad or duplicate
            custom_id, prompt + max_tokens over the context window, max_tokens over the output
            cap, an expected answer over max_tokens, a sampling parameter the API version
            rejects, schema over the complexity limits, a request with no messages, or a model
            in the request that differs from ``model``.
        ConfigError: unknown model.
    """
    info = get_model(model)
    if not requests:
        raise PreflightError("nothing to submit: no requests (is the sections folder empty?)")
    prepared = as_prepared(requests)
    seen: dict[str, int] = {}
    estimates: list[RequestEstimate] = []
    warnings: list[str] = []
    schema_checked: set[str] = set()
    schema_ids: set[int] = set()  # schema objects already checked (requests share one)
    tokens = _PromptTokens()
    sizer = _BodySizer()
    model_ids: dict[str, str] = {}  # model name in a request -> catalog id, looked up once
    for i, req in enumerate(prepared):
        body, meta = req.body, req.meta
        where = _section_name(body, meta)
        cid = body.get("custom_id")
        if not isinstance(cid, str) or not CUSTOM_ID_RE.match(cid):
            raise PreflightError(
                f"{where}: custom_id must match ^[a-zA-Z0-9_-]{{1,64}}$ "
                f"(got {len(str(cid))} characters); use make_custom_id() to shorten it"
            )
        if cid in seen:
            raise PreflightError(
                f"{where}: custom_id {cid!r} is used twice (requests #{seen[cid]} and #{i}); "
                "custom_ids must be unique within a batch"
            )
        seen[cid] = i
        params = body.get("params")
        if not isinstance(params, dict) or not params.get("messages"):
            raise PreflightError(f"{where}: params has no messages")
        req_model = str(params.get("model", ""))
        req_id = model_ids.get(req_model) if req_model else info.id
        if req_id is None:
            req_id = model_ids[req_model] = get_model(req_model).id
        if req_id != info.id:
            raise PreflightError(
                f"{where}: request model {req_model!r} differs from the batch model {model!r}"
            )
        max_tokens = params.get("max_tokens")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise PreflightError(f"{where}: max_tokens must be an integer >= 1 in a batch")
        if max_tokens > info.max_output_tokens:
            raise PreflightError(
                f"{where}: max_tokens {max_tokens:,} > {info.max_output_tokens:,}, the output cap "
                f"of {info.id}; lower --max-tokens"
            )
        for banned in ("temperature", "top_p", "top_k"):
            if banned not in params:
                continue
            if api_version not in _SAMPLING_API_VERSIONS:
                raise PreflightError(
                    f"{where}: API version {api_version} rejects {banned} on every model "
                    f"(the batch would return it errored); remove {banned} from the request"
                )
            if not info.accepts_sampling_params:
                raise PreflightError(f"{where}: {info.id} rejects {banned}; remove it")
        for banned in ("stream", "speed"):
            if banned in params:
                raise PreflightError(f"{where}: {banned!r} is not supported inside a batch")
        fmt = params.get("output_config", {}).get("format")
        if (
            isinstance(fmt, dict)
            and isinstance(fmt.get("schema"), dict)
            and id(fmt["schema"]) not in schema_ids
        ):
            schema_ids.add(id(fmt["schema"]))
            key = _canonical(fmt["schema"])
            if key not in schema_checked:
                schema_checked.add(key)
                cx = schema_complexity(fmt["schema"])
                if cx.optional_params > MAX_OPTIONAL_PARAMS or cx.union_params > MAX_UNION_PARAMS:
                    raise PreflightError(
                        f"{where}: output schema has {cx.optional_params} optional and "
                        f"{cx.union_params} union-typed parameters; the API allows "
                        f"{MAX_OPTIONAL_PARAMS} and {MAX_UNION_PARAMS}: make fields required"
                    )
        prompt_tokens = tokens.prompt(params, info)
        prefix_tokens = tokens.prefix(params, info)
        if prompt_tokens + max_tokens > info.context_window:
            raise PreflightError(
                f"{where}: prompt ~{prompt_tokens:,} tokens + max_tokens {max_tokens:,} exceeds "
                f"the {info.context_window:,}-token context window of {info.id}; re-section with "
                "a smaller budget or lower --max-tokens"
            )
        # The counts above carry the estimate's safety margin (right for the window check);
        # the answer size and the cost are expectations, so they use the plain estimate.
        billed_prompt = _unmargined(prompt_tokens)
        # The format's injected prompt comes first and is cached with the prefix.
        billed_prefix = (
            _unmargined(prefix_tokens + tokens.format(params, info)) if prefix_tokens else 0
        )
        fmt_cfg = params.get("output_config")
        sent_effort = fmt_cfg.get("effort") if isinstance(fmt_cfg, dict) else None
        size = answer_sizing.expected_answer(
            max(0, billed_prompt - billed_prefix),
            info,
            max_tokens=max_tokens,
            effort=answer_sizing.effective_effort(
                info, sent_effort if isinstance(sent_effort, str) else None
            ),
            output_ratio=output_ratio,
        )
        if check_answer_fit and not size.fits and not (meta is not None and meta.split_of):
            raise PreflightError(
                f"{where}: {answer_sizing.describe_answer(size, output_ratio)}: the answer "
                f"would be cut; {answer_sizing.answer_fit_hint(size, info, output_ratio)}"
            )
        if 0 < prefix_tokens < info.min_cacheable_prefix_tokens and i == 0:
            warnings.append(
                f"cached prefix ~{prefix_tokens:,} tokens is below {info.id}'s minimum of "
                f"{info.min_cacheable_prefix_tokens:,}: it will not be cached"
            )
        estimates.append(
            RequestEstimate(
                custom_id=cid,
                prompt_tokens=billed_prompt,
                prefix_tokens=billed_prefix,
                max_tokens=max_tokens,
                bytes=sizer.size(body),
                answer=size,
            )
        )
    batches = split_into_batches(
        [e.bytes for e in estimates], max_requests=max_requests, max_bytes=max_bytes
    )
    return PreflightReport(
        model=info,
        requests=estimates,
        batches=batches,
        estimated_cost=estimate_cost(estimates, info),
        worst_case_cost=_worst_case(estimates, info),
        warnings=warnings,
        output_ratio=output_ratio,
    )


def _unmargined(tokens: int) -> int:
    """An estimated count without the estimate's safety margin (what billing will be near)."""
    module = _domain_tokens()
    margin = float(module.ESTIMATE_MARGIN) if module is not None else 0.0
    return int(tokens / (1.0 + margin))


def is_rendered_prompt(prompt: str) -> bool:
    """True when ``prompt`` carries the project's cache-boundary marker."""
    return SECTION_MARKER in prompt
