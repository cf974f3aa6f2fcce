"""Scenario 5, cost: planned spend per model, cost per 1,000 facts, and $0.00 for a re-run.

* The guide's three series (its token counts, sections of equal size) and Oz (tokens measured by
  ``build_sections``): planned spend per model at real time, through the Batches API, and through
  the Batches API with the shared prompt prefix cached (1-hour TTL). All three include the prompt
  prefix (instructions + ontology) on every request, priced by ``fantasy_kg.domain.estimate``;
  the baseline of each row is the real-time price.
* Cost per 1,000 extracted facts (entity + relationship instances): the local backend's own
  output and reported usage, priced per model, as a proxy for what Claude would produce. Full
  mode runs Oz; quick mode runs the small sample series and says so.
* Re-running an unchanged series: the pre-flight plan after a complete run must send nothing and
  cost $0.00 (design invariant 3); the baseline is the plan before the first run.

Models: the guide's two (Opus 4.5, Sonnet 4.5) and every model the catalog marks ``current``.
"""

import json
import shutil
import time
from pathlib import Path
from typing import Any

from bench import corpus
from bench.harness import REPO_ROOT, Context, Target, apply_targets

NAME = "cost"
TITLE = "Cost"
SAMPLE_SERIES = "ashen_crown"
RERUN_TARGET = Target(metric="value", limit=0.0, text="= $0.00")


def prepare(ctx: Context) -> dict[str, Any]:
    """Nothing to generate: the rows compute their own inputs."""
    return {}


def _models() -> list[Any]:
    from fantasy_kg.domain.catalog import catalog, get_model
    from fantasy_kg.domain.estimate import GUIDE_MODELS

    chosen = [get_model(m) for m in GUIDE_MODELS]
    chosen += [m for m in catalog().models if m.status == "current" and m not in chosen]
    return chosen


def _short(model: Any) -> str:
    """The model's shortest name (``claude-opus-4-5`` rather than the dated id)."""
    return str(min(model.names, key=len))


def _prefix_tokens(series_name: str, slug: str) -> int:
    """Tokens of the real prompt prefix for a series with the default ontology (4.5 tokenizer)."""
    from fantasy_kg.domain.prompts import render_prefix
    from fantasy_kg.domain.schemas import default_ontology
    from fantasy_kg.domain.text.tokens import estimate_tokens

    return estimate_tokens(render_prefix(series_name, default_ontology(slug)))


def _guide_series() -> list[Any]:
    from bench.synth import GUIDE_SERIES
    from fantasy_kg.domain.estimate import SeriesTokens

    out = []
    for slug, title, sections, tokens in GUIDE_SERIES:
        per, extra = divmod(tokens, sections)
        split = tuple(per + (1 if i < extra else 0) for i in range(sections))
        out.append(
            SeriesTokens(
                series=slug, section_tokens=split, prefix_tokens=_prefix_tokens(title, slug)
            )
        )
    return out


def _plan_row(series: Any, model: Any, note: str = "") -> dict[str, Any]:
    """One planned-spend row: real time, batch, batch + cached prefix (prefix on every request)."""
    from fantasy_kg.domain.estimate import estimate_costs

    est = estimate_costs([series], model)
    r = est.rows[0]
    discount = model.batch_discount
    prefix_batch = float(r.batch_with_prefix_usd - r.batch_usd)
    realtime = float(r.realtime_usd) + prefix_batch / discount
    batch = float(r.batch_with_prefix_usd)
    cached = float(r.batch_cached_prefix_usd)
    row: dict[str, Any] = {
        "scenario": NAME,
        "kind": "cost",
        "case": f"{series.series} / {_short(model)}",
        "input": f"{series.sections} sections, {series.input_tokens:,} tokens",
        "status": "ok",
        "note": note,
        "details": {
            "series": series.series,
            "model": _short(model),
            "sections": series.sections,
            "input_tokens": series.input_tokens,
            "prefix_tokens": series.prefix_tokens,
            "output_tokens": int(r.output_tokens),
            "realtime_usd": realtime,
            "batch_usd": batch,
            "batch_cached_usd": cached,
            "guide_batch_usd_sections_only": float(r.batch_usd),
            "tokens_scaled_to_model_tokenizer": r.tokens_scaled,
        },
        "baseline": {"name": "real-time", "usd": realtime},
        "ratio": cached / realtime if realtime else None,
        "value": cached,
        "targets": [],
        "target_met": None,
    }
    return row


def _sections_for(books: Path, out: Path, model: str | None = None) -> Path:
    """Section ``books`` for ``model`` (default: the catalog's default) into a fresh ``out``."""
    from fantasy_kg.domain.catalog import default_model
    from fantasy_kg.pipeline.sections import build_sections

    shutil.rmtree(out, ignore_errors=True)
    build_sections(books, out, model=model or default_model())
    return out


def _planned(sections: Path, extracted: Path, jobs: Path, model: str) -> tuple[float, float, int]:
    """Batch and real-time dollars the pre-flight plan would spend now, and requests it sends."""
    from fantasy_kg.pipeline.extraction import preflight_series

    plans = preflight_series(sections, extracted, None, model, jobs_dir=jobs)
    batch = sum(p.report.estimated_cost.batch_usd for p in plans if p.report is not None)
    realtime = sum(p.report.estimated_cost.realtime_usd for p in plans if p.report is not None)
    return batch, realtime, sum(len(p.requests) for p in plans)


def _run_input(ctx: Context, name: str) -> tuple[Path, Path, str, str]:
    """A fresh work folder, the books to run (Oz, or the sample in quick mode), label, note."""
    oz = corpus.oz_dir()
    base = ctx.scenario_dir(NAME) / name
    shutil.rmtree(base, ignore_errors=True)
    if ctx.quick or oz is None:
        why = "quick mode: the sample series" if ctx.quick else "Oz absent: the sample series"
        return base, REPO_ROOT / "data" / "books" / SAMPLE_SERIES, SAMPLE_SERIES, why
    return base, corpus.link_series(oz, base / "books" / "oz"), "oz", ""


def _local_run_rows(ctx: Context) -> list[dict[str, Any]]:
    """Run the local backend on a series; price its facts; check that a re-run plans $0.00."""
    from fantasy_kg.domain.catalog import default_model, get_model
    from fantasy_kg.domain.pricing import TokenUsage, price_usage
    from fantasy_kg.domain.schemas import ExtractionResult
    from fantasy_kg.pipeline.extraction import run_full

    base, books, series_label, why = _run_input(ctx, "local_run")
    sections = _sections_for(books, base / "sections")
    extracted, jobs = base / "extracted", base / "batch_jobs"
    model = default_model()

    first_batch, first_rt, first_n = _planned(sections, extracted, jobs, model)
    t0 = time.perf_counter()
    result = run_full(
        sections, extracted, None, model, jobs_dir=jobs, backend="local", poll_interval_seconds=0.2
    )
    run_s = time.perf_counter() - t0
    again_batch, again_rt, again_n = _planned(sections, extracted, jobs, model)

    entities = relationships = 0
    for path in sorted(extracted.glob("*_extracted.json")):
        res = ExtractionResult.model_validate_json(path.read_text(encoding="utf-8"))
        entities += len(res.entities)
        relationships += len(res.relationships)
    facts = entities + relationships
    usage: TokenUsage = result.usage
    plain = TokenUsage(input_tokens=usage.prompt_tokens, output_tokens=usage.output_tokens)

    rows: list[dict[str, Any]] = []
    models = _models()
    for info in models:
        cached = price_usage(info, usage)
        uncached = price_usage(info, plain)
        per = 1000 / facts if facts else 0.0
        rows.append(
            {
                "scenario": NAME,
                "kind": "cost",
                "case": f"{series_label} per 1,000 facts / {_short(info)}",
                "input": f"{facts:,} facts from the local backend",
                "status": "ok",
                "note": why if info is models[0] else "",
                "details": {
                    "series": f"{series_label}: per 1,000 facts ({facts:,} facts)",
                    "model": _short(info),
                    "sections": result.sections,
                    "input_tokens": usage.prompt_tokens,
                    "output_tokens": usage.output_tokens,
                    "facts": facts,
                    "entities": entities,
                    "relationships": relationships,
                    "realtime_usd": uncached.realtime_usd * per,
                    "batch_usd": uncached.batch_usd * per,
                    "batch_cached_usd": cached.batch_usd * per,
                    "usage_source": "local backend (token estimate), priced per model",
                },
                "baseline": {"name": "real-time", "usd": uncached.realtime_usd * per},
                "ratio": (cached.batch_usd / uncached.realtime_usd)
                if uncached.realtime_usd
                else None,
                "value": cached.batch_usd * per,
                "targets": [],
                "target_met": None,
            }
        )
    rerun: dict[str, Any] = {
        "scenario": NAME,
        "kind": "cost",
        "case": f"{series_label} re-run unchanged / {_short(get_model(model))}",
        "input": f"{result.sections} sections already extracted",
        "status": "ok",
        "note": (
            f"first run planned ${first_batch:.4f} for {first_n} requests and took {run_s:.1f} s "
            f"on the local backend; the re-run plans {again_n} requests"
        ),
        "details": {
            "series": f"{series_label}: re-run, unchanged",
            "model": _short(get_model(model)),
            "sections": result.sections,
            "requests_first_run": first_n,
            "requests_rerun": again_n,
            "realtime_usd": again_rt,
            "batch_usd": again_batch,
            "batch_cached_usd": again_batch,
            "first_run_batch_usd": first_batch,
            "first_run_realtime_usd": first_rt,
        },
        "baseline": {"name": "first run", "usd": first_batch},
        "ratio": again_batch / first_batch if first_batch else None,
        "value": again_batch,
    }
    apply_targets(rerun, [RERUN_TARGET])
    rows.append(rerun)
    return rows


def _claude_like_row(ctx: Context) -> dict[str, Any]:
    """Oz on every default: the pre-flight plan vs what a Claude-like loopback server bills.

    The server answers like Claude at scale (15 % of each section plus thinking for the effort,
    cut at ``max_tokens``); the row shows whether the run needed one batch round (no cut answer,
    no follow-up) and how close the plan was to the bill.
    """
    from fantasy_kg.domain.catalog import default_model, get_model
    from fantasy_kg.llm.batch_provider import AnthropicBatchProvider
    from fantasy_kg.local_api import FaultPlan, start_local_server
    from fantasy_kg.pipeline.extraction import run_full

    base, books, label, why = _run_input(ctx, "claude_like")
    sections = _sections_for(books, base / "sections")
    extracted, jobs = base / "extracted", base / "batch_jobs"
    model = get_model(default_model())
    planned, planned_rt, requests = _planned(sections, extracted, jobs, model.id)
    server = start_local_server(state_dir=base / "server", faults=FaultPlan(claude_like=0.15))
    try:
        provider = AnthropicBatchProvider(
            api_key="bench-not-a-key", base_url=server.base_url, backend="anthropic", jobs_dir=jobs
        )
        result = run_full(
            sections,
            extracted,
            None,
            model.id,
            jobs_dir=jobs,
            poll_interval_seconds=0.2,
            provider=provider,
        )
        billed = server.billed_usage().get(model.id, {})
    finally:
        server.stop()
    actual = result.cost.batch_usd
    row: dict[str, Any] = {
        "scenario": NAME,
        "kind": "cost",
        "case": f"{label} on the defaults, planned vs Claude-like bill / {_short(model)}",
        "input": f"{result.sections} sections, {requests} requests",
        "status": "ok",
        "note": why
        or (
            f"{len(result.batches)} batch round(s), {result.truncated} answers cut, "
            f"{billed.get('thinking_tokens', 0):,} thinking tokens billed"
        ),
        "details": {
            "series": f"{label}: defaults (effort low, max_tokens 32,000, 16,000-token sections)",
            "model": _short(model),
            "sections": result.sections,
            "batch_rounds": len(result.batches),
            "truncated": result.truncated,
            "planned_batch_usd": planned,
            "planned_realtime_usd": planned_rt,
            "billed_batch_usd": actual,
            "output_tokens": billed.get("output_tokens", 0),
            "thinking_tokens": billed.get("thinking_tokens", 0),
            "max_tokens_stops": billed.get("max_tokens_stops", 0),
            "batch_usd": actual,
            "batch_cached_usd": actual,
            "realtime_usd": result.cost.realtime_usd,
        },
        "baseline": {"name": "pre-flight plan", "usd": planned},
        "ratio": actual / planned if planned else None,
        "value": actual,
    }
    apply_targets(
        row,
        [
            Target(metric="ratio", limit=1.25, text="bill <= 1.25x plan"),
            Target(metric="ratio", limit=0.75, text="bill >= 0.75x plan", higher_is_better=True),
        ],
    )
    return row


def rows(ctx: Context) -> list[dict[str, Any]]:
    """Every cost row (computed, not timed)."""
    from fantasy_kg.domain.estimate import load_series_tokens

    out: list[dict[str, Any]] = []
    for s in _guide_series():
        for info in _models():
            out.append(_plan_row(s, info))
    oz = corpus.oz_dir()
    if oz is not None:
        # Oz is sectioned for each context window in the catalog (a 200K model gets more,
        # smaller sections, each carrying the prefix), counted with that model's tokenizer.
        base = ctx.scenario_dir(NAME)
        books = corpus.link_series(oz, base / "books" / "oz")
        from fantasy_kg.domain.catalog import default_model, get_model

        preferred = get_model(default_model())
        by_window: dict[int, Any] = {}
        for info in _models():
            if info.context_window not in by_window:
                counter = preferred if preferred.context_window == info.context_window else info
                folder = base / f"oz_sections_{info.context_window}"
                by_window[info.context_window] = load_series_tokens(
                    _sections_for(books, folder, counter.id)
                )[0]
            out.append(_plan_row(by_window[info.context_window], info))
    out.extend(_local_run_rows(ctx))
    out.append(_claude_like_row(ctx))
    json.dumps(out)  # fail here, not in the parent, if something is not serializable
    return out
