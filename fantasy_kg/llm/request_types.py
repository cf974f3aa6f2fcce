"""Batch requests as data: API limits, custom_ids, and the metadata each request carries.

The lowest layer of the request code: :mod:`~fantasy_kg.llm.requests` (building),
:mod:`~fantasy_kg.llm.preflight` (checking) and the job store all build on these types.
"""

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from fantasy_kg.domain import answer as answer_sizing
from fantasy_kg.domain.catalog import ModelInfo, catalog, get_model
from fantasy_kg.domain.errors import ConfigError, PreflightError
from fantasy_kg.llm.request_size import canonical_json

#: API version the installed SDK (2.x) sends; it rejects temperature/top_p/top_k with a 400.
API_VERSION = "2026-10-21"
#: The last API version that accepts sampling parameters.
LEGACY_API_VERSION = "2023-06-01"
#: API versions that still accept sampling parameters (temperature, top_p, top_k).
SAMPLING_API_VERSIONS = frozenset({LEGACY_API_VERSION})

CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_CUSTOM_ID = 64
MAX_REQUESTS_PER_BATCH = 100_000
# The docs say "256 MB" without saying which MB; the decimal reading is the stricter one, and a
# 413 from the edge proxy costs a whole re-plan, so split under 256,000,000 bytes.
MAX_BATCH_BYTES = 256_000_000
#: Bytes kept free under the 256 MB limit for the JSON envelope and HTTP framing.
BATCH_BYTES_MARGIN = 64 * 1024


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


def settings_of(params: dict[str, Any], model: str) -> dict[str, Any]:
    """``effort`` (the effective one) and ``max_tokens`` of a request, for :class:`RequestMeta`."""
    cfg = params.get("output_config")
    sent = cfg.get("effort") if isinstance(cfg, dict) else None
    try:
        effort = answer_sizing.effective_effort(
            model_info(model), sent if isinstance(sent, str) else None
        )
    except ConfigError:
        effort = str(sent)
    tokens = params.get("max_tokens")
    return {"effort": effort or "", "max_tokens": tokens if isinstance(tokens, int) else 0}


def model_info(name: str) -> ModelInfo:
    """:func:`get_model`, looked up once per name and loaded catalog (it runs per request)."""
    key = (name, id(catalog()))
    hit = _MODEL_INFO.get(key)
    if hit is None or hit[0] is not catalog():
        info = get_model(name)  # raises ConfigError for an unknown name, as before
        _MODEL_INFO[key] = (catalog(), info)
        return info
    return hit[1]


_MODEL_INFO: dict[tuple[str, int], tuple[Any, ModelInfo]] = {}


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
        digest = hashlib.sha256(canonical_json(params).encode()).hexdigest()
        settings = (
            settings_of(params, str(params.get("model", "")))
            if isinstance(params, dict) and params.get("model")
            else {}
        )
        out.append(PreparedRequest(body=req, meta=replace(meta, sha256=digest, **settings)))
    return out
