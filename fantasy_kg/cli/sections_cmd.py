"""Commands ``sections`` (books to section files) and ``estimate`` (the guide's cost tables).

Both are thin: ``sections`` calls :func:`fantasy_kg.pipeline.sections.build_sections` and
``estimate`` calls :mod:`fantasy_kg.domain.estimate`, the same functions Dagster uses. Progress
and summaries go to stderr; stdout carries only the result (a table, or JSON with ``--json``).
"""

import json
from pathlib import Path
from typing import Any, cast

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from fantasy_kg.cli.options import dir_option, effort_option, file_option, sizing_options
from fantasy_kg.domain.answer import ANSWER_MARGIN, answer_fit_hint, describe_answer
from fantasy_kg.domain.catalog import default_model, get_model
from fantasy_kg.domain.errors import ConfigError, PreflightError
from fantasy_kg.domain.estimate import (
    CACHE_ASSUMPTION,
    DEFAULT_OUTPUT_RATIO,
    GUIDE_MODELS,
    CostRow,
    ModelEstimate,
    Style,
    cents,
    counted_with,
    estimate_costs,
    human_tokens,
    load_series_tokens,
)
from fantasy_kg.domain.paths import books_dir as default_books_dir
from fantasy_kg.domain.paths import sections_dir
from fantasy_kg.pipeline.sections import build_sections
from fantasy_kg.pipeline.token_counter import CountMode, make_counter

_PHASES = {"read": "reading books", "plan": "planning sections", "write": "writing sections"}


@click.command("sections")
@dir_option(
    "--books-dir", help="Folder of series folders (or one series folder). Default: <data>/books."
)
@dir_option(
    "--output-dir", help="Where <slug>_section_NN.txt and .meta.json go. Default: <data>/sections."
)
@click.option("--series", default=None, help="Only this series (slug or folder name).")
@click.option("--model", default=None, help="Target model id or alias. Default: the catalog's.")
@sizing_options
@file_option(
    "--ontology",
    "ontology_path",
    help="Ontology file for every selected series (default: <slug>_schema.json if present).",
)
@click.option(
    "--token-count",
    type=click.Choice(["auto", "api", "estimate"]),
    default="auto",
    show_default=True,
    help="auto: count_tokens when ANTHROPIC_API_KEY is set, else the offline estimate.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def sections_command(
    books_dir: Path | None,
    output_dir: Path | None,
    series: str | None,
    model: str | None,
    max_tokens: int | None,
    max_section_tokens: int | None,
    effort: str | None,
    output_ratio: float,
    ontology_path: Path | None,
    token_count: str,
    as_json: bool,
) -> None:
    """Split books into sections that fit the model's context window, with meta files.

    Example: fantasy-kg sections --books-dir data/books --output-dir data/sections --model
    claude-opus-4-5 --max-tokens 64000
    """
    err = Console(stderr=True, soft_wrap=True)
    model_name = model or default_model()
    counter = make_counter(cast(CountMode, token_count))
    src = books_dir or default_books_dir()
    out = output_dir or sections_dir()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,  # no bar debris in logs and pipes
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(_PHASES.get(phase, phase), total=total)
            bar.update(tasks[phase], completed=done, total=total)

        summary = build_sections(
            src,
            out,
            series=series,
            model=model_name,
            max_tokens=max_tokens,
            max_section_tokens=max_section_tokens,
            effort=effort,
            output_ratio=output_ratio,
            ontology_path=ontology_path,
            counter=counter,
            progress=progress,
        )
    for s in summary.series:
        for note in s.warnings:
            err.print(f"warning: {note}", markup=False, highlight=False)
        removed = f", removed {len(s.removed) // 2} stale" if s.removed else ""
        err.print(
            f"{s.series}: {s.books} books -> {s.sections} sections, {s.input_tokens:,} tokens "
            f"({s.token_count_method}){removed}",
            markup=False,
            highlight=False,
        )
    err.print(
        f"total: {summary.books} books, {summary.sections} sections, "
        f"{summary.input_tokens:,} tokens for {summary.model} (max_tokens {summary.max_tokens}) "
        f"in {summary.output_dir}",
        markup=False,
        highlight=False,
    )
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))


def _usd(value: Any) -> str:
    return f"${cents(value):,.2f}"


def _row_cells(row: CostRow, style: str, total: bool) -> list[str]:
    if style == "guide":
        out_tokens = human_tokens(row.output_tokens, 2 if total else 3)
    else:
        out_tokens = f"{round(row.output_tokens):,}"
    return [
        row.series,
        str(row.sections),
        f"{row.input_tokens_model or row.input_tokens:,}",
        f"~{out_tokens}",
        f"~{round(row.thinking_tokens):,}" if row.thinking_tokens else "-",
        _usd(row.realtime_usd),
        _usd(row.batch_usd),
        _usd(cents(row.realtime_usd) - cents(row.batch_usd)),
        _usd(row.batch_with_prefix_usd),
        _usd(row.batch_cached_prefix_usd),
    ]


def _table(est: ModelEstimate) -> Table:
    p = est.model.price_per_mtok
    bands = "; long-prompt bands apply" if est.model.price_bands else ""
    thinking = f" + thinking at effort {est.effort}" if est.effort else ""
    title = (
        f"{est.model.display_name} (${p.input:g}/${p.output:g} per MTok{bands}; "
        f"output {est.output_ratio:.0%} of input{thinking}; {est.style} style)"
    )
    table = Table(title=title, title_justify="left")
    for name in (
        "Series",
        "Sections",
        "Input tokens",
        "Est. output",
        "Thinking",
        "Real-time",
        "Batch",
        "Savings",
        "Batch + prompt",
        "Batch + cached prompt",
    ):
        table.add_column(name, justify="left" if name == "Series" else "right")
    for row in est.rows:
        table.add_row(*_row_cells(row, est.style, total=False))
    table.add_row(*_row_cells(est.total, est.style, total=True), style="bold")
    return table


def _fit_table(est: ModelEstimate, per_section: bool) -> Table:
    """Expected answers against max_tokens: the tightest section per series, or every one."""
    table = Table(
        title=f"Answer fit on {est.model.id}: (answer + thinking) x{ANSWER_MARGIN:g} "
        "must fit max_tokens",
        title_justify="left",
    )
    for name in ("Series", "Section", "Tokens", "Answer", "Thinking", "Needs", "max_tokens", ""):
        table.add_column(name, justify="left" if name in ("Series", "") else "right")
    if per_section:
        rows = list(est.fits)
    else:
        rows = [f for r in est.rows if (f := est.tightest(r.series)) is not None]
    for fit in rows:
        a = fit.answer
        table.add_row(
            fit.series,
            f"{fit.section:02d}",
            f"{a.section_tokens:,}",
            f"~{a.answer_tokens:,}",
            f"~{a.thinking_tokens:,}" if a.thinking_tokens else "-",
            f"{a.required_tokens:,}",
            f"{a.max_tokens:,}",
            "fits" if a.fits else "CUT",
            style=None if a.fits else "bold red",
        )
    return table


def _refuse_misfits(estimates: list[ModelEstimate], style: str) -> None:
    """Exit 2 with one line naming the first section whose answer cannot fit, and the fix.

    In ``guide`` style the tables reproduce the guide's own plan (whose sections were sized for
    the window alone), so a misfit is a warning there, not a refusal.
    """
    for est in estimates:
        bad = est.misfits
        if bad:
            first = bad[0]
            more = f" (and {len(bad) - 1} more sections)" if len(bad) > 1 else ""
            line = (
                f"{first.series} section {first.section:02d} on {est.model.id}: "
                f"{describe_answer(first.answer, est.output_ratio)}{more}; "
                f"{answer_fit_hint(first.answer, est.model, est.output_ratio)}"
            )
            if style == "guide":
                click.echo(f"warning: {line}", err=True)
                continue
            raise PreflightError(line)


@click.command("estimate")
@dir_option("--input-dir", help="Folder of section files. Default: <data>/sections.")
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Model to price (repeatable). Default: the model the sections were counted for.",
)
@click.option("--series", default=None, help="Only this series (slug).")
@click.option(
    "--output-ratio",
    type=float,
    default=DEFAULT_OUTPUT_RATIO,
    show_default=True,
    help="Estimated output tokens as a share of input tokens.",
)
@effort_option
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="max_tokens to check answers against. Default: the one the sections were planned for.",
)
@click.option("--sections", "per_section", is_flag=True, help="Show every section's answer fit.")
@click.option(
    "--style",
    type=click.Choice(["exact", "guide"]),
    default="exact",
    show_default=True,
    help="exact: unrounded tokens. guide: the guide's rounding (3 significant figures, cents "
    "half-up, batch = real-time/2); without --model it prices Opus 4.5 and Sonnet 4.5.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def estimate_command(
    input_dir: Path | None,
    models: tuple[str, ...],
    series: str | None,
    output_ratio: float,
    effort: str | None,
    max_tokens: int | None,
    per_section: bool,
    style: str,
    as_json: bool,
) -> None:
    """Estimate real-time vs batch cost of extracting the sections (the guide's tables).

    Output includes the thinking expected at --effort on models that think. Each section's
    expected answer is checked against max_tokens; if one cannot fit, the command prints the
    tables and exits 2 with the section and the fix.

    Example: fantasy-kg estimate --input-dir data/sections --model claude-opus-4-5 --model
    claude-sonnet-4-5 --style guide
    """
    if not 0.0 <= output_ratio <= 10.0:
        raise ConfigError(f"--output-ratio {output_ratio} is outside 0..10; try 0.15")
    facts = load_series_tokens(input_dir or sections_dir(), series)
    if models:
        names = list(models)
    elif style == "guide":
        names = list(GUIDE_MODELS)
    else:
        names = [counted_with(facts) or default_model()]
    infos = [get_model(name) for name in names]
    estimates = [
        estimate_costs(
            facts,
            info,
            output_ratio=output_ratio,
            style=cast(Style, style),
            effort=effort,
            max_tokens=max_tokens,
        )
        for info in infos
    ]
    if as_json:
        doc = {
            "style": style,
            "output_ratio": output_ratio,
            "assumptions": [CACHE_ASSUMPTION],
            "models": [e.to_dict() for e in estimates],
        }
        click.echo(json.dumps(doc, indent=2))
        _refuse_misfits(estimates, style)
        return
    # Piped output would wrap at 80 columns; the table is wider than that.
    out = Console(width=max(Console().width, 150), soft_wrap=True)
    for est in estimates:
        out.print(_table(est))
        out.print(_fit_table(est, per_section))
    if any(e.total.tokens_scaled for e in estimates):
        out.print(
            "Token counts were scaled to each model's tokenizer (catalog tokenizer_factor).",
            markup=False,
            highlight=False,
        )
    out.print(f"Assumption: {CACHE_ASSUMPTION}.", markup=False, highlight=False)
    _refuse_misfits(estimates, style)


COMMANDS: list[click.Command] = [sections_command, estimate_command]
