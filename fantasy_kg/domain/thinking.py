"""How much a model thinks before it answers: one table for the plan and for the emulator.

Thinking tokens are billed as output and count toward ``max_tokens`` (reference/anthropic_api.md
§7.2, §7.3), so the pre-flight estimate has to budget for them and the local backend has to
report them in ``usage`` when it plays a model that thinks. Both read this module, so what the
plan expects is exactly what the loopback server bills: a run that fits by the plan fits on the
emulator, and a cost estimate can be checked against emulated usage.

The rule (an emulation, not a measurement of Claude): a model that thinks spends
``THINKING_FRACTION[effort]`` of its answer's tokens on thinking, counted on an answer of at
least :data:`THINKING_MIN_ANSWER_TOKENS` (reading the section and planning the answer costs
something even when the answer is short)::

    thinking = ceil(THINKING_FRACTION[effort] x max(answer_tokens, THINKING_MIN_ANSWER_TOKENS))

Fractions: ``low`` 0.1, ``medium`` 0.25, ``high`` 0.5, ``xhigh`` 0.8, ``max`` 1.0. ``max`` matches
the older estimate ("the same again on top" for thinking models); the others fall off with the
effort, as §7.3 says thinking does. Models whose catalog ``thinking_default`` is ``off`` do not
think unless the request asks for it, so their allowance is 0. The function is pure and
deterministic: the same request gets the same usage, which idempotency tests rely on.
"""

import math
from typing import Final

from fantasy_kg.domain.catalog import ModelInfo

EFFORT_LEVELS: Final[tuple[str, ...]] = ("low", "medium", "high", "xhigh", "max")
"""``output_config.effort`` values the API accepts, lowest first."""

THINKING_FRACTION: Final[dict[str, float]] = {
    "low": 0.1,
    "medium": 0.25,
    "high": 0.5,
    "xhigh": 0.8,
    "max": 1.0,
}
"""Thinking tokens per answer token at each effort level."""

THINKING_MIN_ANSWER_TOKENS: Final[int] = 1024
"""Thinking is sized on an answer of at least this many tokens (the floor of the rule)."""

FALLBACK_EFFORT: Final[str] = "high"
"""Effort of a thinking model whose catalog row names no default (the API's usual default)."""


def thinks_by_default(model: ModelInfo) -> bool:
    """Whether ``model`` thinks when the request says nothing about thinking."""
    return model.thinking_default != "off"


def effective_effort(effort: str | None, model: ModelInfo) -> str | None:
    """The effort a request runs at on ``model``, or ``None`` when the model does not think.

    Args:
        effort: The request's ``output_config.effort`` (``None`` when not sent).
        model: The catalog model.

    Returns:
        ``effort``, else the model's ``default_effort``, else :data:`FALLBACK_EFFORT`; ``None``
        for models that do not think by default.

    Raises:
        ValueError: for an effort outside :data:`EFFORT_LEVELS`.
    """
    if effort is not None and effort not in THINKING_FRACTION:
        raise ValueError(f"unknown effort {effort!r}; use one of {', '.join(EFFORT_LEVELS)}")
    if not thinks_by_default(model):
        return None
    return effort or model.default_effort or FALLBACK_EFFORT


def thinking_tokens(effort: str, answer_tokens: int) -> int:
    """Thinking tokens spent at ``effort`` before an answer of ``answer_tokens`` tokens.

    Raises:
        ValueError: for an effort outside :data:`EFFORT_LEVELS`.
    """
    fraction = THINKING_FRACTION.get(effort)
    if fraction is None:
        raise ValueError(f"unknown effort {effort!r}; use one of {', '.join(EFFORT_LEVELS)}")
    return math.ceil(fraction * max(answer_tokens, THINKING_MIN_ANSWER_TOKENS))


def thinking_allowance(effort: str | None, model: ModelInfo, answer_tokens: int) -> int:
    """Thinking tokens to budget (or bill) for one answer of ``answer_tokens`` on ``model``.

    The pre-flight estimate and the local backend's emulated usage both call this, so plan and
    emulation agree. 0 for models that do not think by default.

    Args:
        effort: The request's ``output_config.effort``; ``None`` = the model's default.
        model: The catalog model.
        answer_tokens: Expected (or actual) tokens of the answer text, thinking excluded.

    Raises:
        ValueError: for an effort outside :data:`EFFORT_LEVELS`.
    """
    level = effective_effort(effort, model)
    return 0 if level is None else thinking_tokens(level, answer_tokens)
