"""Batch extraction steps: submit a series, ask a batch's status, retrieve its results.

Plain synchronous functions over folders (plus ``*_async`` twins), shared by the CLI and Dagster;
:mod:`fantasy_kg.pipeline.extraction` strings them into a full run.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from fantasy_kg.domain import answer as answer_sizing
from fantasy_kg.domain.answer import describe_answer
from fantasy_kg.domain.catalog import ModelInfo
from fantasy_kg.domain.errors import BudgetExceededError
from fantasy_kg.domain.pricing import Cost, TokenUsage
from fantasy_kg.domain.schemas import ExtractionResult, Ontology
from fantasy_kg.llm.backend import backend_name
from fantasy_kg.llm.batch_provider import AnthropicBatchProvider, ResultsArchivedError
from fantasy_kg.llm.jobs import JobRecord, JobStore
from fantasy_kg.llm.requests import PreflightReport
from fantasy_kg.pipeline.extraction_plan import (
    SubmissionPlan,
    plan_series,
    read_section_inputs,
    sync_twin,
)

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------
# Submit
# ------------------------------------------------------------------------------------------


def _provider(
    provider: AnthropicBatchProvider | None,
    jobs_dir: Path | str | None,
    backend: str,
    max_attempts: int,
) -> AnthropicBatchProvider:
    if provider is not None:
        return provider
    return AnthropicBatchProvider(
        jobs_dir=JobStore(jobs_dir).root, backend=backend, max_attempts=max_attempts
    )


async def submit_series_async(
    sections_dir: Path | str | None,
    output_dir: Path | str | None,
    series: str | None = None,
    model: str | None = None,
    *,
    jobs_dir: Path | str | None = None,
    backend: str = "auto",
    max_cost: float | None = None,
    max_tokens: int | None = None,
    effort: str | None = None,
    output_ratio: float = answer_sizing.DEFAULT_OUTPUT_RATIO,
    force: bool = False,
    ontology: Ontology | None = None,
    retry_failed: bool = False,
    max_attempts: int = 2,
    provider: AnthropicBatchProvider | None = None,
) -> list[JobRecord]:
    """Async twin of :func:`submit_series`."""
    inputs = read_section_inputs(sections_dir, output_dir, series, model)
    info, out_dir = inputs.model, inputs.output_dir
    store = JobStore(jobs_dir)
    inputs.require_sections(series)
    bname = provider.backend if provider is not None else backend_name(backend)
    plans = plan_series(
        inputs,
        store=store,
        backend=bname,
        max_tokens=max_tokens,
        effort=effort,
        output_ratio=output_ratio,
        force=force,
        retry_failed=retry_failed,
        ontology=ontology,
    )
    total = Cost(batch_usd=0.0, realtime_usd=0.0)
    for plan in plans:
        note = plan.reuse_note()
        if note:
            logger.warning(note)
        if plan.report is not None:
            total = Cost(
                batch_usd=total.batch_usd + plan.report.estimated_cost.batch_usd,
                realtime_usd=total.realtime_usd + plan.report.estimated_cost.realtime_usd,
            )
        logger.info(
            "series %s: %d to submit, %d already extracted, %d in flight, %d blocked by "
            "permanent failures",
            plan.series,
            len(plan.requests),
            len(plan.done),
            sum(len(j.inputs) for j in plan.in_flight),
            len(plan.blocked),
        )
        if plan.report is not None:
            logger.info("series %s: %s", plan.series, preflight_summary(plan.report))
    if any(p.requests for p in plans):
        announce_plan(bname, info, plans, total)
    if max_cost is not None and total.batch_usd > max_cost:
        raise BudgetExceededError(
            f"estimated batch cost ${total.batch_usd:.2f} exceeds --max-cost ${max_cost:.2f} "
            f"({sum(len(p.requests) for p in plans)} requests on {info.id}); nothing was sent"
        )
    jobs: list[JobRecord] = [j for p in plans for j in p.in_flight]
    if not any(p.requests for p in plans):
        return jobs
    owned = provider is None
    prov = _provider(provider, store.root, backend, max_attempts)
    try:
        for plan in plans:
            if not plan.requests:
                continue
            new = await prov.create_batches(
                plan.requests,
                out_dir,
                info.id,
                _series_name(plan),
                series=plan.series,
                force_new=True,
                estimated_cost=plan.report.estimated_cost if plan.report else None,
            )
            jobs.extend(j for j in new if j.id not in {x.id for x in jobs})
    finally:
        if owned:
            await prov.close()
    return jobs


def preflight_summary(report: PreflightReport) -> str:
    """One line: requests, the tightest expected answer against ``max_tokens``, planned spend."""
    largest = report.largest_answer
    fit = (
        f"; tightest answer: {describe_answer(largest, report.output_ratio)}"
        if largest is not None
        else ""
    )
    thinking = report.expected_thinking_tokens
    return (
        f"pre-flight {len(report.requests)} requests in {len(report.batches)} batch(es), "
        f"expected output ~{report.expected_output_tokens:,} tokens"
        + (f" (~{thinking:,} of them thinking)" if thinking else "")
        + f", estimated ${report.estimated_cost.batch_usd:.2f} at the batch rate"
        + fit
    )


def announce_plan(backend: str, model: ModelInfo, plans: list[SubmissionPlan], total: Cost) -> None:
    """Say loudly what is about to be spent where: Claude is announced like the local backend."""
    requests = sum(len(p.requests) for p in plans)
    efforts = sorted({p.identity.effort for p in plans if p.identity and p.identity.effort})
    effort = f"effort {'/'.join(efforts)}" if efforts else "no thinking"
    if backend == "anthropic":
        logger.warning(
            "backend=anthropic: Claude %s (%s), %d requests, planned spend $%.2f at the batch "
            "rate ($%.2f real-time)",
            model.id,
            effort,
            requests,
            total.batch_usd,
            total.realtime_usd,
        )
    else:
        logger.info(
            "backend=local: emulating %s (%s), %d requests; the emulated cost is what Claude "
            "would bill for answers of this size, nothing is spent",
            model.id,
            effort,
            requests,
        )


def _series_name(plan: SubmissionPlan) -> str:
    """The series' display name (the guide's ``series_name``), from the first section's meta."""
    return plan.series_name or plan.series


@sync_twin(submit_series_async)
def submit_series(
    sections_dir: Path | str | None,
    output_dir: Path | str | None,
    series: str | None = None,
    model: str | None = None,
    *,
    jobs_dir: Path | str | None = None,
    backend: str = "auto",
    max_cost: float | None = None,
    max_tokens: int | None = None,
    effort: str | None = None,
    output_ratio: float = answer_sizing.DEFAULT_OUTPUT_RATIO,
    force: bool = False,
    ontology: Ontology | None = None,
    retry_failed: bool = False,
    max_attempts: int = 2,
    provider: AnthropicBatchProvider | None = None,
) -> list[JobRecord]:
    """Submit the sections of one series (or every series in the folder) as batches.

    Args:
        sections_dir: Folder of ``<slug>_section_NN.txt`` + ``.meta.json`` (default
            ``data/sections``).
        output_dir: Where result files will go (default ``data/extracted``).
        series: Series slug; ``None`` = every series in ``sections_dir`` (one batch set each).
        model: Model id or alias (default: the catalog's default model).
        jobs_dir: Job files folder (default ``data/batch_jobs``).
        backend: ``auto`` | ``anthropic`` | ``local``.
        max_cost: Refuse to submit when the pre-flight batch estimate (USD) exceeds it.
        max_tokens: Output budget per request (default 32,000 capped at the model's limit).
        effort: ``output_config.effort`` on thinking models (thinking is billed as output);
            default :data:`~fantasy_kg.domain.answer.DEFAULT_EFFORT`.
        output_ratio: Expected answer tokens per section token (answer-fit check, estimate).
        force: Extract again sections that already have a result (not those in flight).
        ontology: Ontology to prompt with (default: ``<slug>_schema.json`` or the default).
        retry_failed: Also resend sections whose last failure was permanent (refusal, invalid
            request, invalid JSON).
        max_attempts: Batches per section, follow-ups included (default 2).
        provider: A ready provider (Dagster resource); built from the arguments otherwise.

    Returns:
        The series' jobs: newly submitted ones and those still in flight. Empty when every section
        already has a valid result (no API call made).

    Raises:
        InputFileError: no sections, or unreadable meta files.
        PreflightError: a request would be rejected (names the section and why); nothing sent.
        BudgetExceededError: estimate above ``max_cost``; nothing sent.
        ConfigError: unknown model or backend, or ``anthropic`` without a key.
    """
    raise NotImplementedError  # replaced by @sync_twin


def preflight_series(
    sections_dir: Path | str | None,
    output_dir: Path | str | None,
    series: str | None = None,
    model: str | None = None,
    *,
    jobs_dir: Path | str | None = None,
    backend: str = "auto",
    max_tokens: int | None = None,
    effort: str | None = None,
    output_ratio: float = answer_sizing.DEFAULT_OUTPUT_RATIO,
    force: bool = False,
    retry_failed: bool = False,
) -> list[SubmissionPlan]:
    """What :func:`submit_series` would send, with pre-flight checks and cost estimate, offline.

    Raises the same errors as :func:`submit_series` for bad requests; sends nothing.
    """
    return plan_series(
        read_section_inputs(sections_dir, output_dir, series, model),
        store=JobStore(jobs_dir),
        backend=backend_name(backend),
        max_tokens=max_tokens,
        effort=effort,
        output_ratio=output_ratio,
        force=force,
        retry_failed=retry_failed,
    )


# ------------------------------------------------------------------------------------------
# Status and retrieve
# ------------------------------------------------------------------------------------------


def _provider_for_job(
    job: JobRecord,
    jobs_dir: Path | str | None,
    backend: str,
    provider: AnthropicBatchProvider | None,
) -> AnthropicBatchProvider:
    if provider is not None:
        return provider
    choice = job.backend if backend == "auto" and job.backend in ("anthropic", "local") else backend
    return AnthropicBatchProvider(
        jobs_dir=JobStore(jobs_dir).root, backend=choice, max_attempts=job.max_attempts
    )


async def batch_status_async(
    batch_id: str,
    jobs_dir: Path | str | None = None,
    *,
    backend: str = "auto",
    provider: AnthropicBatchProvider | None = None,
) -> JobRecord:
    """Async twin of :func:`batch_status`."""
    store = JobStore(jobs_dir)
    job = store.load(batch_id)
    if job.is_settled:
        return job
    prov = _provider_for_job(job, store.root, backend, provider)
    try:
        return await prov.get_batch_status(batch_id)
    finally:
        if provider is None:
            await prov.close()


@sync_twin(batch_status_async)
def batch_status(
    batch_id: str,
    jobs_dir: Path | str | None = None,
    *,
    backend: str = "auto",
    provider: AnthropicBatchProvider | None = None,
) -> JobRecord:
    """The batch's status from the server (saved to its job file); works from any process.

    A batch whose results were already processed is answered from its job file (no API call).

    Raises:
        InputFileError: no job file for ``batch_id`` in ``jobs_dir``.
    """
    raise NotImplementedError  # replaced by @sync_twin


@dataclass
class RetrieveResult:
    """What :func:`retrieve_batch` did for one batch.

    ``submitted == written + parts_written + failed + split`` always holds.
    """

    batch_id: str
    series: str
    status: str
    submitted: int = 0
    written: int = 0
    parts_written: int = 0
    failed: int = 0
    retryable: int = 0
    split: int = 0
    files_written: list[str] = field(default_factory=list)
    followup_batch_id: str | None = None
    archived: bool = False
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost: Cost = field(default_factory=lambda: Cost(batch_usd=0.0, realtime_usd=0.0))
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what the CLI prints)."""
        return {
            "batch_id": self.batch_id,
            "series": self.series,
            "status": self.status,
            "submitted": self.submitted,
            "written": self.written,
            "parts_written": self.parts_written,
            "failed": self.failed,
            "retryable": self.retryable,
            "split": self.split,
            "followup_batch_id": self.followup_batch_id,
            "archived": self.archived,
            "usage": self.usage.model_dump() | {"total_tokens": self.usage.total_tokens},
            "cost_usd": {
                "batch": round(self.cost.batch_usd, 6),
                "realtime_equivalent": round(self.cost.realtime_usd, 6),
            },
            "files_written": self.files_written,
            "message": self.message,
        }


async def retrieve_batch_async(
    batch_id: str,
    jobs_dir: Path | str | None = None,
    *,
    backend: str = "auto",
    followup: bool = True,
    resubmit_archived: bool = False,
    schema: type[BaseModel] = ExtractionResult,
    provider: AnthropicBatchProvider | None = None,
) -> RetrieveResult:
    """Async twin of :func:`retrieve_batch`."""
    store = JobStore(jobs_dir)
    job = store.load(batch_id)
    prov = _provider_for_job(job, store.root, backend, provider)
    try:
        try:
            summary = await prov.process_results_to_files(batch_id, schema)
        except ResultsArchivedError as exc:
            res = RetrieveResult(
                batch_id=batch_id,
                series=job.series,
                status="ended",
                archived=True,
                submitted=len(job.inputs),
                failed=len(store.load(batch_id).failures),
                message=exc.message,
            )
            if not resubmit_archived:
                raise
            new = await prov.resubmit_archived(batch_id)
            res.followup_batch_id = new.id if new else None
            return res
        job = store.load(batch_id)
        follow: JobRecord | None = None
        if followup and job.followup_state in ("pending", "created"):
            follow = await prov.create_followup(batch_id)
        counts = summary["counts"]
        return RetrieveResult(
            batch_id=batch_id,
            series=job.series,
            status=job.processing_status,
            submitted=counts.submitted,
            written=counts.written,
            parts_written=counts.parts_written,
            failed=counts.failed,
            retryable=counts.retryable,
            split=counts.split,
            files_written=list(summary["files_written"]),
            followup_batch_id=follow.id if follow is not None else None,
            usage=summary["usage"],
            cost=summary["cost"],
        )
    finally:
        if provider is None:
            await prov.close()


@sync_twin(retrieve_batch_async)
def retrieve_batch(
    batch_id: str,
    jobs_dir: Path | str | None = None,
    *,
    backend: str = "auto",
    followup: bool = True,
    resubmit_archived: bool = False,
    schema: type[BaseModel] = ExtractionResult,
    provider: AnthropicBatchProvider | None = None,
) -> RetrieveResult:
    """Process an ended batch's results, then submit ONE follow-up for its retryable failures.

    Idempotent and crash-safe: a re-run after a crash mid-download fetches again and dedupes by
    custom_id; the follow-up goes through exactly-once submission.

    Args:
        batch_id: The batch.
        jobs_dir: Job files folder.
        backend: ``auto`` (the backend recorded in the job file) | ``anthropic`` | ``local``.
        followup: Submit the follow-up batch (attempt limit from the job file).
        resubmit_archived: When results are past retention, send the sections again instead of
            raising :class:`ResultsArchivedError`.
        schema: Answer model (``ExtractionResult``).
        provider: A ready provider.

    Raises:
        BatchNotEndedError: the batch is still running.
        ResultsArchivedError: results archived and ``resubmit_archived`` is off (failures are
            recorded first).
    """
    raise NotImplementedError  # replaced by @sync_twin
