"""Command ``run``: the README's main job, the whole pipeline for a series in one command."""

from pathlib import Path

import click
from rich.console import Console

from fantasy_kg.cli.options import (
    backend_option,
    db_option,
    dedicated_workspace_option,
    dir_option,
    max_cost_option,
    mixed_backends_option,
    model_option,
    sizing_options,
)
from fantasy_kg.cli.output import PollProgress, emit


@click.command("run")
@click.option("--series", default=None, help="Series slug (folder under books/). Default: all.")
@model_option
@backend_option
@dir_option("--books-dir", help="Folder of series folders. Default: <data>/books.")
@db_option
@max_cost_option("submit when the pre-flight batch estimate")
@sizing_options
@click.option(
    "--force",
    is_flag=True,
    help="Extract again sections that already have a result for these settings.",
)
@mixed_backends_option
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Seconds between batch polls. Default: 0.5 on the local backend, 60 on Claude.",
)
@dedicated_workspace_option()
def run(
    series: str | None,
    model: str | None,
    backend: str,
    books_dir: Path | None,
    db_path: Path | None,
    max_cost: float | None,
    max_tokens: int | None,
    max_section_tokens: int | None,
    effort: str | None,
    output_ratio: float,
    force: bool,
    allow_mixed_backends: bool,
    poll_interval: float | None,
    dedicated_workspace: bool,
) -> None:
    """Run the whole pipeline: sections → Message Batch → results → graph → DuckDB.

    Everything lands under the data directory ($FANTASY_KG_DATA_DIR, default ./data):
    sections/, batch_jobs/, extracted/ and fantasy_kg.duckdb. Re-running an unchanged series
    with the same backend, model, effort and max tokens submits nothing and costs $0; results
    made otherwise (e.g. by the local backend before a key was set) are extracted again.

    Sections are sized so that the expected answer (output ratio x section + thinking for the
    effort, x1.5) fits --max-tokens; a plan whose answers cannot fit is refused before sending.

    \b
    Examples:
      fantasy-kg run --series ashen_crown
      fantasy-kg run --series ashen_crown --backend anthropic --max-cost 5
      fantasy-kg run --series oz --books-dir ../shared/corpus --effort medium
    """
    from fantasy_kg.llm.ownership import dedicated_workspace as workspace_setting
    from fantasy_kg.pipeline.run import run_series

    console = Console(stderr=True)
    with workspace_setting(dedicated_workspace), PollProgress(console) as bar:
        summary = run_series(
            series,
            books_dir=books_dir,
            model=model,
            backend=backend,
            max_cost=max_cost,
            max_tokens=max_tokens,
            max_section_tokens=max_section_tokens,
            effort=effort,
            output_ratio=output_ratio,
            force=force,
            allow_mixed_backends=allow_mixed_backends,
            poll_interval_seconds=poll_interval,
            db_path=db_path,
            on_status=bar.update,
        )
    ext = summary.extraction
    cut = (
        f"; {ext.truncated} answers cut at max_tokens and split, "
        f"{ext.followup_batches} follow-up batches"
        if ext.truncated
        else ""
    )
    console.print(
        f"sections {ext.sections} = written {ext.written} + failed {ext.failed} "
        f"+ pending {ext.pending}; cost ${ext.cost.batch_usd:.4f} (batch){cut}"
    )
    for load in summary.loads:
        console.print(
            f"{load.series}: {load.entities} entities, {load.relationships} relationships, "
            f"grounding {load.grounding_rate:.1%} → {load.db_path}"
        )
    emit(summary.to_json())
    if ext.failed or ext.pending:
        raise SystemExit(1)


COMMANDS: list[click.Command] = [run]
