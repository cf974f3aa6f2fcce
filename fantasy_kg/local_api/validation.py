"""Request validation and token estimates of the local API, as the real API applies them.

Unknown params, sampling params on the new API version, malformed messages, effort, context
window and output cap: a request that fails here fails the same way in real time (HTTP 400) and
in a batch (an ``errored`` line). Also how many tokens a prompt has, and its cacheable shape.
"""

import functools
import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fantasy_kg.domain.answer import (
    EFFORT_LEVELS,
)
from fantasy_kg.domain.catalog import ModelInfo, get_model
from fantasy_kg.domain.errors import ConfigError
from fantasy_kg.domain.text.tokens import estimate_tokens as project_estimate_tokens
from fantasy_kg.local_api.protocol import (
    NO_SAMPLING_VERSION,
    SAMPLING_PARAMS,
    invalid_request,
    not_found,
)

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 3.5
"""Fallback local tokenizer: 3.5 characters per Claude 4.5 token (official glossary)."""


#: The project's calibrated estimate (the same one sectioning and pre-flight use).
_project_estimate: Callable[[str, float], int] | None = project_estimate_tokens

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
    model = _check_body(params, ctx, "params", ("model", "max_tokens", "messages"), KNOWN_PARAMS)
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


def _check_body(
    params: Any,
    ctx: CallContext,
    name: str,
    required: tuple[str, ...],
    allowed: frozenset[str],
) -> ModelInfo:
    """The checks Messages and count_tokens share, in the API's order; returns the model.

    ``name`` is what the API calls the body in its "valid dictionary" message (``params`` for
    Messages, ``body`` for count_tokens).
    """
    if not isinstance(params, dict):
        raise invalid_request(f"{name}: Input should be a valid dictionary")
    for key in required:
        if key not in params:
            raise invalid_request(f"{key}: Field required")
    model = resolve_model(params["model"])
    _check_sampling(params, model, ctx)
    extra = sorted(set(params) - allowed)
    if extra:
        raise invalid_request(f"{extra[0]}: Extra inputs are not permitted")
    return model


def count_tokens(params: Any, ctx: CallContext) -> int:
    """``POST /v1/messages/count_tokens``: validate like Messages (minus max_tokens) and count.

    Raises:
        ApiError: as :func:`validate_params`.
    """
    model = _check_body(params, ctx, "body", ("model", "messages"), COUNT_TOKENS_PARAMS)
    _check_messages(params["messages"])
    return prompt_shape(params, model).total_tokens
