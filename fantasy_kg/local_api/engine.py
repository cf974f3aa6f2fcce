"""The "model" side of the local API: answers, usage and the prompt-cache simulation.

One engine serves both ``POST /v1/messages`` and the requests inside a Message Batch, so a
request behaves the same in both modes. Answers come from a pluggable :data:`Responder`; the
default is the rule-based baseline extractor: a baseline, not Claude, and the logs say so.
Validation and token estimates: :mod:`fantasy_kg.local_api.validation` (re-exported here).
"""

import hashlib
import importlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fantasy_kg.domain.answer import (
    FALLBACK_EFFORT,
    thinking_tokens,
)
from fantasy_kg.domain.answer import thinks as thinks_by_default
from fantasy_kg.domain.catalog import ModelInfo, get_model
from fantasy_kg.domain.errors import ConfigError
from fantasy_kg.local_api.protocol import (
    ApiError,
    Clock,
    error_body,
    new_id,
    status_for_error_type,
)
from fantasy_kg.local_api.validation import (
    CHARS_PER_TOKEN,
    COUNT_TOKENS_PARAMS,
    EXTENDED_OUTPUT_BETA,
    KNOWN_PARAMS,
    CallContext,
    PromptShape,
    count_tokens,
    cut_to_tokens,
    estimate_tokens,
    prompt_shape,
    resolve_model,
    validate_params,
)
from fantasy_kg.nlp.tagger import shared_tagger

log = logging.getLogger(__name__)

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


__all__ = [
    "CHARS_PER_TOKEN",
    "COUNT_TOKENS_PARAMS",
    "EMPTY_EXTRACTION",
    "EXTENDED_OUTPUT_BETA",
    "KNOWN_PARAMS",
    "Answerer",
    "BatchCache",
    "CallContext",
    "PromptShape",
    "Responder",
    "ResponderAnswer",
    "TimedCache",
    "batch_result",
    "count_tokens",
    "cut_to_tokens",
    "default_responder",
    "estimate_tokens",
    "normalize_answer",
    "prefix_keys",
    "prompt_shape",
    "resolve_model",
    "validate_params",
]
