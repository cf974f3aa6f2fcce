"""Asset checks: the promises the data makes, verified after every materialization.

Why it works this way: docs/architecture.md, "Dagster definitions".
"""

from datetime import UTC, datetime

import dagster as dg
from dagster_duckdb import DuckDBResource

from fantasy_kg.defs.keys import (
    COST_SUMMARY,
    EXTRACTION_BATCH,
    EXTRACTION_RESULTS,
    KNOWLEDGE_GRAPH,
    STUCK_CHECK,
    WAREHOUSE_POOL,
)
from fantasy_kg.defs.outcomes import owed_jobs, section_outcomes, stuck_reason
from fantasy_kg.defs.resources import AnthropicBatchResource
from fantasy_kg.defs.warehouse import series_connection

DEFAULT_MIN_GROUNDING_RATE = 0.9
"""Share of mentions and evidence quotes that must be found in the text (exact, normalized or
fuzzy). The local baseline extractor quotes verbatim, so it grounds nearly everything; a real
model that paraphrases its evidence shows up here first."""

_LIST = 20


def build_checks(
    partitions_def: dg.PartitionsDefinition,
    *,
    min_grounding_rate: float = DEFAULT_MIN_GROUNDING_RATE,
) -> list[dg.AssetChecksDefinition]:
    """The six asset checks of the series assets.

    Args:
        partitions_def: The series partitions (checks run per partition, like their assets).
        min_grounding_rate: Floor of ``grounding_rate_above_floor`` (0..1).
    """

    @dg.asset_check(
        asset=EXTRACTION_RESULTS,
        name="every_section_has_result_or_failure",
        blocking=True,
        partitions_def=partitions_def,
        description=(
            "Every section of the series has a valid result for its current text and prompt "
            "version, a recorded failure, or a batch still working on it: nothing was lost."
        ),
    )
    def every_section_has_result_or_failure(
        context: dg.AssetCheckExecutionContext, anthropic_batches: AnthropicBatchResource
    ) -> dg.AssetCheckResult:
        out = section_outcomes(anthropic_batches, context.partition_key)
        return dg.AssetCheckResult(
            passed=not out.missing,
            description=(
                f"{len(out.missing)} section(s) have neither a result nor a recorded failure"
                if out.missing
                else f"{out.sections} sections = {out.with_result} results + "
                f"{len(out.failed)} recorded failures + {len(out.pending)} in flight"
            ),
            metadata={
                "sections": out.sections,
                "with_result": out.with_result,
                "recorded_failures": len(out.failed),
                "in_flight": len(out.pending),
                "missing": len(out.missing),
                "missing_custom_ids": dg.MetadataValue.json(out.missing[:_LIST]),
                "failure_types": dg.MetadataValue.json(out.failure_types),
            },
        )

    @dg.asset_check(
        asset=KNOWLEDGE_GRAPH,
        name="relationships_point_at_known_entities",
        blocking=True,
        partitions_def=partitions_def,
        pool=WAREHOUSE_POOL,
        description=(
            "Every relationship's source and target is an entity of the series, or the "
            "relationship is flagged as an orphan naming that endpoint."
        ),
    )
    def relationships_point_at_known_entities(
        context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource
    ) -> dg.AssetCheckResult:
        series = context.partition_key
        with series_connection(duckdb, context.partition_key) as conn:
            dangling = conn.execute(
                """
                SELECT r.relationship_id, e.endpoint
                FROM relationships r,
                     LATERAL (SELECT unnest([r.source_id, r.target_id]) AS endpoint) e
                WHERE r.series = ?
                  AND NOT EXISTS (SELECT 1 FROM entities x
                                  WHERE x.series = r.series AND x.entity_id = e.endpoint)
                  AND NOT list_contains(coalesce(r.orphan_endpoints, []), e.endpoint)
                ORDER BY 1, 2
                """,
                [series],
            ).fetchall()
            total, orphans = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE orphan) FROM relationships "
                "WHERE series = ?",
                [series],
            ).fetchone() or (0, 0)
        return dg.AssetCheckResult(
            passed=not dangling,
            description=(
                f"{len(dangling)} relationship endpoint(s) point at no entity and are not flagged"
                if dangling
                else f"all {total} relationships resolve ({orphans} flagged orphans)"
            ),
            metadata={
                "relationships": int(total),
                "flagged_orphans": int(orphans),
                "unflagged_dangling_endpoints": len(dangling),
                "examples": dg.MetadataValue.json([f"{r}→{e}" for r, e in dangling[:_LIST]]),
            },
        )

    @dg.asset_check(
        asset=KNOWLEDGE_GRAPH,
        name="no_duplicate_entity_ids",
        blocking=True,
        partitions_def=partitions_def,
        pool=WAREHOUSE_POOL,
        description=(
            "No two entities of the series share an id, also after case folding (entity "
            "resolution must have merged or renamed them)."
        ),
    )
    def no_duplicate_entity_ids(
        context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource
    ) -> dg.AssetCheckResult:
        with series_connection(duckdb, context.partition_key) as conn:
            dupes = conn.execute(
                "SELECT lower(entity_id) AS id, count(*) AS n, list(entity_id ORDER BY entity_id) "
                "FROM entities WHERE series = ? GROUP BY 1 HAVING count(*) > 1 ORDER BY 1",
                [context.partition_key],
            ).fetchall()
            row = conn.execute(
                "SELECT count(*) FROM entities WHERE series = ?", [context.partition_key]
            ).fetchone()
        entities = int(row[0]) if row else 0
        return dg.AssetCheckResult(
            passed=not dupes,
            description=(
                f"{len(dupes)} entity id(s) used more than once"
                if dupes
                else f"{entities} entities, all ids distinct"
            ),
            metadata={
                "entities": entities,
                "duplicate_ids": len(dupes),
                "examples": dg.MetadataValue.json([list(d[2]) for d in dupes[:_LIST]]),
            },
        )

    @dg.asset_check(
        asset=KNOWLEDGE_GRAPH,
        name="grounding_rate_above_floor",
        blocking=False,
        partitions_def=partitions_def,
        pool=WAREHOUSE_POOL,
        description=(
            f"At least {min_grounding_rate:.0%} of mentions and evidence quotes were found in "
            "the section text (exact, normalized or fuzzy)."
        ),
    )
    def grounding_rate_above_floor(
        context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource
    ) -> dg.AssetCheckResult:
        series = context.partition_key
        with series_connection(duckdb, context.partition_key) as conn:
            row = conn.execute(
                """
                SELECT count(*) FILTER (WHERE status <> 'not_found'), count(*)
                FROM (SELECT status FROM mentions WHERE series = ?
                      UNION ALL SELECT status FROM evidence WHERE series = ?)
                """,
                [series, series],
            ).fetchone()
        grounded, total = (int(row[0]), int(row[1])) if row else (0, 0)
        rate = grounded / total if total else 0.0
        return dg.AssetCheckResult(
            passed=total > 0 and rate >= min_grounding_rate,
            description=(
                f"grounding rate {rate:.1%} ({grounded}/{total}); floor {min_grounding_rate:.0%}"
            ),
            metadata={
                "grounding_rate": dg.MetadataValue.float(round(rate, 4)),
                "floor": dg.MetadataValue.float(min_grounding_rate),
                "grounded": grounded,
                "total": total,
            },
        )

    @dg.asset_check(
        asset=EXTRACTION_BATCH,
        name=STUCK_CHECK,
        blocking=False,
        partitions_def=partitions_def,
        description=(
            "No batch of the series is stuck: in progress long after it expired, or ended and "
            "still unsettled hours later. The completion sensor also reports here when results "
            "runs are exhausted or a batch cannot be polled tick after tick."
        ),
    )
    def batches_not_stuck(
        context: dg.AssetCheckExecutionContext, anthropic_batches: AnthropicBatchResource
    ) -> dg.AssetCheckResult:
        now = datetime.now(UTC)
        stuck = [
            f"{job.id}: {reason}"
            for job in owed_jobs(anthropic_batches.job_store(), context.partition_key)
            if (reason := stuck_reason(job, now))
        ]
        return dg.AssetCheckResult(
            passed=not stuck,
            description=f"stuck: {'; '.join(stuck[:_LIST])}" if stuck else "no stuck batch",
            metadata={"stuck_batches": len(stuck)},
        )

    @dg.asset_check(
        asset=COST_SUMMARY,
        name="actual_cost_within_budget",
        blocking=False,
        partitions_def=partitions_def,
        pool=WAREHOUSE_POOL,
        description=(
            "Dollars billed for the series' batches stay within the resource's max_cost_usd "
            "(the local backend bills nothing)."
        ),
    )
    def actual_cost_within_budget(
        context: dg.AssetCheckExecutionContext,
        anthropic_batches: AnthropicBatchResource,
        duckdb: DuckDBResource,
    ) -> dg.AssetCheckResult:
        with series_connection(duckdb, context.partition_key) as conn:
            row = conn.execute(
                """
                SELECT coalesce(sum(actual_usd) FILTER (WHERE backend IS DISTINCT FROM 'local'), 0),
                       coalesce(sum(actual_usd), 0),
                       coalesce(sum(estimated_usd), 0)
                FROM costs WHERE series = ?
                """,
                [context.partition_key],
            ).fetchone()
        billed, priced, estimated = (float(v) for v in row) if row else (0.0, 0.0, 0.0)
        cap = anthropic_batches.max_cost_usd
        return dg.AssetCheckResult(
            passed=cap is None or billed <= cap,
            description=(
                f"billed ${billed:.2f}"
                + (f" of a ${cap:.2f} budget" if cap is not None else " (no budget cap set)")
            ),
            metadata={
                "billed_usd": dg.MetadataValue.float(round(billed, 6)),
                "priced_usd": dg.MetadataValue.float(round(priced, 6)),
                "estimated_usd": dg.MetadataValue.float(round(estimated, 6)),
                "max_cost_usd": dg.MetadataValue.float(cap)
                if cap is not None
                else dg.MetadataValue.null(),
            },
        )

    return [
        batches_not_stuck,
        every_section_has_result_or_failure,
        relationships_point_at_known_entities,
        no_duplicate_entity_ids,
        grounding_rate_above_floor,
        actual_cost_within_budget,
    ]
