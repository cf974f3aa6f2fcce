"""Pipeline steps for extraction, shared by ``fantasy-kg extract-batch``/``extract`` and Dagster.

:func:`submit_series`, :func:`batch_status` and :func:`retrieve_batch` (from
:mod:`~fantasy_kg.pipeline.batch_steps`, re-exported here) are the single steps; :func:`run_full`
runs them until every section is a result or a recorded failure; :func:`extract_realtime` does
the same through ``/v1/messages`` with the same output files. Step by step:
docs/architecture.md, "Extraction steps".
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fantasy_kg.domain import answer as answer_sizing
from fantasy_kg.domain.errors import BudgetExceededError
from fantasy_kg.domain.pricing import Cost, TokenUsage
from fantasy_kg.domain.sections import SectionFile
from fantasy_kg.llm.backend import backend_name
from fantasy_kg.llm.batch_provider import AnthropicBatchProvider
from fantasy_kg.llm.jobs import FailureRecord, JobStore
from fantasy_kg.llm.realtime import AnthropicProvider, UnifiedLLMService
from fantasy_kg.llm.requests import make_custom_id
from fantasy_kg.llm.results import (
    FAILURES_DIR,
    load_failures,
    result_path,
)
from fantasy_kg.pipeline.batch_steps import (
    RetrieveResult,
    announce_plan,
    batch_status,
    batch_status_async,
    preflight_series,
    preflight_summary,
    retrieve_batch,
    retrieve_batch_async,
    submit_series,
    submit_series_async,
)
from fantasy_kg.pipeline.extraction_plan import (
    DEFAULT_MAX_TOKENS,
    StatusCallback,
    SubmissionPlan,
    default_max_tokens,
    each_once,
    find_series_ontology,
    plan_series,
    plan_submission,
    read_section_inputs,
    sync_twin,
)

logger = logging.getLogger(__name__)


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
    inputs = read_section_inputs(sections_dir, output_dir, series, model)
    inputs.require_sections()
    sec_dir, out_dir, info = inputs.sections_dir, inputs.output_dir, inputs.model
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
        for batch_id in each_once(queue):
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
            if res.followup_batch_id:
                queue.append(res.followup_batch_id)
    finally:
        if owned:
            await prov.close()
    return _final_state(inputs.sections, out_dir, results, pending_ids)


def _final_state(
    sections: list[SectionFile],
    out_dir: Path,
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


@sync_twin(run_full_async)
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
    raise NotImplementedError  # replaced by @sync_twin


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
    inputs = read_section_inputs(sections_dir, output_dir, series, model)
    inputs.require_sections()
    out_dir, info = inputs.output_dir, inputs.model
    plans = plan_series(
        inputs,
        store=JobStore(None),
        backend=provider.backend if provider is not None else backend_name(backend),
        max_tokens=max_tokens,
        effort=effort,
        output_ratio=output_ratio,
        force=force,
        retry_failed=retry_failed,
    )
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
    return _final_state(inputs.sections, out_dir, results, set())


@sync_twin(extract_realtime_async)
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
    raise NotImplementedError  # replaced by @sync_twin


__all__ = [
    "DEFAULT_MAX_TOKENS",
    "FullRunResult",
    "RetrieveResult",
    "StatusCallback",
    "SubmissionPlan",
    "announce_plan",
    "batch_status",
    "batch_status_async",
    "default_max_tokens",
    "extract_realtime",
    "extract_realtime_async",
    "find_series_ontology",
    "plan_submission",
    "preflight_series",
    "preflight_summary",
    "retrieve_batch",
    "retrieve_batch_async",
    "run_full",
    "run_full_async",
    "submit_series",
    "submit_series_async",
]
