"""Pre-flight cost estimate from section meta files: the guide's tables, per series and in total.

Why it works this way: docs/architecture.md, "Cost estimates".
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Literal

from fantasy_kg.domain import answer as answer_sizing
from fantasy_kg.domain.answer import AnswerSize
from fantasy_kg.domain.catalog import ModelInfo, get_model
from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.domain.sections import SectionMeta, read_sections

Style = Literal["exact", "guide"]

DEFAULT_OUTPUT_RATIO = answer_sizing.DEFAULT_OUTPUT_RATIO
GUIDE_MODELS = ("claude-opus-4-5", "claude-sonnet-4-5")
"""The models of the guide's two tables (what ``--style guide`` shows when no model is given)."""

_CENT = Decimal("0.01")
_MTOK = Decimal(1_000_000)

CACHE_ASSUMPTION = (
    "cached prefix: 1-hour TTL; per series the first request writes the prefix at 2x the input "
    "price and the others read it at the cache-read price, all at the batch discount (best case; "
    "batch cache hits are best-effort)"
)


@dataclass(frozen=True)
class SeriesTokens:
    """The token facts of one series' sections, as read from meta files."""

    series: str
    section_tokens: tuple[int, ...]
    prefix_tokens: int = 0
    token_model: str | None = None
    token_count_method: str = ""
    section_numbers: tuple[int, ...] = ()
    max_tokens: int | None = None
    """The ``max_tokens`` the sections were planned for (from their meta files), if recorded."""

    @property
    def sections(self) -> int:
        """Number of sections."""
        return len(self.section_tokens)

    @property
    def input_tokens(self) -> int:
        """Sum of the sections' input tokens."""
        return sum(self.section_tokens)


@dataclass(frozen=True)
class CostRow:
    """One row of the table (a series or the total). Dollar amounts are exact Decimals."""

    series: str
    sections: int
    input_tokens: int
    output_tokens: Decimal
    realtime_usd: Decimal
    batch_usd: Decimal
    savings_usd: Decimal
    prefix_tokens: int
    batch_with_prefix_usd: Decimal
    batch_cached_prefix_usd: Decimal
    input_tokens_priced: int | None = None
    output_tokens_priced: int | None = None
    tokens_scaled: bool = False
    input_tokens_model: int = 0
    """Input tokens in the priced model's tokenizer (``input_tokens`` unless scaled)."""
    thinking_tokens: Decimal = Decimal(0)
    """Expected thinking tokens (part of ``output_tokens``; 0 on models that do not think)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; dollars rounded half-up to cents."""
        out: dict[str, Any] = {
            "series": self.series,
            "sections": self.sections,
            "input_tokens": self.input_tokens,
            "output_tokens": round_half_up(self.output_tokens, Decimal(1)),
            "realtime_usd": float(cents(self.realtime_usd)),
            "batch_usd": float(cents(self.batch_usd)),
            # Shown as the difference of the rounded columns, so every printed row adds up.
            "savings_usd": float(cents(self.realtime_usd) - cents(self.batch_usd)),
            "prefix_tokens": self.prefix_tokens,
            "batch_with_prefix_usd": float(cents(self.batch_with_prefix_usd)),
            "batch_cached_prefix_usd": float(cents(self.batch_cached_prefix_usd)),
            "tokens_scaled": self.tokens_scaled,
            "input_tokens_model": self.input_tokens_model or self.input_tokens,
            "thinking_tokens": round_half_up(self.thinking_tokens, Decimal(1)),
        }
        if self.input_tokens_priced is not None:
            out["input_tokens_priced"] = self.input_tokens_priced
        if self.output_tokens_priced is not None:
            out["output_tokens_priced"] = self.output_tokens_priced
        return out


@dataclass(frozen=True)
class SectionFit:
    """One section's expected answer against ``max_tokens``."""

    series: str
    section: int
    answer: AnswerSize

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        a = self.answer
        return {
            "series": self.series,
            "section": self.section,
            "section_tokens": a.section_tokens,
            "answer_tokens": a.answer_tokens,
            "thinking_tokens": a.thinking_tokens,
            "required_tokens": a.required_tokens,
            "max_tokens": a.max_tokens,
            "fits": a.fits,
        }


@dataclass(frozen=True)
class ModelEstimate:
    """The table for one model, and every section's answer fit."""

    model: ModelInfo
    style: Style
    output_ratio: float
    rows: tuple[CostRow, ...]
    total: CostRow
    effort: str | None = None
    fits: tuple[SectionFit, ...] = ()

    @property
    def misfits(self) -> list[SectionFit]:
        """Sections whose expected answer cannot fit ``max_tokens``."""
        return [f for f in self.fits if not f.answer.fits]

    def tightest(self, series: str | None = None) -> SectionFit | None:
        """The section (of ``series``, or of all) that needs the largest share of max_tokens."""
        pool = [f for f in self.fits if series is None or f.series == series]
        return max(pool, key=lambda f: f.answer.required_tokens / f.answer.max_tokens, default=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        p = self.model.price_per_mtok
        return {
            "model": self.model.id,
            "display_name": self.model.display_name,
            "style": self.style,
            "output_ratio": self.output_ratio,
            "prices_per_mtok": {
                "input": p.input,
                "output": p.output,
                "cache_write_1h": p.cache_write_1h,
                "cache_read": p.cache_read,
                "batch_discount": self.model.batch_discount,
            },
            "effort": self.effort,
            "series": [r.to_dict() for r in self.rows],
            "total": self.total.to_dict(),
            "sections": [f.to_dict() for f in self.fits],
        }


def round_half_up(value: Decimal, quantum: Decimal) -> int | Decimal:
    """Round half-up to ``quantum``; an int when the quantum is 1."""
    rounded = value.quantize(quantum, rounding=ROUND_HALF_UP)
    return int(rounded) if quantum == 1 else rounded


def cents(value: Decimal) -> Decimal:
    """Dollars rounded half-up to cents (the guide's rounding)."""
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def round_sig(value: Decimal | int, digits: int = 3) -> int:
    """Round to ``digits`` significant figures, half-up (1,562,150 -> 1,560,000)."""
    value = Decimal(value)
    if value == 0:
        return 0
    exponent = value.adjusted() - digits + 1
    quantum = Decimal(1).scaleb(exponent)
    return int(value.quantize(quantum, rounding=ROUND_HALF_UP))


def human_tokens(value: int | Decimal, digits: int = 3) -> str:
    """``1.56M``, ``234K``, ``1.7M``: three significant figures, trailing zeros dropped."""
    n = Decimal(round_sig(value, digits))
    for unit, size in (("M", Decimal(1_000_000)), ("K", Decimal(1000))):
        if n >= size:
            text = format((n / size).normalize(), "f")
            return f"{text}{unit}"
    return str(int(n))


def _d(value: float) -> Decimal:
    return Decimal(str(value))


def _scale(series: SeriesTokens, model: ModelInfo) -> tuple[Decimal, bool]:
    """Factor that converts the series' counts to ``model``'s tokenizer."""
    source = 1.0
    if series.token_model:
        try:
            source = get_model(series.token_model).tokenizer_factor
        except Exception:  # an unknown model in an old meta file: assume the guide's tokenizer
            source = 1.0
    if source == model.tokenizer_factor:
        return Decimal(1), False
    return _d(model.tokenizer_factor) / _d(source), True


def _prefix_costs(
    model: ModelInfo, prefix: Decimal, requests: int, base_input: Decimal
) -> tuple[Decimal, Decimal]:
    """Real-time dollars the prefix adds to a series: uncached, and cached with the 1-hour TTL."""
    p = model.price_per_mtok
    uncached = prefix * requests * base_input / _MTOK
    if requests == 0 or prefix < model.min_cacheable_prefix_tokens:
        return uncached, uncached
    write = prefix * _d(p.cache_write_1h) / _MTOK
    reads = prefix * (requests - 1) * _d(p.cache_read) / _MTOK
    return uncached, write + reads


def _thinking(model: ModelInfo, effort: str | None, answer_tokens: Decimal) -> Decimal:
    """Expected thinking tokens for an answer (0 without thinking)."""
    if effort is None:
        return Decimal(0)
    return Decimal(answer_sizing.thinking_allowance(effort, model, int(answer_tokens)))


def _row_exact(
    series: SeriesTokens, model: ModelInfo, ratio: Decimal, effort: str | None = None
) -> CostRow:
    scale, scaled = _scale(series, model)
    discount = _d(model.batch_discount)
    realtime = Decimal(0)
    out_total = Decimal(0)
    thinking_total = Decimal(0)
    prefix = series.prefix_tokens * scale
    prefix_uncached = Decimal(0)
    for tokens in series.section_tokens:
        t_in = tokens * scale
        thinking = _thinking(model, effort, t_in * ratio)
        thinking_total += thinking
        t_out = t_in * ratio + thinking
        prompt = int(t_in + prefix)
        prices = model.prices_for_prompt(prompt)
        realtime += (t_in * _d(prices.input) + t_out * _d(prices.output)) / _MTOK
        prefix_uncached += prefix * _d(prices.input) / _MTOK
        out_total += t_out
    _, prefix_cached = _prefix_costs(model, prefix, series.sections, _d(model.price_per_mtok.input))
    if prefix < model.min_cacheable_prefix_tokens:
        prefix_cached = prefix_uncached
    batch = realtime * discount
    return CostRow(
        series=series.series,
        sections=series.sections,
        input_tokens=series.input_tokens,
        output_tokens=out_total,
        realtime_usd=realtime,
        batch_usd=batch,
        savings_usd=realtime - batch,
        prefix_tokens=series.prefix_tokens,
        batch_with_prefix_usd=batch + prefix_uncached * discount,
        batch_cached_prefix_usd=batch + prefix_cached * discount,
        input_tokens_priced=int(round_half_up(series.input_tokens * scale, Decimal(1))),
        tokens_scaled=scaled,
        input_tokens_model=int(round_half_up(series.input_tokens * scale, Decimal(1))),
        thinking_tokens=thinking_total,
    )


def _row_guide(
    series: SeriesTokens, model: ModelInfo, ratio: Decimal, effort: str | None = None
) -> CostRow:
    scale, scaled = _scale(series, model)
    exact_in = series.input_tokens * scale
    thinking = sum(
        (_thinking(model, effort, t * scale * ratio) for t in series.section_tokens), Decimal(0)
    )
    t_in = round_sig(exact_in)
    t_out = round_sig(exact_in * ratio + thinking)
    avg_prompt = int((exact_in + series.prefix_tokens * scale) / max(series.sections, 1))
    p = model.prices_for_prompt(avg_prompt)
    realtime = cents((t_in * _d(p.input) + t_out * _d(p.output)) / _MTOK)
    batch = cents(realtime * _d(model.batch_discount))
    prefix = (
        Decimal(round_sig(series.prefix_tokens * scale)) if series.prefix_tokens else Decimal(0)
    )
    uncached, cached = _prefix_costs(model, prefix, series.sections, _d(p.input))
    discount = _d(model.batch_discount)
    return CostRow(
        series=series.series,
        sections=series.sections,
        input_tokens=series.input_tokens,
        output_tokens=exact_in * ratio + thinking,
        realtime_usd=realtime,
        batch_usd=batch,
        savings_usd=realtime - batch,
        prefix_tokens=series.prefix_tokens,
        batch_with_prefix_usd=batch + cents(uncached * discount),
        batch_cached_prefix_usd=batch + cents(cached * discount),
        input_tokens_priced=t_in,
        output_tokens_priced=t_out,
        tokens_scaled=scaled,
        input_tokens_model=int(round_half_up(exact_in, Decimal(1))),
        thinking_tokens=thinking,
    )


def _total(rows: Sequence[CostRow], style: Style) -> CostRow:
    out = sum((r.output_tokens for r in rows), Decimal(0))
    return CostRow(
        series="Total",
        sections=sum(r.sections for r in rows),
        input_tokens=sum(r.input_tokens for r in rows),
        output_tokens=out,
        realtime_usd=sum((r.realtime_usd for r in rows), Decimal(0)),
        batch_usd=sum((r.batch_usd for r in rows), Decimal(0)),
        savings_usd=sum((r.savings_usd for r in rows), Decimal(0)),
        prefix_tokens=sum(r.prefix_tokens for r in rows),
        batch_with_prefix_usd=sum((r.batch_with_prefix_usd for r in rows), Decimal(0)),
        batch_cached_prefix_usd=sum((r.batch_cached_prefix_usd for r in rows), Decimal(0)),
        input_tokens_priced=(
            sum(r.input_tokens_priced or 0 for r in rows) if style == "exact" else None
        ),
        output_tokens_priced=round_sig(out, 2) if style == "guide" else None,
        tokens_scaled=any(r.tokens_scaled for r in rows),
        input_tokens_model=sum(r.input_tokens_model for r in rows),
        thinking_tokens=sum((r.thinking_tokens for r in rows), Decimal(0)),
    )


def section_fits(
    series: SeriesTokens,
    model: ModelInfo,
    *,
    output_ratio: float,
    effort: str | None,
    max_tokens: int | None = None,
) -> list[SectionFit]:
    """Every section's expected answer against ``max_tokens`` (the plan's, else the default)."""
    scale, _ = _scale(series, model)
    budget = min(
        max_tokens or series.max_tokens or answer_sizing.default_max_tokens(model),
        model.max_output_tokens,
    )
    numbers = series.section_numbers or tuple(range(1, series.sections + 1))
    return [
        SectionFit(
            series=series.series,
            section=number,
            answer=answer_sizing.expected_answer(
                int(tokens * scale),
                model,
                max_tokens=budget,
                effort=effort,
                output_ratio=output_ratio,
            ),
        )
        for number, tokens in zip(numbers, series.section_tokens, strict=True)
    ]


def estimate_costs(
    series: Sequence[SeriesTokens],
    model: ModelInfo,
    *,
    output_ratio: float = DEFAULT_OUTPUT_RATIO,
    style: Style = "exact",
    effort: str | None = None,
    max_tokens: int | None = None,
) -> ModelEstimate:
    """Price the series for one model (see the module docstring for the two styles).

    Args:
        series: Token facts per series.
        model: The model to price.
        output_ratio: Expected answer tokens per section token.
        style: ``exact`` or ``guide``.
        effort: The ``--effort`` the run would send (default: the pipeline's, on models that
            think); thinking for it is added to the output.
        max_tokens: ``max_tokens`` to check answers against (default: the plan's, recorded in
            the meta files, else the pipeline's default for the model).
    """
    ratio = _d(output_ratio)
    run_effort = answer_sizing.effective_effort(model, answer_sizing.request_effort(model, effort))
    rows = tuple(
        _row_guide(s, model, ratio, run_effort)
        if style == "guide"
        else _row_exact(s, model, ratio, run_effort)
        for s in series
    )
    fits = tuple(
        f
        for s in series
        for f in section_fits(
            s, model, output_ratio=output_ratio, effort=run_effort, max_tokens=max_tokens
        )
    )
    return ModelEstimate(
        model=model,
        style=style,
        output_ratio=output_ratio,
        rows=rows,
        total=_total(rows, style),
        effort=run_effort,
        fits=fits,
    )


def series_tokens(metas: Iterable[SectionMeta]) -> list[SeriesTokens]:
    """Group section metas into per-series token facts, ordered by series slug."""
    grouped: dict[str, list[SectionMeta]] = {}
    for meta in metas:
        grouped.setdefault(meta.series, []).append(meta)
    out: list[SeriesTokens] = []
    for slug in sorted(grouped):
        items = sorted(grouped[slug], key=lambda m: m.section)
        extra = [m.model_extra or {} for m in items]
        prefixes = [int(e.get("prefix_tokens") or 0) for e in extra]
        models = {str(e["token_model"]) for e in extra if e.get("token_model")}
        budgets = {int(e["max_tokens"]) for e in extra if isinstance(e.get("max_tokens"), int)}
        out.append(
            SeriesTokens(
                series=slug,
                section_tokens=tuple(m.input_tokens for m in items),
                prefix_tokens=max(prefixes, default=0),
                token_model=models.pop() if len(models) == 1 else None,
                token_count_method=items[0].token_count_method,
                section_numbers=tuple(m.section for m in items),
                max_tokens=min(budgets) if budgets else None,
            )
        )
    return out


def load_series_tokens(input_dir: Path, series: str | None = None) -> list[SeriesTokens]:
    """Read the section meta files of ``input_dir`` (optionally one series).

    Raises:
        InputFileError: missing folder, unreadable meta file, or no sections at all.
    """
    sections = read_sections(input_dir, series)
    if not sections:
        which = f" of series {series!r}" if series else ""
        raise InputFileError(
            f"no section files{which} in {input_dir}; run `fantasy-kg sections` first"
        )
    return series_tokens(s.meta for s in sections)


def counted_with(series: Sequence[SeriesTokens]) -> str | None:
    """The one model all series were counted for, if they agree (the natural default model)."""
    models = {s.token_model for s in series}
    if len(models) == 1:
        return models.pop()
    return None
