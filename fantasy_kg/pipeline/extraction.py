"""Pipeline steps for extraction, shared by ``fantasy-kg extract-batch``/``extract`` and Dagster.

Each step is a plain synchronous function over folders (plus an ``*_async`` twin for callers
already inside an event loop):

* :func:`submit_series`: sections in, batch jobs out. Idempotent: a section whose text hash and
  prompt version (which includes ontology, schema and model) already have a valid result file, or
  that is in a batch still running, is not sent again; with nothing new it costs $0 and makes no
  API call. Returns the series' jobs (new and in flight).
* :func:`batch_status`: the server's view of a batch, saved in its job file.
* :func:`retrieve_batch`: every result of an ended batch to a file or a recorded failure, then ONE
  follow-up batch for the retryable failures (truncated sections split in two).
* :func:`run_full`: submit, poll with progress, retrieve, follow-ups, until done or attempts run
  out; ends with the invariant ``sections = results + recorded failures``.
* :func:`extract_realtime`: the same through ``/v1/messages``, same output files.
"""

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from fantasy_kg.domain import answer as answer_sizing
from fantasy_kg.domain.answer import describe_answer
from fantasy_kg.domain.catalog import ModelInfo, default_model, get_model
from fantasy_kg.domain.errors import BudgetExceededError, InputFileError
from fantasy_kg.domain.paths import extracted_dir
from fantasy_kg.domain.paths import sections_dir as default_sections_dir
from fantasy_kg.domain.pricing import Cost, TokenUsage
from fantasy_kg.domain.prompts import prompt_version
from fantasy_kg.domain.schemas import ExtractionResult, Ontology, default_ontology, load_ontology
from fantasy_kg.domain.sections import SectionFile, read_sections, text_sha256
from fantasy_kg.llm.backend import backend_name
from fantasy_kg.llm.batch_provider import AnthropicBatchProvider, ResultsArchivedError
from fantasy_kg.llm.jobs import FailureRecord, JobRecord, JobStore
from fantasy_kg.llm.realtime import AnthropicProvider, UnifiedLLMService
from fantasy_kg.llm.requests import (
    PreflightReport,
    PreparedRequest,
    build_section_request,
    make_custom_id,
    preflight,
)
from fantasy_kg.llm.results import (
    FAILURES_DIR,
    ResultIdentity,
    check_result,
    load_failures,
    result_path,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = answer_sizing.DEFAULT_MAX_TOKENS
"""Default ``max_tokens`` (see :mod:`fantasy_kg.domain.answer`); the same as sectioning's."""

T = TypeVar("T")
StatusCallback = Callable[[JobRecord], None]


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code (CLI, Dagster ops)."""
    return asyncio.run(coro)


def default_max_tokens(model: ModelInfo) -> int:
    """:data:`DEFAULT_MAX_TOKENS` capped at the model's output limit."""
    return answer_sizing.default_max_tokens(model)


def find_series_ontology(sections_dir: Path, series: str) -> Ontology:
    """The ontology a series' sections were made with: ``<slug>_schema.json`` or the default.

    Looks next to the sections folder (``../schemas``) and in the data directory's ``schemas/``.
    """
    from fantasy_kg.pipeline.sections import find_ontology

    path = find_ontology(sections_dir, series)
    return load_ontology(path) if path is not None else default_ontology(series)


def _group_by_series(sections: list[SectionFile]) -> dict[str, list[SectionFile]]:
    groups: dict[str, list[SectionFile]] = {}
    for sec in sections:
        groups.setdefault(sec.meta.series, []).append(sec)
    return groups


# ------------------------------------------------------------------------------------------
# Planning: which sections need a request
# ------------------------------------------------------------------------------------------


@dataclass
class SubmissionPlan:
    """What :func:`plan_submission` decided for one series.

    Attributes:
        series: Series slug.
        requests: Requests to send (sections with no valid result and not in flight).
        done: custom_ids whose result file is valid for the current inputs.
        in_flight: Jobs still running (or awaiting their follow-up) that cover some sections.
        blocked: custom_ids with a permanent failure for the same inputs (sent again only with
            ``retry_failed``).
        report: Pre-flight report of ``requests`` (``None`` when there is nothing to send).
        identity: Backend, model, effort and ``max_tokens`` the requests run with.
        other_settings: custom_id -> why its existing result is not reused (made by another
            backend, model, effort or ``max_tokens``); those sections are in ``requests``.
        forced: custom_ids whose valid result is extracted again because of ``force``.
    """

    series: str
    requests: list[PreparedRequest] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    in_flight: list[JobRecord] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    report: PreflightReport | None = None
    series_name: str = ""
    identity: ResultIdentity | None = None
    other_settings: dict[str, str] = field(default_factory=dict)
    forced: list[str] = field(default_factory=list)

    def reuse_note(self) -> str | None:
        """One line on results not reused, or ``None`` when every result was reusable."""
        if self.other_settings:
            reasons = sorted(set(self.other_settings.values()))
            why = reasons[0] + (f" (and {len(reasons) - 1} other reasons)" if reasons[1:] else "")
            now = self.identity.describe() if self.identity else "the current settings"
            return (
                f"series {self.series}: {len(self.other_settings)} existing results were made "
                f"with {why}: extracting them again with {now}"
            )
        if self.forced:
            return (
                f"series {self.series}: --force: extracting {len(self.forced)} sections again "
                "although they have results"
            )
        return None


def _active_jobs(store: JobStore, series: str) -> list[JobRecord]:
    """Jobs of a series that still owe results: not processed, or follow-up not yet created."""
    return [j for j in store.all_jobs(series) if not j.is_settled or j.followup_state == "pending"]


def plan_submission(
    sections_dir: Path,
    output_dir: Path,
    series: str,
    sections: list[SectionFile],
    model: ModelInfo,
    *,
    store: JobStore,
    max_tokens: int,
    effort: str | None = None,
    ontology: Ontology | None = None,
    retry_failed: bool = False,
    backend: str = "local",
    output_ratio: float = answer_sizing.DEFAULT_OUTPUT_RATIO,
    force: bool = False,
) -> SubmissionPlan:
    """Decide which sections of a series must be sent (no network, nothing written).

    A section is skipped only when its result was made from the same text and prompt version
    by the same backend, model, effort and ``max_tokens`` (invariant 10); ``force`` sends every
    section that is not in flight again. ``effort`` defaults to
    :data:`~fantasy_kg.domain.answer.DEFAULT_EFFORT` on models that think.
    """
    onto = ontology or find_series_ontology(sections_dir, series)
    pv = prompt_version(onto, model.id)
    sent_effort = answer_sizing.request_effort(model, effort)
    run_effort = answer_sizing.effective_effort(model, sent_effort)
    first_extra = sections[0].meta.model_extra or {} if sections else {}
    plan = SubmissionPlan(
        series=series,
        series_name=str(first_extra.get("series_name", "") or onto.name or ""),
        identity=ResultIdentity(
            backend=backend, model=model.id, effort=run_effort or "", max_tokens=max_tokens
        ),
    )
    active = _active_jobs(store, series)
    busy: dict[tuple[str, str, str], JobRecord] = {}
    for job in active:
        for cid, ref in job.inputs.items():
            key = (ref.split_root or cid, ref.sha256, ref.prompt_version)
            busy[key] = job
    permanent: dict[str, FailureRecord] = {
        f.custom_id: f for f in load_failures(output_dir, series) if not f.retryable
    }
    used: set[str] = set()
    for sec in sections:
        cid = make_custom_id(sec.stem, used)
        sha = sec.meta.sha256 or text_sha256(sec.text)
        check = check_result(output_dir, cid, sha, pv, plan.identity)
        if check.valid and not force:
            plan.done.append(cid)
            continue
        if check.valid:
            plan.forced.append(cid)
        elif check.other_settings is not None:
            plan.other_settings[cid] = check.other_settings
        running = busy.get((cid, sha, pv))
        if running is not None:
            if running.id not in {j.id for j in plan.in_flight}:
                plan.in_flight.append(running)
            continue
        failure = permanent.get(cid)
        if failure is not None and not retry_failed and _same_inputs(store, failure, sha, pv):
            plan.blocked.append(cid)
            continue
        plan.requests.append(
            build_section_request(
                sec,
                onto,
                model.id,
                max_tokens,
                custom_id=cid,
                effort=sent_effort,
                series_name=str((sec.meta.model_extra or {}).get("series_name", "")) or None,
            )
        )
    if plan.requests:
        plan.report = preflight(plan.requests, model.id, output_ratio=output_ratio)
    return plan


def _same_inputs(store: JobStore, failure: FailureRecord, sha: str, pv: str) -> bool:
    """Whether a recorded failure was for the same section text and prompt version."""
    if not store.exists(failure.batch_id):
        return False
    ref = store.load(failure.batch_id).inputs.get(failure.custom_id)
    return ref is not None and ref.sha256 == sha and ref.prompt_version == pv


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
    sec_dir = (Path(sections_dir) if sections_dir is not None else default_sections_dir()).resolve()
    out_dir = (Path(output_dir) if output_dir is not None else extracted_dir()).resolve()
    info = get_model(model or default_model())
    tokens = max_tokens or default_max_tokens(info)
    store = JobStore(jobs_dir)
    sections = read_sections(sec_dir, series)
    if not sections:
        where = f" for series {series!r}" if series else ""
        raise InputFileError(f"no section files{where} in {sec_dir} (run `fantasy-kg sections`)")
    bname = provider.backend if provider is not None else backend_name(backend)
    plans = [
        plan_submission(
            sec_dir,
            out_dir,
            slug,
            secs,
            info,
            store=store,
            max_tokens=tokens,
            effort=effort,
            output_ratio=output_ratio,
            force=force,
            backend=bname,
            ontology=ontology,
            retry_failed=retry_failed,
        )
        for slug, secs in _group_by_series(sections).items()
    ]
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
    return _run(
        submit_series_async(
            sections_dir,
            output_dir,
            series,
            model,
            jobs_dir=jobs_dir,
            backend=backend,
            max_cost=max_cost,
            max_tokens=max_tokens,
            effort=effort,
            output_ratio=output_ratio,
            force=force,
            ontology=ontology,
            retry_failed=retry_failed,
            max_attempts=max_attempts,
            provider=provider,
        )
    )


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
    sec_dir = (Path(sections_dir) if sections_dir is not None else default_sections_dir()).resolve()
    out_dir = (Path(output_dir) if output_dir is not None else extracted_dir()).resolve()
    info = get_model(model or default_model())
    store = JobStore(jobs_dir)
    sections = read_sections(sec_dir, series)
    bname = backend_name(backend)
    return [
        plan_submission(
            sec_dir,
            out_dir,
            slug,
            secs,
            info,
            store=store,
            max_tokens=max_tokens or default_max_tokens(info),
            effort=effort,
            output_ratio=output_ratio,
            force=force,
            backend=bname,
            retry_failed=retry_failed,
        )
        for slug, secs in _group_by_series(sections).items()
    ]


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
    return _run(batch_status_async(batch_id, jobs_dir, backend=backend, provider=provider))


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
    return _run(
        retrieve_batch_async(
            batch_id,
            jobs_dir,
            backend=backend,
            followup=followup,
            resubmit_archived=resubmit_archived,
            schema=schema,
            provider=provider,
        )
    )


# ------------------------------------------------------------------------------------------
# Full run
# ------------------------------------------------------------------------------------------


@dataclass
class FullRunResult:
    """End state of :func:`run_full` for the sections it covered.

    ``sections == written + failed + pending`` where ``written`` counts result files valid for
    the current inputs, ``failed`` recorded failures and ``pending`` sections still in a batch
    (only when polling timed out).
    """

    sections: int
    written: int
    failed: int
    pending: int
    batches: list[RetrieveResult] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost: Cost = field(default_factory=lambda: Cost(batch_usd=0.0, realtime_usd=0.0))
    failures: list[FailureRecord] = field(default_factory=list)

    @property
    def truncated(self) -> int:
        """Answers cut at ``max_tokens`` (or the window) and split into halves: planning misses."""
        return sum(b.split for b in self.batches)

    @property
    def followup_batches(self) -> int:
        """Follow-up batches created (for halves of cut answers and retryable failures)."""
        return sum(1 for b in self.batches if b.followup_batch_id)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what the CLI prints)."""
        return {
            "sections": self.sections,
            "written": self.written,
            "failed": self.failed,
            "pending": self.pending,
            "truncated": self.truncated,
            "followup_batches": self.followup_batches,
            "batches": [
                b.to_json() | {"files_written": len(b.files_written)} for b in self.batches
            ],
            "usage": self.usage.model_dump() | {"total_tokens": self.usage.total_tokens},
            "cost_usd": {
                "batch": round(self.cost.batch_usd, 6),
                "realtime_equivalent": round(self.cost.realtime_usd, 6),
            },
            "failures": [
                {
                    "custom_id": f.custom_id,
                    "type": f.type,
                    "retryable": f.retryable,
                    "message": f.message,
                }
                for f in self.failures
            ],
        }


async def run_full_async(
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
    retry_failed: bool = False,
    max_attempts: int = 2,
    poll_interval_seconds: float = 60.0,
    max_wait_hours: float = 24.0,
    on_status: StatusCallback | None = None,
    provider: AnthropicBatchProvider | None = None,
) -> FullRunResult:
    """Async twin of :func:`run_full`."""
    store = JobStore(jobs_dir)
    out_dir = (Path(output_dir) if output_dir is not None else extracted_dir()).resolve()
    sec_dir = (Path(sections_dir) if sections_dir is not None else default_sections_dir()).resolve()
    info = get_model(model or default_model())
    sections = read_sections(sec_dir, series)
    if not sections:
        raise InputFileError(f"no section files in {sec_dir} (run `fantasy-kg sections`)")
    owned = provider is None
    prov = provider or AnthropicBatchProvider(
        jobs_dir=store.root, backend=backend, max_attempts=max_attempts
    )
    results: list[RetrieveResult] = []
    pending_ids: set[str] = set()
    try:
        jobs = await submit_series_async(
            sec_dir,
            out_dir,
            series,
            info.id,
            jobs_dir=store.root,
            backend=backend,
            max_cost=max_cost,
            max_tokens=max_tokens,
            effort=effort,
            output_ratio=output_ratio,
            force=force,
            retry_failed=retry_failed,
            max_attempts=max_attempts,
            provider=prov,
        )
        queue = [j.id for j in jobs]
        done: set[str] = set()
        while queue:
            batch_id = queue.pop(0)
            if batch_id in done:
                continue
            done.add(batch_id)
            job = store.load(batch_id)
            if not job.is_ended:
                try:
                    await prov.poll_until_complete(
                        batch_id, poll_interval_seconds, max_wait_hours, on_update=on_status
                    )
                except TimeoutError:
                    logger.warning("batch %s still running; retrieve it later", batch_id)
                    pending_ids.update(job.inputs)
                    continue
            res = await retrieve_batch_async(batch_id, store.root, provider=prov)
            results.append(res)
            if res.followup_batch_id and res.followup_batch_id not in done:
                queue.append(res.followup_batch_id)
    finally:
        if owned:
            await prov.close()
    return _final_state(sections, out_dir, info, store, results, pending_ids)


def _final_state(
    sections: list[SectionFile],
    out_dir: Path,
    info: ModelInfo,
    store: JobStore,
    results: list[RetrieveResult],
    pending_ids: set[str],
) -> FullRunResult:
    usage = TokenUsage()
    batch = realtime = 0.0
    for res in results:
        usage = usage + res.usage
        batch += res.cost.batch_usd
        realtime += res.cost.realtime_usd
    # Only these sections' failure records: other series' records are not opened.
    series_names = {sec.meta.series for sec in sections}
    failures = {
        f.custom_id: f for name in series_names for f in load_failures(out_dir, name or None)
    }
    written = failed = pending = 0
    used: set[str] = set()
    listed: list[FailureRecord] = []
    for sec in sections:
        cid = make_custom_id(sec.stem, used)
        if result_path(out_dir, cid).is_file():
            written += 1
        elif cid in pending_ids:
            pending += 1
        elif cid in failures:
            failed += 1
            listed.append(failures[cid])
        else:
            # Every section was submitted, is in flight, or has a result: a section with none of
            # them would break invariant 2, so it is reported loudly rather than counted silently.
            logger.error("section %s has neither a result nor a recorded failure", cid)
            failed += 1
            listed.append(
                FailureRecord(
                    custom_id=cid,
                    batch_id="",
                    type="missing_result",
                    message="no result and no failure record",
                    retryable=True,
                )
            )
    truncated = sum(r.split for r in results)
    if truncated:
        logger.warning(
            "%d answers were cut at max_tokens and split into halves (one more batch round "
            "each): lower --max-section-tokens or raise --max-tokens",
            truncated,
        )
    logger.info(
        "extraction: %d sections = %d written + %d failed + %d pending; cost $%.4f batch "
        "($%.4f real-time equivalent); failures in %s",
        len(sections),
        written,
        failed,
        pending,
        batch,
        realtime,
        out_dir / FAILURES_DIR,
    )
    return FullRunResult(
        sections=len(sections),
        written=written,
        failed=failed,
        pending=pending,
        batches=results,
        usage=usage,
        cost=Cost(batch_usd=batch, realtime_usd=realtime),
        failures=listed,
    )


def run_full(
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
    retry_failed: bool = False,
    max_attempts: int = 2,
    poll_interval_seconds: float = 60.0,
    max_wait_hours: float = 24.0,
    on_status: StatusCallback | None = None,
    provider: AnthropicBatchProvider | None = None,
) -> FullRunResult:
    """Submit, poll (``on_status`` after every poll), retrieve and follow up until done.

    Sections already extracted are skipped; batches already in flight are polled rather than
    resubmitted, so re-running after a crash or a timeout continues where it stopped.
    Arguments are those of :func:`submit_series` plus the polling settings.
    """
    return _run(
        run_full_async(
            sections_dir,
            output_dir,
            series,
            model,
            jobs_dir=jobs_dir,
            backend=backend,
            max_cost=max_cost,
            max_tokens=max_tokens,
            effort=effort,
            output_ratio=output_ratio,
            force=force,
            retry_failed=retry_failed,
            max_attempts=max_attempts,
            poll_interval_seconds=poll_interval_seconds,
            max_wait_hours=max_wait_hours,
            on_status=on_status,
            provider=provider,
        )
    )


# ------------------------------------------------------------------------------------------
# Real time
# ------------------------------------------------------------------------------------------


async def extract_realtime_async(
    sections_dir: Path | str | None,
    output_dir: Path | str | None,
    series: str | None = None,
    model: str | None = None,
    *,
    backend: str = "auto",
    max_tokens: int | None = None,
    effort: str | None = None,
    output_ratio: float = answer_sizing.DEFAULT_OUTPUT_RATIO,
    force: bool = False,
    max_concurrency: int = 4,
    max_attempts: int = 2,
    retry_failed: bool = False,
    max_cost: float | None = None,
    on_done: Callable[[str], None] | None = None,
    provider: AnthropicProvider | None = None,
) -> FullRunResult:
    """Async twin of :func:`extract_realtime`."""
    out_dir = (Path(output_dir) if output_dir is not None else extracted_dir()).resolve()
    sec_dir = (Path(sections_dir) if sections_dir is not None else default_sections_dir()).resolve()
    info = get_model(model or default_model())
    sections = read_sections(sec_dir, series)
    if not sections:
        raise InputFileError(f"no section files in {sec_dir} (run `fantasy-kg sections`)")
    store = JobStore(None)
    bname = provider.backend if provider is not None else backend_name(backend)
    plans = [
        plan_submission(
            sec_dir,
            out_dir,
            slug,
            secs,
            info,
            store=store,
            max_tokens=max_tokens or default_max_tokens(info),
            effort=effort,
            output_ratio=output_ratio,
            force=force,
            backend=bname,
            retry_failed=retry_failed,
        )
        for slug, secs in _group_by_series(sections).items()
    ]
    for plan in plans:
        note = plan.reuse_note()
        if note:
            logger.warning(note)
    requests = [r for p in plans for r in p.requests]
    estimate = sum(p.report.estimated_cost.realtime_usd for p in plans if p.report)
    if max_cost is not None and estimate > max_cost:
        raise BudgetExceededError(
            f"estimated real-time cost ${estimate:.2f} exceeds --max-cost ${max_cost:.2f}; "
            "nothing was sent"
        )
    results: list[RetrieveResult] = []
    if requests:
        service = UnifiedLLMService(
            provider or AnthropicProvider(backend=backend),
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
        )
        try:
            summary = await service.process_requests(requests, out_dir, info.id, on_done=on_done)
        finally:
            if provider is None:
                await service.close()
        results.append(
            RetrieveResult(
                batch_id="realtime",
                series=series or "",
                status="ended",
                submitted=summary["submitted"],
                written=summary["processed"],
                failed=summary["failed"],
                retryable=summary["retryable"],
                split=summary["split"],
                files_written=summary["files_written"],
                usage=summary["usage"],
                cost=summary["cost"],
            )
        )
    return _final_state(sections, out_dir, info, store, results, set())


def extract_realtime(
    sections_dir: Path | str | None,
    output_dir: Path | str | None,
    series: str | None = None,
    model: str | None = None,
    *,
    backend: str = "auto",
    max_tokens: int | None = None,
    effort: str | None = None,
    output_ratio: float = answer_sizing.DEFAULT_OUTPUT_RATIO,
    force: bool = False,
    max_concurrency: int = 4,
    max_attempts: int = 2,
    retry_failed: bool = False,
    max_cost: float | None = None,
    on_done: Callable[[str], None] | None = None,
    provider: AnthropicProvider | None = None,
) -> FullRunResult:
    """Extract sections through the real-time Messages API; same files as batch mode.

    Idempotent like :func:`submit_series` (sections with valid results are skipped). Costs the
    full real-time price (twice the batch rate).
    """
    return _run(
        extract_realtime_async(
            sections_dir,
            output_dir,
            series,
            model,
            backend=backend,
            max_tokens=max_tokens,
            effort=effort,
            output_ratio=output_ratio,
            force=force,
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
            retry_failed=retry_failed,
            max_cost=max_cost,
            on_done=on_done,
            provider=provider,
        )
    )
