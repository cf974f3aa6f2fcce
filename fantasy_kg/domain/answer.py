"""How big an extraction answer will be, and how big a section may be so that it fits.

Why it works this way: docs/architecture.md, "Text, sections and answer sizing".
"""

import math
from dataclasses import dataclass

from fantasy_kg.domain.catalog import ModelInfo
from fantasy_kg.domain.errors import ConfigError

EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")
"""``output_config.effort`` values the API accepts (reference §1.2)."""

DEFAULT_EFFORT = "low"
"""Effort sent with extraction requests on models that think. Extraction is reading, not
reasoning: the reference (§7.3) advises ``low`` for high-volume extraction on 5.x models, where
the default (``high`` on Sonnet 5.5) spends output tokens, billed at the output price, on
thinking that does not add entities."""

DEFAULT_OUTPUT_RATIO = 0.15
"""Answer tokens per section token: the batch-extraction guide's own 15 %."""

ANSWER_MARGIN = 1.5
"""Headroom over the expected answer: dense chapters (a battle, a council, a genealogy) name
far more people per page than the average, and a cut answer costs a whole extra batch round."""

MIN_ANSWER_TOKENS = 256
"""Even a paragraph's answer carries the JSON skeleton and a few entities."""

DEFAULT_MAX_TOKENS = 32_000
"""Default ``max_tokens`` (capped at the model's output limit, 64K or 128K). It is a ceiling,
not a cost: billing counts the tokens written. At the default section cap the expected answer
with thinking at ``low`` is about 3,000 tokens, so 32,000 leaves a 10x guard against a dense
section, while reserving little of a 200K window; on 64K-cap models it is half the cap."""

DEFAULT_MAX_SECTION_TOKENS = 16_000
"""Default cap on a section's text tokens, chosen for recall as well as fit. Extractors lose
facts on long inputs: GraphRAG reports that 600-token chunks yield about twice the entity
references of 2,400-token ones and defaults to 1,200; LightRAG defaults to 1,200 and stops
gleaning above 20,480 input tokens. Claude reads long inputs far better than the models those
numbers came from, and every section repeats the cached prefix (instructions and ontology), so
16,000 tokens (two to four chapters of a novel) keeps a whole scene with its cast in one
request, stays under LightRAG's 20,480 ceiling, and keeps the prefix to a small, mostly
cache-read share of the input (see the README for ``fantasy-kg estimate`` on Oz)."""

THINKING_FACTOR = {"low": 0.25, "medium": 0.5, "high": 1.0, "xhigh": 1.5, "max": 2.0}
"""Expected thinking tokens per answer token, by effort."""

THINKING_FLOOR = {"low": 256, "medium": 512, "high": 1024, "xhigh": 2048, "max": 4096}
"""Expected thinking tokens at least, by effort: even a short answer is thought about."""


FALLBACK_EFFORT = "high"
"""Effort of a thinking model whose catalog row names no default (the API's usual default)."""


def thinking_tokens(effort: str, answer_tokens: int) -> int:
    """The thinking rule alone: ``max(floor, ceil(factor x answer))`` at ``effort``.

    Raises:
        ConfigError: unknown effort.
    """
    level = check_effort(effort) or FALLBACK_EFFORT
    return max(THINKING_FLOOR[level], math.ceil(THINKING_FACTOR[level] * answer_tokens))


def thinks(model: ModelInfo) -> bool:
    """Whether the model thinks by default (adaptive or always-on thinking, billed as output)."""
    return model.thinking_default != "off"


def check_effort(effort: str | None) -> str | None:
    """Validate an effort name.

    Raises:
        ConfigError: not one of :data:`EFFORT_LEVELS`.
    """
    if effort is None:
        return None
    value = effort.strip().lower()
    if value not in EFFORT_LEVELS:
        raise ConfigError(
            f"unknown effort {effort!r}: use one of {', '.join(EFFORT_LEVELS)} (--effort)"
        )
    return value


def request_effort(model: ModelInfo, effort: str | None) -> str | None:
    """The effort to send: ``None`` on models that do not think, else ``effort`` or the default.

    Models without thinking reject ``output_config.effort`` or ignore it, so it is not sent.
    """
    if not thinks(model):
        return None
    return check_effort(effort) or DEFAULT_EFFORT


def effective_effort(model: ModelInfo, sent: str | None) -> str | None:
    """The effort a request runs at: what it sends, else the model's default (None: no thinking)."""
    if not thinks(model):
        return None
    return check_effort(sent) or model.default_effort or FALLBACK_EFFORT


def default_max_tokens(model: ModelInfo) -> int:
    """:data:`DEFAULT_MAX_TOKENS`, capped at the model's output limit."""
    return min(DEFAULT_MAX_TOKENS, model.max_output_tokens)


def thinking_allowance(effort: str | None, model: ModelInfo, answer_tokens: int) -> int:
    """Expected thinking tokens for an answer of ``answer_tokens`` at ``effort``.

    ``effort`` is the effective effort (:func:`effective_effort`); ``None`` or a model that does
    not think gives 0. The local backend emulates exactly this much thinking, so the cost it
    bills and the estimate agree by construction; against Claude it is a planning figure that
    the actual ``usage`` replaces.
    """
    if effort is None or not thinks(model):
        return 0
    return thinking_tokens(effort, answer_tokens)


@dataclass(frozen=True)
class AnswerSize:
    """The expected answer of one request.

    Attributes:
        section_tokens: Tokens of the section text (the request body, without the prefix).
        answer_tokens: Expected JSON answer tokens.
        thinking_tokens: Expected thinking tokens (0 on models that do not think).
        effort: The effective effort (``None``: no thinking).
        required_tokens: ``(answer + thinking) x margin``: what ``max_tokens`` must hold.
        max_tokens: The request's ``max_tokens``.
    """

    section_tokens: int
    answer_tokens: int
    thinking_tokens: int
    effort: str | None
    required_tokens: int
    max_tokens: int

    @property
    def output_tokens(self) -> int:
        """Expected billed output: the answer plus thinking (thinking is billed as output)."""
        return self.answer_tokens + self.thinking_tokens

    @property
    def fits(self) -> bool:
        """Whether the expected answer, with its margin, fits ``max_tokens``."""
        return self.required_tokens <= self.max_tokens


def expected_answer(
    section_tokens: int,
    model: ModelInfo,
    *,
    max_tokens: int,
    effort: str | None,
    output_ratio: float = DEFAULT_OUTPUT_RATIO,
    margin: float = ANSWER_MARGIN,
) -> AnswerSize:
    """Expected answer size of a section of ``section_tokens`` tokens.

    Args:
        section_tokens: Tokens of the section text.
        model: The model (does it think?).
        max_tokens: The request's ``max_tokens``.
        effort: The effective effort (:func:`effective_effort`).
        output_ratio: Answer tokens per section token.
        margin: Safety factor on the expected answer.
    """
    answer = max(MIN_ANSWER_TOKENS, math.ceil(output_ratio * max(0, section_tokens)))
    thinking = thinking_allowance(effort, model, answer)
    return AnswerSize(
        section_tokens=section_tokens,
        answer_tokens=answer,
        thinking_tokens=thinking,
        effort=effort,
        required_tokens=math.ceil((answer + thinking) * margin),
        max_tokens=max_tokens,
    )


def max_section_tokens_for_answer(
    model: ModelInfo,
    *,
    max_tokens: int,
    effort: str | None,
    output_ratio: float = DEFAULT_OUTPUT_RATIO,
    margin: float = ANSWER_MARGIN,
) -> int:
    """The largest section whose expected answer fits ``max_tokens`` (0 when none does).

    ``answer + max(floor, f x answer) <= max_tokens / margin`` holds exactly when both
    ``answer + floor`` and ``answer x (1 + f)`` are within it, which gives the closed form.
    """
    room = max_tokens / margin
    if effort is None or not thinks(model):
        answer_max = room
    else:
        level = check_effort(effort) or FALLBACK_EFFORT
        answer_max = min(room / (1 + THINKING_FACTOR[level]), room - THINKING_FLOOR[level])
    if answer_max < MIN_ANSWER_TOKENS:
        return 0
    # Step down past ceil() rounding so that the returned size itself fits.
    size = math.floor(answer_max / output_ratio)
    while (
        size > 0
        and not expected_answer(
            size,
            model,
            max_tokens=max_tokens,
            effort=effort,
            output_ratio=output_ratio,
            margin=margin,
        ).fits
    ):
        size -= max(1, size // 1000)
    return max(0, size)


def check_output_ratio(ratio: float) -> float:
    """Validate ``--output-ratio``.

    Raises:
        ConfigError: outside (0, 2].
    """
    if not 0 < ratio <= 2:
        raise ConfigError(f"output ratio {ratio} is outside (0, 2]: pass e.g. --output-ratio 0.15")
    return ratio


def answer_fit_hint(size: AnswerSize, model: ModelInfo, output_ratio: float) -> str:
    """The fix for a section whose answer does not fit: the section size that would."""
    limit = max_section_tokens_for_answer(
        model, max_tokens=size.max_tokens, effort=size.effort, output_ratio=output_ratio
    )
    parts = []
    if limit > 0:
        parts.append(f"re-section with --max-section-tokens {limit:,} or less")
    if size.max_tokens < model.max_output_tokens:
        parts.append(f"raise --max-tokens (up to {model.max_output_tokens:,})")
    if size.effort not in (None, "low"):
        parts.append("lower --effort")
    return ", or ".join(parts) or "use a model with a larger output cap"


def describe_answer(size: AnswerSize, output_ratio: float) -> str:
    """``~2,400 answer (15% of 16,000) + ~600 thinking (low) x1.5 = 4,500 of max_tokens 32,000``."""
    thinking = (
        f" + ~{size.thinking_tokens:,} thinking ({size.effort})" if size.thinking_tokens else ""
    )
    return (
        f"expected answer ~{size.answer_tokens:,} tokens ({output_ratio:.0%} of "
        f"{size.section_tokens:,}){thinking} x{ANSWER_MARGIN:g} margin = "
        f"{size.required_tokens:,} of max_tokens {size.max_tokens:,}"
    )
