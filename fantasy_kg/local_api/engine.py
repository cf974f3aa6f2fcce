"""The "model" side of the local API: params validation, token estimates, caching, answers.

One engine serves both ``POST /v1/messages`` and the requests inside a Message Batch, so a
request that fails here fails the same way in both modes: synchronously as an HTTP 400 in real
time, asynchronously as an ``errored`` result line in a batch (as the real API does).

Answers come from a pluggable :data:`Responder`. The default is the project's rule-based baseline
extractor (``fantasy_kg.domain.baseline.respond``); it is a baseline, not Claude, and everything
the local backend produces says so in its logs.
"""

import functools
import hashlib
import importlib
import json
import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fantasy_kg.domain.answer import (
    EFFORT_LEVELS,
    FALLBACK_EFFORT,
    thinking_tokens,
)
from fantasy_kg.domain.answer import thinks as thinks_by_default
from fantasy_kg.domain.catalog import ModelInfo, get_model
from fantasy_kg.domain.errors import ConfigError
from fantasy_kg.local_api.protocol import (
    NO_SAMPLING_VERSION,
    SAMPLING_PARAMS,
    ApiError,
    Clock,
    error_body,
    invalid_request,
    new_id,
    not_found,
    status_for_error_type,
)
from fantasy_kg.nlp.tagger import shared_tagger

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3.5
"""Fallback local tokenizer: 3.5 characters per Claude 4.5 token (official glossary)."""


def _load_project_estimate() -> Callable[[str, float], int] | None:
    try:
        module = importlib.import_module("fantasy_kg.domain.text.tokens")
    except ImportError:  # pragma: no cover - the sectioning module ships with the package
        return None
    estimate: Callable[[str, float], int] | None = getattr(module, "estimate_tokens", None)
    return estimate


_project_estimate = _load_project_estimate()

EXTENDED_OUTPUT_BETA = "output-300k-2026-03-24"

KNOWN_PARAMS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "cache_control",
        "container",
        "diagnostics",
        "inference_geo",
        "metadata",
        "output_config",
        "output_format",
        "service_tier",
        "speed",
        "stop_sequences",
        "stream",
        "system",
        "thinking",
        "tool_choice",
        "tools",
        "user_profile_id",
        "context_management",
        "mcp_servers",
        *SAMPLING_PARAMS,
    }
)
"""Top-level Messages params the real API knows; others get ``Extra inputs are not permitted``."""

COUNT_TOKENS_PARAMS = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "output_format",
        "cache_control",
        "context_management",
        "mcp_servers",
        *SAMPLING_PARAMS,
    }
)

EMPTY_EXTRACTION = '{"entities": [], "relationships": [], "schema_proposals": []}'


@dataclass(frozen=True)
class ResponderAnswer:
    """What a responder returns for one request.

    Attributes:
        text: The answer text (for extraction: the JSON document).
        stop_reason: ``end_turn`` normally; a responder may report others.
        input_tokens: Override the estimated prompt size (rarely needed).
        output_tokens: Override the estimated answer size.
        thinking: A thinking text to put in a ``thinking`` block before the text.
    """

    text: str
    stop_reason: str = "end_turn"
    input_tokens: int | None = None
    output_tokens: int | None = None
    thinking: str | None = None


Responder = Callable[[dict[str, Any]], "ResponderAnswer | dict[str, Any]"]
"""Turns Messages params into an answer; may return :class:`ResponderAnswer` or a dict with the
same keys (``{"text": ..., "stop_reason": ...}``), which is what the baseline returns."""


def default_responder(params: dict[str, Any]) -> ResponderAnswer:
    """Answer with the baseline extractor, or an empty extraction until that module exists."""
    try:
        respond = importlib.import_module("fantasy_kg.domain.baseline").respond
    except (ImportError, AttributeError):
        return ResponderAnswer(text=EMPTY_EXTRACTION)
    return normalize_answer(respond(params, shared_tagger()))


def normalize_answer(raw: "ResponderAnswer | dict[str, Any]") -> ResponderAnswer:
    """Accept a :class:`ResponderAnswer` or the baseline's ``{"text", "stop_reason"}`` dict."""
    if isinstance(raw, ResponderAnswer):
        return raw
    return ResponderAnswer(
        text=str(raw.get("text", "")),
        stop_reason=str(raw.get("stop_reason") or "end_turn"),
        input_tokens=raw.get("input_tokens"),
        output_tokens=raw.get("output_tokens"),
        thinking=raw.get("thinking"),
    )


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------


def estimate_tokens(text: str, model: ModelInfo) -> int:
    """Tokens of ``text`` for ``model`` under the local backend's "tokenizer".

    The local backend has no real tokenizer, so it uses the project's offline estimate
    (:func:`fantasy_kg.domain.text.tokens.estimate_tokens`, times the model's tokenizer factor):
    ``count_tokens``, usage and the context-window check then agree with how sectioning sized
    the text, and a section that fits by the estimate fits here.
    """
    if not text:
        return 0
    if len(text) >= _MEMO_MIN_CHARS:
        return _estimate_memo(text, model.tokenizer_factor)
    return _estimate(text, model.tokenizer_factor)


_MEMO_MIN_CHARS = 2000


def _estimate(text: str, factor: float) -> int:
    if _project_estimate is not None:
        return int(_project_estimate(text, factor))
    return math.ceil(len(text) / CHARS_PER_TOKEN * factor)


@functools.lru_cache(maxsize=64)
def _estimate_memo(text: str, factor: float) -> int:
    """Memoized for long texts: every request of a series repeats the same prefix and schema."""
    return _estimate(text, factor)


def cut_to_tokens(text: str, tokens: int, model: ModelInfo) -> str:
    """The longest prefix of ``text`` whose :func:`estimate_tokens` is at most ``tokens``.

    This is where a model stopped at ``max_tokens`` leaves its answer: the usage then reports
    exactly the cap, and the cut text counts no more than the room that was left. The estimate
    never decreases as a prefix grows, so a binary search finds the cut. Unmemoized on purpose:
    the probes are one-off strings that would evict the prompt prefixes from the memo.
    """
    if tokens <= 0:
        return ""
    if estimate_tokens(text, model) <= tokens:
        return text
    lo, hi = 0, len(text)  # invariant: text[:lo] fits, text[:hi] does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _estimate(text[:mid], model.tokenizer_factor) <= tokens:
            lo = mid
        else:
            hi = mid
    return text[:lo]


@dataclass(frozen=True)
class _Segment:
    text: str
    cache_ttl: str | None  # "5m"/"1h" when this block carries cache_control


@dataclass(frozen=True)
class PromptShape:
    """A request's prompt cut at its last cache breakpoint.

    Attributes:
        total_tokens: Every input token.
        prefix_tokens: Tokens up to and including the last ``cache_control`` block (0 if none).
        prefix_key: Hash of model, output format and prefix content (the cache key).
        ttl: ``5m`` or ``1h``: the TTL of the last breakpoint.
    """

    total_tokens: int
    prefix_tokens: int
    prefix_key: str
    ttl: str


def _ttl(block: Any) -> str | None:
    if not isinstance(block, dict):
        return None
    cc = block.get("cache_control")
    if not isinstance(cc, dict):
        return None
    return "1h" if cc.get("ttl") == "1h" else "5m"


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if isinstance(block, dict):
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            return str(block["text"])
        if block.get("type") == "thinking":
            return ""  # previous turns' thinking is not counted (token counting docs)
        return json.dumps({k: v for k, v in block.items() if k != "cache_control"})
    return json.dumps(block)


def _segments(params: dict[str, Any]) -> list[_Segment]:
    """The prompt in cache order: tools, output format, system, then message blocks."""
    segs: list[_Segment] = []
    for tool in params.get("tools") or []:
        segs.append(_Segment(json.dumps(tool, sort_keys=True), _ttl(tool)))
    fmt = _output_format(params)
    if fmt is not None:
        segs.append(_Segment(json.dumps(fmt, sort_keys=True), None))
    system = params.get("system")
    if isinstance(system, str):
        segs.append(_Segment(system, None))
    elif isinstance(system, list):
        segs.extend(_Segment(_block_text(b), _ttl(b)) for b in system)
    for message in params.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            segs.append(_Segment(content, None))
        elif isinstance(content, list):
            segs.extend(_Segment(_block_text(b), _ttl(b)) for b in content)
    top = params.get("cache_control")
    if isinstance(top, dict) and segs:
        # Automatic caching puts the breakpoint on the last cacheable block.
        segs[-1] = _Segment(segs[-1].text, "1h" if top.get("ttl") == "1h" else "5m")
    return segs


def _output_format(params: dict[str, Any]) -> Any:
    config = params.get("output_config")
    if isinstance(config, dict) and config.get("format") is not None:
        return config["format"]
    return params.get("output_format")


def prompt_shape(params: dict[str, Any], model: ModelInfo) -> PromptShape:
    """Measure a (validated) request's prompt and find its cacheable prefix."""
    segs = _segments(params)
    n_messages = len(params.get("messages") or [])
    overhead = 3 * n_messages
    tokens = [estimate_tokens(s.text, model) for s in segs]
    # Structured outputs inject a system prompt that explains the format: billed input that
    # precedes everything else, so it belongs to the cached prefix (changing the format
    # invalidates the cache, as the API documents). Sized here as the schema's JSON.
    fmt = _output_format(params)
    fmt_tokens = estimate_tokens(json.dumps(fmt), model) if fmt is not None else 0
    total = fmt_tokens + sum(tokens) + overhead
    last = max((i for i, s in enumerate(segs) if s.cache_ttl), default=-1)
    if last < 0:
        return PromptShape(total, 0, "", "5m")
    digest = hashlib.sha256(model.id.encode())
    if fmt is not None:
        digest.update(b"\x01" + json.dumps(fmt, sort_keys=True).encode())
    for seg in segs[: last + 1]:
        digest.update(b"\x00" + seg.text.encode("utf-8", "surrogatepass"))
    prefix_tokens = fmt_tokens + sum(tokens[: last + 1])
    return PromptShape(total, prefix_tokens, digest.hexdigest(), segs[last].cache_ttl or "5m")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallContext:
    """Headers that change how params are judged.

    Attributes:
        api_version: The request's (or, in a batch, the create call's) ``anthropic-version``.
        betas: ``anthropic-beta`` values.
        in_batch: Validating a request inside a Message Batch.
    """

    api_version: str
    betas: tuple[str, ...] = ()
    in_batch: bool = False


def resolve_model(name: Any) -> ModelInfo:
    """Find the catalog model or raise the API's 404 ``model: <name>``."""
    if not isinstance(name, str) or not name:
        raise invalid_request("model: Field required")
    try:
        return get_model(name)
    except ConfigError:
        raise not_found(f"model: {name}") from None


def _check_sampling(params: dict[str, Any], model: ModelInfo, ctx: CallContext) -> None:
    for name in SAMPLING_PARAMS:
        if name not in params:
            continue
        if ctx.api_version == NO_SAMPLING_VERSION:
            raise invalid_request(
                f"{name}: sampling parameters are not accepted in anthropic-version "
                f"{NO_SAMPLING_VERSION}; remove {name} or send anthropic-version: 2023-06-01"
            )
        if not model.accepts_sampling_params:
            raise invalid_request(f"{name}: is not supported for {model.id}")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list):
        raise invalid_request("messages: Field required")
    if not messages:
        raise invalid_request("messages: List should have at least 1 item after validation, not 0")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid_request(f"messages.{i}: Input should be a valid dictionary")
        if message.get("role") not in ("user", "assistant"):
            raise invalid_request(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if not isinstance(message.get("content"), str | list):
            raise invalid_request(f"messages.{i}.content: Field required")


def _check_effort(params: dict[str, Any]) -> None:
    config = params.get("output_config")
    if not isinstance(config, dict) or config.get("effort") is None:
        return
    if config["effort"] not in EFFORT_LEVELS:
        allowed = ", ".join(f"'{e}'" for e in EFFORT_LEVELS)
        raise invalid_request(f"output_config.effort: Input should be one of {allowed}")


def validate_params(params: Any, ctx: CallContext) -> tuple[ModelInfo, PromptShape]:
    """Check a Messages create body the way the API does and measure its prompt.

    Args:
        params: The JSON body (or a batch request's ``params``).
        ctx: API version, betas and whether this is a batch request.

    Returns:
        The catalog model and the prompt's shape.

    Raises:
        ApiError: 400 ``invalid_request_error`` or 404 ``not_found_error`` with the API's message.
    """
    if not isinstance(params, dict):
        raise invalid_request("params: Input should be a valid dictionary")
    for key in ("model", "max_tokens", "messages"):
        if key not in params:
            raise invalid_request(f"{key}: Field required")
    model = resolve_model(params["model"])
    _check_sampling(params, model, ctx)
    extra = sorted(set(params) - KNOWN_PARAMS)
    if extra:
        raise invalid_request(f"{extra[0]}: Extra inputs are not permitted")
    if params.get("stream"):
        if ctx.in_batch:
            raise invalid_request("stream: streaming is not supported in batch requests")
        raise invalid_request(
            "stream: the local backend does not stream; call messages.create without stream"
        )
    if ctx.in_batch and params.get("speed") == "fast":
        raise invalid_request("speed: Fast mode is not available with the Batch API")
    max_tokens = params["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise invalid_request("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        if ctx.in_batch:
            raise invalid_request(
                "max_tokens: Each batched request must have max_tokens of at least 1"
            )
        raise invalid_request("max_tokens: Input should be greater than or equal to 1")
    cap = model.max_output_tokens
    if (
        ctx.in_batch
        and EXTENDED_OUTPUT_BETA in ctx.betas
        and model.max_output_tokens_batch_extended
    ):
        cap = model.max_output_tokens_batch_extended
    if max_tokens > cap:
        raise invalid_request(
            f"max_tokens: {max_tokens} > {cap}, which is the maximum allowed number of output "
            f"tokens for {model.id}"
        )
    _check_messages(params["messages"])
    _check_effort(params)
    tool_choice = params.get("tool_choice")
    if (
        isinstance(tool_choice, dict)
        and tool_choice.get("type") in ("tool", "any")
        and not model.accepts_forced_tool_choice
    ):
        raise invalid_request(
            'tool_choice: type "tool" and "any" are not supported for this model.'
        )
    shape = prompt_shape(params, model)
    if shape.total_tokens > model.context_window:
        raise invalid_request(
            f"prompt is too long: {shape.total_tokens} tokens > {model.context_window} maximum"
        )
    return model, shape


def count_tokens(params: Any, ctx: CallContext) -> int:
    """``POST /v1/messages/count_tokens``: validate like Messages (minus max_tokens) and count.

    Raises:
        ApiError: as :func:`validate_params`.
    """
    if not isinstance(params, dict):
        raise invalid_request("body: Input should be a valid dictionary")
    for key in ("model", "messages"):
        if key not in params:
            raise invalid_request(f"{key}: Field required")
    model = resolve_model(params["model"])
    _check_sampling(params, model, ctx)
    extra = sorted(set(params) - COUNT_TOKENS_PARAMS)
    if extra:
        raise invalid_request(f"{extra[0]}: Extra inputs are not permitted")
    _check_messages(params["messages"])
    return prompt_shape(params, model).total_tokens


# --------------------------------------------------------------------------------------------
# Prompt-cache simulation
# --------------------------------------------------------------------------------------------


class BatchCache:
    """Cache state inside one batch: the first request per prefix writes, the others read."""

    def __init__(self, seen: set[str] | None = None) -> None:
        self.seen: set[str] = set(seen or ())

    def lookup(self, key: str, ttl: str) -> bool:
        """Return True for a hit (read), False for a miss (write); remember the prefix."""
        hit = key in self.seen
        self.seen.add(key)
        return hit


class TimedCache:
    """Cache state for real-time calls: entries live 5 minutes or 1 hour, refreshed on reads."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._expiry: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def lookup(self, key: str, ttl: str) -> bool:
        """Return True for a hit; (re)arm the entry's TTL either way."""
        now = self._clock()
        life = timedelta(hours=1) if ttl == "1h" else timedelta(minutes=5)
        with self._lock:
            expiry = self._expiry.get(key)
            hit = expiry is not None and expiry > now
            self._expiry[key] = now + life
            return hit


def _usage(
    shape: PromptShape,
    model: ModelInfo,
    cache: "BatchCache | TimedCache",
    output_tokens: int,
    thinking_tokens: int,
    service_tier: str,
    answer: ResponderAnswer,
) -> dict[str, Any]:
    total = answer.input_tokens if answer.input_tokens is not None else shape.total_tokens
    write_5m = write_1h = read = 0
    prefix = shape.prefix_tokens
    if shape.prefix_key and prefix >= model.min_cacheable_prefix_tokens and prefix <= total:
        if cache.lookup(shape.prefix_key, shape.ttl):
            read = prefix
        elif shape.ttl == "1h":
            write_1h = prefix
        else:
            write_5m = prefix
    usage: dict[str, Any] = {
        "input_tokens": total - write_5m - write_1h - read,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_read_input_tokens": read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": write_5m,
            "ephemeral_1h_input_tokens": write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": service_tier,
        "server_tool_use": None,
    }
    if thinking_tokens:
        usage["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
    return usage


# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmulatedThinking:
    """Thinking the local backend bills for one answer (it does not really think).

    Attributes:
        tokens: Thinking tokens, counted in ``usage.output_tokens`` and toward ``max_tokens``.
        effort: The effort level they were sized for.
    """

    tokens: int
    effort: str

    @property
    def summary(self) -> str:
        """Text of the ``thinking`` block: the real API also shows less than it bills."""
        return (
            f"Emulated thinking by the fantasy_kg local backend (not Claude): {self.tokens} "
            f"tokens billed at effort {self.effort}, sized by fantasy_kg.domain.answer."
        )


def emulated_thinking(
    params: dict[str, Any], model: ModelInfo, answer_tokens: int
) -> EmulatedThinking | None:
    """How much thinking a (validated) request gets before an answer of ``answer_tokens``.

    Follows the API: a model thinks when its catalog ``thinking_default`` says so (unless the
    request sends ``thinking: {"type": "disabled"}`` and the model allows that) or when the
    request enables thinking; ``budget_tokens`` caps it. The size comes from
    :func:`fantasy_kg.domain.answer.thinking_tokens` at ``output_config.effort`` (or the
    model's default effort), the same rule the pre-flight estimate uses.
    """
    raw = params.get("thinking")
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "disabled" and model.thinking_default != "always":
        return None
    if kind not in ("enabled", "adaptive") and not thinks_by_default(model):
        return None
    config = params.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    level = effort if isinstance(effort, str) else model.default_effort or FALLBACK_EFFORT
    tokens = thinking_tokens(level, answer_tokens)
    budget = raw.get("budget_tokens") if isinstance(raw, dict) else None
    if kind == "enabled" and isinstance(budget, int) and not isinstance(budget, bool):
        tokens = min(tokens, max(0, budget))
    return EmulatedThinking(tokens, level) if tokens > 0 else None


def _signature(thinking: str, model: ModelInfo) -> str:
    """Deterministic stand-in for the API's thinking signature (same request, same message)."""
    return hashlib.sha256(f"{model.id}\x00{thinking}".encode()).hexdigest()[:32]


_THINKING_TEXT = (
    "The local baseline extractor does not think; this block exists so clients prove they "
    "select content blocks by type."
)
_REFUSAL_EXPLANATION = "Refused by fault injection on the local backend (not a real refusal)."
_INVALID_JSON = 'Here is the extraction you asked for: {"entities": [{"id": "oops", '
_SCHEMA_INVALID = json.dumps(
    {"entities": [{"id": 42, "name": None, "type": ["CHARACTER"]}], "relationships": "none"}
)


@dataclass
class Answerer:
    """Builds Message objects from validated params: responder + overrides + usage.

    Attributes:
        responder: Where answer texts come from.
        thinking_always: Put a thinking block before every text block.
    """

    responder: Responder = default_responder
    thinking_always: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _billed: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    def billed_usage(self) -> dict[str, dict[str, int]]:
        """What this answerer has billed so far, per model id (a copy).

        Every answered request counts once, real time and batch alike: ``requests``,
        ``batch_requests``, ``input_tokens``, ``cache_creation_input_tokens``,
        ``cache_read_input_tokens``, ``output_tokens`` (thinking included),
        ``thinking_tokens`` and ``max_tokens_stops``. Lets a test or the bench compare what a
        run planned with what the server billed, without reading result files.
        """
        with self._lock:
            return {model: dict(totals) for model, totals in self._billed.items()}

    def _bill(self, model: ModelInfo, message: dict[str, Any]) -> None:
        usage = message["usage"]
        details = usage.get("output_tokens_details") or {}
        add = {
            "requests": 1,
            "batch_requests": 1 if usage.get("service_tier") == "batch" else 0,
            "input_tokens": int(usage["input_tokens"]),
            "cache_creation_input_tokens": int(usage["cache_creation_input_tokens"]),
            "cache_read_input_tokens": int(usage["cache_read_input_tokens"]),
            "output_tokens": int(usage["output_tokens"]),
            "thinking_tokens": int(details.get("thinking_tokens") or 0),
            "max_tokens_stops": 1 if message["stop_reason"] == "max_tokens" else 0,
        }
        with self._lock:
            totals = self._billed.setdefault(model.id, {})
            for key, value in add.items():
                totals[key] = totals.get(key, 0) + value

    def message(
        self,
        params: dict[str, Any],
        model: ModelInfo,
        shape: PromptShape,
        cache: "BatchCache | TimedCache",
        service_tier: str,
        override: dict[str, Any] | None = None,
        label: str = "messages.create",
    ) -> dict[str, Any]:
        """Answer one validated request with a Message object.

        The responder writes its whole answer; this method plays the model around it. A model
        that thinks (see :func:`emulated_thinking`) bills thinking tokens first and shows a
        ``thinking`` block before the text. When thinking plus answer exceed ``max_tokens`` the
        answer is cut where the cap falls, ``usage.output_tokens`` is ``max_tokens`` and the
        stop reason is ``max_tokens``, exactly what Claude does, and a warning is logged. The
        answer is never shortened to fit.

        Args:
            params: The validated request body.
            model: Its catalog model.
            shape: Its measured prompt.
            cache: Prompt-cache state (batch or real time).
            service_tier: ``batch`` or ``standard``, reported in usage.
            override: A fault-plan result override, if any.
            label: Names the request in log lines (a batch request's custom_id).

        Raises:
            ApiError: for an ``errored`` override (status from its error type), or when the
                responder itself fails (500 ``api_error``; the cause is logged).
        """
        kind = (override or {}).get("kind")
        if kind == "errored":
            raise _override_error(override or {})
        if kind in ("expired", "canceled"):
            raise ApiError(500, f"injected {kind} result cannot be sent by /v1/messages")
        if kind == "text":
            answer = ResponderAnswer(
                text=str((override or {}).get("text", "")),
                stop_reason=str((override or {}).get("stop_reason") or "end_turn"),
            )
        else:
            answer = self._ask(params)
        text, stop_reason = answer.text, answer.stop_reason
        stop_details: dict[str, Any] | None = None
        if kind == "refusal":
            text = (override or {}).get("text") or ""
            stop_reason = "refusal"
            stop_details = {
                "type": "refusal",
                "category": None,
                "explanation": _REFUSAL_EXPLANATION,
            }
        elif kind == "invalid_json":
            text = (override or {}).get("text") or _INVALID_JSON
        elif kind == "schema_invalid":
            text = (override or {}).get("text") or _SCHEMA_INVALID
        answer_tokens = estimate_tokens(text, model)
        thinking = answer.thinking
        thinking_tokens = estimate_tokens(thinking or "", model)
        if thinking is None and kind not in ("text", "refusal") and answer.output_tokens is None:
            emulated = emulated_thinking(params, model, answer_tokens)
            if emulated is not None:
                thinking, thinking_tokens = emulated.summary, emulated.tokens
        if thinking is None and (self.thinking_always or kind == "thinking"):
            thinking = _THINKING_TEXT
            thinking_tokens = estimate_tokens(thinking, model)
        max_tokens = int(params["max_tokens"])
        output_tokens = (
            answer.output_tokens
            if answer.output_tokens is not None
            else answer_tokens + thinking_tokens
        )
        if kind in ("max_tokens", "model_context_window_exceeded"):
            text = text[: max(1, len(text) // 2)]
            stop_reason = str(kind)
            if kind == "max_tokens":
                output_tokens = max_tokens
                thinking_tokens = min(thinking_tokens, max_tokens)
        elif output_tokens > max_tokens:
            # A real model stops at max_tokens: the JSON is cut, the client must split the work.
            log.warning(
                "local API: answer to %s cut at max_tokens=%d (%s needed %d output tokens: "
                "%d thinking + %d answer); stop_reason max_tokens, the client must split it",
                label,
                max_tokens,
                model.id,
                output_tokens,
                thinking_tokens,
                output_tokens - thinking_tokens,
            )
            thinking_tokens = min(thinking_tokens, max_tokens)
            text = cut_to_tokens(text, max_tokens - thinking_tokens, model)
            output_tokens, stop_reason = max_tokens, "max_tokens"
        room_in_window = model.context_window - shape.total_tokens
        if output_tokens > room_in_window and stop_reason != "refusal":
            thinking_tokens = min(thinking_tokens, max(0, room_in_window))
            text = cut_to_tokens(text, room_in_window - thinking_tokens, model)
            output_tokens = max(0, room_in_window)
            stop_reason = "model_context_window_exceeded"
        content: list[dict[str, Any]] = []
        if thinking:
            content.append(
                {"type": "thinking", "thinking": thinking, "signature": _signature(thinking, model)}
            )
        if text or stop_reason not in ("refusal", "max_tokens"):
            content.append({"type": "text", "text": text})
        message = {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": model.id,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "stop_details": stop_details,
            "usage": _usage(
                shape, model, cache, output_tokens, thinking_tokens, service_tier, answer
            ),
            "container": None,
        }
        self._bill(model, message)
        return message

    def _ask(self, params: dict[str, Any]) -> ResponderAnswer:
        try:
            return normalize_answer(self.responder(params))
        except ApiError:
            raise
        except Exception:
            log.exception("local responder failed")
            raise ApiError(500, "Internal server error: the local responder failed") from None


def _override_error(override: dict[str, Any]) -> ApiError:
    error_type = str(override.get("error_type") or "api_error")
    message = str(override.get("message") or f"injected {error_type}")
    return ApiError(status_for_error_type(error_type), message, error_type)


def batch_result(
    answerer: Answerer,
    params: Any,
    ctx: CallContext,
    cache: BatchCache,
    override: dict[str, Any] | None,
    label: str = "a batch request",
) -> dict[str, Any]:
    """The ``result`` object of one batch request (succeeded/errored/canceled/expired).

    Params are validated here, at processing time, as the real API does: a bad request in a batch
    becomes an ``errored`` line, never a failed create.
    """
    kind = (override or {}).get("kind")
    if kind in ("expired", "canceled"):
        return {"type": kind}
    if kind == "errored":
        err = _override_error(override or {})
        return {"type": "errored", "error": err.body(None)}
    try:
        model, shape = validate_params(params, ctx)
        message = answerer.message(params, model, shape, cache, "batch", override, label)
    except ApiError as exc:
        return {
            "type": "errored",
            "error": error_body(exc.error_type, exc.message, None, exc.details),
        }
    return {"type": "succeeded", "message": message}


def prefix_keys(requests: Sequence[dict[str, Any]]) -> set[str]:
    """Cache keys of requests already answered (to rebuild a batch's cache after a restart)."""
    keys: set[str] = set()
    for request in requests:
        params = request.get("params")
        if not isinstance(params, dict):
            continue
        try:
            model = get_model(str(params.get("model", "")))
        except ConfigError:
            continue
        shape = prompt_shape(params, model)
        if shape.prefix_key and shape.prefix_tokens >= model.min_cacheable_prefix_tokens:
            keys.add(shape.prefix_key)
    return keys
