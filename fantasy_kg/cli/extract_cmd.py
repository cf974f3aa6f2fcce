"""Commands ``extract-batch`` (Message Batches) and ``extract`` (real time).

Thin wrappers over :mod:`fantasy_kg.pipeline.extraction`, the functions Dagster calls too. One
JSON document goes to stdout; progress bars and logs go to stderr. ``submit`` returns at once;
``status`` and ``retrieve`` work from any later process because everything they need is in the
job file.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fantasy_kg.cli.options import (
    backend_option,
    dedicated_workspace_option,
    dir_option,
    effort_option,
    extracted_output_option,
    max_cost_option,
    max_tokens_option,
    model_option,
)
from fantasy_kg.cli.output import PollProgress, emit
from fantasy_kg.domain.catalog import default_model
from fantasy_kg.domain.errors import ConfigError

if TYPE_CHECKING:
    from fantasy_kg.llm.jobs import JobRecord

_MODES = ("full", "submit", "status", "retrieve")


def _status_doc(job: "JobRecord") -> dict[str, Any]:
    counts = job.request_counts
    doc: dict[str, Any] = {
        "batch_id": job.id,
        "status": job.processing_status,
        "succeeded": counts.succeeded,
        "processing": counts.processing,
        "errored": counts.errored,
        "canceled": counts.canceled,
        "expired": counts.expired,
        "series": job.series,
        "model": job.model,
        "backend": job.backend,
        "attempt": job.attempt,
        "created_at": job.created_at,
        "expires_at": job.expires_at,
        "ended_at": job.ended_at,
        "results_processed": job.results_processed_at is not None,
        "followup_state": job.followup_state,
        "retry_batch_ids": job.retry_batch_ids,
        "ownership": job.ownership,
    }
    if job.is_released:
        doc["released"] = {"reason": job.release_reason, "replaced_by": job.replaced_by}
    if job.unproven_candidates:
        doc["unproven_candidates"] = [c.batch_id for c in job.unproven_candidates]
    if job.result_counts is not None:
        doc["result_counts"] = job.result_counts.model_dump()
    return doc


@click.command("extract-batch")
@click.option(
    "--mode",
    type=click.Choice(_MODES),
    default="full",
    show_default=True,
    help="full: submit, poll, retrieve and follow up; submit: return at once; status; retrieve.",
)
@model_option
@dir_option(
    "--input-dir", help="Folder of <slug>_section_NN.txt + .meta.json. Default: <data>/sections."
)
@extracted_output_option
@click.option("--series", default=None, help="Only this series (slug). Default: every series.")
@click.option("--batch-id", default=None, help="The batch for --mode status / retrieve.")
@dir_option("--jobs-dir", help="Folder of job files. Default: <data>/batch_jobs.")
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.0),
    default=60.0,
    show_default=True,
    help="Seconds between status polls in --mode full.",
)
@click.option(
    "--max-wait-hours",
    type=click.FloatRange(min=0.0),
    default=24.0,
    show_default=True,
    help="Stop polling after this long in --mode full (batches keep running).",
)
@max_cost_option("submit when the pre-flight batch estimate")
@backend_option
@max_tokens_option
@effort_option
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Batches per section including the follow-up for retryable failures.",
)
@click.option("--retry-failed", is_flag=True, help="Also resend sections with a permanent failure.")
@click.option("--no-followup", is_flag=True, help="retrieve: do not submit the follow-up batch.")
@click.option(
    "--resubmit-archived",
    is_flag=True,
    help="retrieve: results past the 29-day retention are resubmitted instead of failing.",
)
@dedicated_workspace_option()
def extract_batch(dedicated_workspace: bool, **options: Any) -> None:
    """Extract sections through the Message Batches API (half the real-time price).

    \b
    Examples:
      fantasy-kg extract-batch --mode submit --series ashen_crown
      fantasy-kg extract-batch --mode status --batch-id msgbatch_...
      fantasy-kg extract-batch --mode retrieve --batch-id msgbatch_...
      fantasy-kg extract-batch --mode full --poll-interval 30 --max-cost 5
    """
    from fantasy_kg.llm.ownership import dedicated_workspace as workspace_setting

    with workspace_setting(dedicated_workspace):
        _extract_batch(**options)


def _extract_batch(
    mode: str,
    model: str | None,
    input_dir: Path | None,
    output_dir: Path | None,
    series: str | None,
    batch_id: str | None,
    jobs_dir: Path | None,
    poll_interval: float,
    max_wait_hours: float,
    max_cost: float | None,
    backend: str,
    max_tokens: int | None,
    effort: str | None,
    max_attempts: int,
    retry_failed: bool,
    no_followup: bool,
    resubmit_archived: bool,
) -> None:
    from fantasy_kg.pipeline import extraction

    model_name = model or default_model()
    if mode in ("status", "retrieve"):
        if not batch_id:
            raise ConfigError(f"--mode {mode} needs --batch-id (printed by --mode submit)")
        if mode == "status":
            emit(_status_doc(extraction.batch_status(batch_id, jobs_dir, backend=backend)))
            return
        res = extraction.retrieve_batch(
            batch_id,
            jobs_dir,
            backend=backend,
            followup=not no_followup,
            resubmit_archived=resubmit_archived,
        )
        emit(res.to_json())
        return
    # What to extract and how: the same for submit and full, so both plan the same batches.
    where = (input_dir, output_dir, series, model_name)
    submit_settings: dict[str, Any] = {
        "jobs_dir": jobs_dir,
        "backend": backend,
        "max_cost": max_cost,
        "max_tokens": max_tokens,
        "effort": effort,
        "retry_failed": retry_failed,
        "max_attempts": max_attempts,
    }
    if mode == "submit":
        jobs = extraction.submit_series(*where, **submit_settings)
        emit(
            {
                "batches": [
                    {
                        "series": j.series,
                        "batch_id": j.id,
                        "status": j.processing_status,
                        "requests": len(j.inputs),
                        "attempt": j.attempt,
                        "estimated_cost_usd": round(j.estimated_cost.batch_usd, 6)
                        if j.estimated_cost
                        else None,
                    }
                    for j in jobs
                ]
            }
        )
        return
    console = Console(stderr=True)
    with PollProgress(console) as bar:
        result = extraction.run_full(
            *where,
            **submit_settings,
            poll_interval_seconds=poll_interval,
            max_wait_hours=max_wait_hours,
            on_status=bar.update,
        )
    console.print(
        f"sections {result.sections} = written {result.written} + failed {result.failed} "
        f"+ pending {result.pending}; cost ${result.cost.batch_usd:.4f} (batch), "
        f"${result.cost.realtime_usd:.4f} real-time equivalent"
    )
    emit(result.to_json())
    if result.failed or result.pending:
        raise SystemExit(1)


@click.command("extract")
@click.option(
    "--provider",
    type=click.Choice(["auto", "anthropic", "local"]),
    default="auto",
    show_default=True,
    help="anthropic needs ANTHROPIC_API_KEY; local = the baseline extractor on 127.0.0.1.",
)
@model_option
@dir_option("--input-dir", help="Folder of section files. Default: <data>/sections.")
@extracted_output_option
@click.option("--series", default=None, help="Only this series (slug).")
@max_tokens_option
@effort_option
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Requests in flight at once.",
)
@max_cost_option("start when the real-time estimate")
@click.option("--retry-failed", is_flag=True, help="Also resend sections with permanent failures.")
def extract(
    provider: str,
    model: str | None,
    input_dir: Path | None,
    output_dir: Path | None,
    series: str | None,
    max_tokens: int | None,
    effort: str | None,
    concurrency: int,
    max_cost: float | None,
    retry_failed: bool,
) -> None:
    """Extract sections through the real-time Messages API (same output files as batches).

    \b
    Example:
      fantasy-kg extract --provider local --series ashen_crown
    """
    from fantasy_kg.pipeline import extraction

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]extracting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task("extract", total=None)

        def done(_custom_id: str) -> None:
            progress.advance(task)

        result = extraction.extract_realtime(
            input_dir,
            output_dir,
            series,
            model or default_model(),
            backend=provider,
            max_tokens=max_tokens,
            effort=effort,
            max_concurrency=concurrency,
            retry_failed=retry_failed,
            max_cost=max_cost,
            on_done=done,
        )
    console.print(
        f"sections {result.sections} = written {result.written} + failed {result.failed}; "
        f"cost ${result.cost.realtime_usd:.4f} real time (batch would be "
        f"${result.cost.batch_usd:.4f})"
    )
    emit(result.to_json())
    if result.failed:
        raise SystemExit(1)


COMMANDS: list[click.Command] = [extract_batch, extract]
