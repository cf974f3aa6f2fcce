"""Asset group ``extraction``: one series' sections sent to Claude as Message Batches, and back.

Why it works this way: docs/architecture.md, "Dagster definitions".
"""

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from fantasy_kg.defs.errors import transient_retry_policy, user_errors_as_failures
from fantasy_kg.defs.keys import (
    BATCH_ID_TAG,
    BOOK_SECTIONS,
    EXTRACTION_BATCH,
    EXTRACTION_CODE_VERSION,
    EXTRACTION_RESULTS,
    OWNERS,
)
from fantasy_kg.defs.outcomes import (
    backend_label,
    jobs_table,
    owed_jobs,
    results_version,
    section_outcomes,
    sections_version,
)
from fantasy_kg.defs.resources import AnthropicBatchResource
from fantasy_kg.domain.pricing import Cost, TokenUsage
from fantasy_kg.llm.batch_provider import AnthropicBatchProvider
from fantasy_kg.llm.jobs import JobRecord
from fantasy_kg.pipeline.extraction import (
    RetrieveResult,
    batch_status_async,
    retrieve_batch_async,
    submit_series_async,
)
from fantasy_kg.pipeline.extraction_plan import each_once


def usage_metadata(usage: TokenUsage, cost: Cost) -> dict[str, dg.MetadataValue]:
    """Token and dollar metadata, plotted over time by the UI."""
    return {
        "input_tokens": dg.MetadataValue.int(usage.input_tokens),
        "output_tokens": dg.MetadataValue.int(usage.output_tokens),
        "thinking_tokens": dg.MetadataValue.int(usage.thinking_tokens),
        "cache_write_tokens": dg.MetadataValue.int(
            usage.cache_creation_5m_input_tokens + usage.cache_creation_1h_input_tokens
        ),
        "cache_read_tokens": dg.MetadataValue.int(usage.cache_read_input_tokens),
        "total_tokens": dg.MetadataValue.int(usage.total_tokens),
        "cost_usd": dg.MetadataValue.float(round(cost.batch_usd, 6)),
        "realtime_equivalent_usd": dg.MetadataValue.float(round(cost.realtime_usd, 6)),
    }


async def _wait_for(
    provider: AnthropicBatchProvider, batch_ids: list[str], res: AnthropicBatchResource
) -> list[JobRecord]:
    """Poll each batch until it ends or ``max_wait_seconds`` passes; return the latest records."""
    out: list[JobRecord] = []
    for batch_id in batch_ids:
        try:
            job = await provider.poll_until_complete(
                batch_id, res.poll_interval_seconds, res.max_wait_seconds / 3600
            )
        except TimeoutError:
            job = provider.store.load(batch_id)
        out.append(job)
    return out


@dataclass
class _Collected:
    """What one results pass did: batches retrieved, follow-ups sent, batches still running."""

    retrieved: list[RetrieveResult] = field(default_factory=list)
    jobs: list[JobRecord] = field(default_factory=list)
    pending: list[JobRecord] = field(default_factory=list)


async def _collect(
    provider: AnthropicBatchProvider, series: str, res: AnthropicBatchResource, wait: bool
) -> _Collected:
    """Retrieve every ended batch the series still owes results for, following up failures.

    Follow-up batches (retryable failures, split truncated sections) are retrieved in the same
    pass when ``wait`` is on (local backend); otherwise they are left to the completion sensor.
    """
    store = provider.store
    queue = [j.id for j in owed_jobs(store, series)]
    out = _Collected()
    for batch_id in each_once(queue):
        job = store.load(batch_id)
        # A batch sent through the other backend (a key added or removed since) is read through
        # the backend its job file records; the pipeline builds that client itself.
        own = provider if job.backend == provider.backend else None
        if not job.is_ended:
            job = await batch_status_async(batch_id, store.root, provider=own)
        if not job.is_ended and wait and own is not None:
            job = (await _wait_for(provider, [batch_id], res))[0]
        if not job.is_ended:
            out.pending.append(job)
            continue
        result = await retrieve_batch_async(batch_id, store.root, provider=own)
        out.retrieved.append(result)
        out.jobs.append(store.load(batch_id))
        if result.followup_batch_id:
            queue.append(result.followup_batch_id)
    return out


def build_extraction_assets(
    partitions_def: dg.PartitionsDefinition, *, claude: bool = False
) -> list[dg.AssetsDefinition]:
    """``extraction_batch`` and ``extraction_results`` for the given series partitions.

    Args:
        partitions_def: The series partitions.
        claude: Whether the code location's resource talks to Claude. The lineage badges say
            "claude" only then; with the local baseline they say "local", so a graph in the UI
            is never credited to Claude when the baseline made it.
    """
    engine = "claude" if claude else "local"

    def extraction_asset(
        key: dg.AssetKey,
        dep: dg.AssetKey,
        *,
        kinds: set[str],
        description: str,
        output_required: bool = True,
    ) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
        """What both extraction assets share: group, code version (the prompt's), retries."""
        return dg.asset(
            key=key,
            deps=[dep],
            partitions_def=partitions_def,
            group_name="extraction",
            description=description,
            kinds=kinds,
            owners=OWNERS,
            code_version=EXTRACTION_CODE_VERSION,
            retry_policy=transient_retry_policy(),
            output_required=output_required,
            tags={"fantasy_kg/stage": "extraction"},
        )

    @extraction_asset(
        EXTRACTION_BATCH,
        BOOK_SECTIONS,
        kinds={engine, "anthropic"} if claude else {engine, "python"},
        description=(
            "The Message Batch jobs that extract entities and relationships from one series' "
            "sections (job files <batch_id>.json): only sections without a valid result for "
            "the current text and prompt version are sent."
        ),
    )
    def extraction_batch(
        context: dg.AssetExecutionContext, anthropic_batches: AnthropicBatchResource
    ) -> dg.MaterializeResult[None]:
        res = anthropic_batches
        series = context.partition_key
        store = res.job_store()
        known_before = store.known_batch_ids()
        with user_errors_as_failures():
            outcomes_before = section_outcomes(res, series)
            jobs = res.run(
                lambda p: submit_series_async(
                    res.sections_path,
                    res.extracted_path,
                    series,
                    res.model_id,
                    jobs_dir=res.jobs_path,
                    backend=res.backend_name,
                    max_cost=res.max_cost_usd,
                    max_tokens=res.request_max_tokens,
                    effort=res.effort,
                    output_ratio=res.output_ratio,
                    force=res.force,
                    max_attempts=res.max_attempts,
                    provider=p,
                )
            )
            waited = False
            if jobs and res.waits_inline:
                running = [j.id for j in jobs if not j.is_ended]
                if running:
                    context.log.info(f"waiting inline for {len(running)} local batch(es)")
                    ended = {j.id: j for j in res.run(lambda p: _wait_for(p, running, res))}
                    jobs = [ended.get(j.id, j) for j in jobs]
                    waited = True
        new = [j for j in jobs if j.id not in known_before]
        status = "submitted" if new else ("in_flight" if jobs else "up_to_date")
        requests = sum(len(j.inputs) for j in new)
        estimate = Cost(
            batch_usd=sum(j.estimated_cost.batch_usd for j in new if j.estimated_cost),
            realtime_usd=sum(j.estimated_cost.realtime_usd for j in new if j.estimated_cost),
        )
        if status == "up_to_date":
            failed = len(outcomes_before.failed)
            context.log.info(
                f"{series}: nothing to submit, no cost: {outcomes_before.with_result}/"
                f"{outcomes_before.sections} sections have results for prompt version "
                f"{outcomes_before.prompt_version}"
                + (f"; {failed} recorded permanent failure(s) are not resent" if failed else "")
            )
        for job in new:
            context.log.info(
                f"submitted batch_id={job.id} requests={len(job.inputs)} backend={job.backend}"
            )
        metadata: dict[str, Any] = {
            "status": status,
            "batch_id": jobs[0].id if jobs else "",
            "batch_ids": dg.MetadataValue.json([j.id for j in jobs]),
            "new_batches": len(new),
            "requests_submitted": requests,
            "sections": outcomes_before.sections,
            "sections_already_extracted": outcomes_before.with_result,
            "backend": backend_label(res.backend_name),
            "model": res.model_id,
            "effort": res.identity.effort or "none (model does not think)",
            "max_tokens": res.request_max_tokens,
            "prompt_version": outcomes_before.prompt_version,
            "estimated_cost_usd": dg.MetadataValue.float(round(estimate.batch_usd, 6)),
            "estimated_realtime_usd": dg.MetadataValue.float(round(estimate.realtime_usd, 6)),
            "max_cost_usd": dg.MetadataValue.float(res.max_cost_usd)
            if res.max_cost_usd is not None
            else dg.MetadataValue.null(),
            "waited_inline": waited,
            "jobs_dir": dg.MetadataValue.path(str(res.jobs_path)),
        }
        if jobs:
            metadata["processing_status"] = ", ".join(sorted({j.processing_status for j in jobs}))
            metadata["batches"] = dg.MetadataValue.md(jobs_table(jobs))
        # Same sections and prompt version, same data version: downstream assets stay in sync
        # when nothing had to be submitted.
        version = f"{outcomes_before.prompt_version}:{sections_version(res, series)}"
        return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))

    @extraction_asset(
        EXTRACTION_RESULTS,
        EXTRACTION_BATCH,
        kinds={engine, "json"},
        description=(
            "Validated extraction results of one series, one <custom_id>_extracted.json per "
            "section, with every failed request recorded and the retryable ones resubmitted."
        ),
        output_required=False,
    )
    def extraction_results(
        context: dg.AssetExecutionContext, anthropic_batches: AnthropicBatchResource
    ) -> Iterator[dg.MaterializeResult[None]]:
        res = anthropic_batches
        series = context.partition_key
        trigger = context.run.tags.get(BATCH_ID_TAG)
        if trigger:
            context.log.info(f"run requested by the completion sensor for batch {trigger}")
        with user_errors_as_failures():
            collected = res.run(lambda p: _collect(p, series, res, wait=res.waits_inline))
            outcomes = section_outcomes(res, series)
        if collected.pending and not collected.retrieved:
            waiting = ", ".join(
                f"{j.id} ({j.request_counts.total - j.request_counts.processing}/"
                f"{j.request_counts.total} done)"
                for j in collected.pending
            )
            context.log.info(
                f"{series}: waiting for {len(collected.pending)} batch(es) still in progress: "
                f"{waiting}. Nothing to retrieve yet; the completion sensor requests this asset "
                "when they end. Downstream assets are skipped in this run."
            )
            return
        usage = TokenUsage()
        batch_usd = realtime_usd = 0.0
        for r in collected.retrieved:
            usage = usage + r.usage
            batch_usd += r.cost.batch_usd
            realtime_usd += r.cost.realtime_usd
        by_type: Counter[str] = Counter()
        for job in collected.jobs:
            c = job.request_counts
            by_type.update(
                succeeded=c.succeeded, errored=c.errored, canceled=c.canceled, expired=c.expired
            )
        followups = [r.followup_batch_id for r in collected.retrieved if r.followup_batch_id]
        metadata: dict[str, Any] = {
            "batches_retrieved": dg.MetadataValue.json([r.batch_id for r in collected.retrieved]),
            "followup_batches": dg.MetadataValue.json(followups),
            "batches_in_progress": dg.MetadataValue.json([j.id for j in collected.pending]),
            "succeeded": by_type["succeeded"],
            "errored": by_type["errored"],
            "canceled": by_type["canceled"],
            "expired": by_type["expired"],
            "files_written": sum(r.written + r.parts_written for r in collected.retrieved),
            "failed": sum(r.failed for r in collected.retrieved),
            "resubmitted": sum(r.retryable for r in collected.retrieved),
            "split": sum(r.split for r in collected.retrieved),
            "sections": outcomes.sections,
            "sections_with_result": outcomes.with_result,
            "sections_failed": len(outcomes.failed),
            "sections_pending": len(outcomes.pending),
            "sections_missing": len(outcomes.missing),
            "failure_types": dg.MetadataValue.json(outcomes.failure_types),
            "backend": backend_label(res.backend_name),
            "prompt_version": outcomes.prompt_version,
            "results_dir": dg.MetadataValue.path(str(res.extracted_path)),
            **usage_metadata(usage, Cost(batch_usd=batch_usd, realtime_usd=realtime_usd)),
        }
        if collected.jobs:
            metadata["batches"] = dg.MetadataValue.md(jobs_table(collected.jobs))
        split = metadata["split"]
        if split:
            context.log.warning(
                f"{series}: {split} answer(s) were cut at max_tokens and split into halves "
                f"(follow-up batches: {', '.join(followups) or 'none'}); lower "
                "max_section_tokens or raise max_tokens"
            )
        if not collected.retrieved:
            context.log.info(
                f"{series}: no batch owes results; {outcomes.with_result}/{outcomes.sections} "
                "sections have results for the current inputs"
            )
        yield dg.MaterializeResult(
            metadata=metadata, data_version=dg.DataVersion(results_version(res, series))
        )

    return [extraction_batch, extraction_results]
