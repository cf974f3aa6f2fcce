"""Asset group ``warehouse``: one series' knowledge graph and cost summary, loaded into DuckDB.

Thin wiring over :func:`fantasy_kg.pipeline.graph.load_series_from_files` and
:mod:`fantasy_kg.pipeline.costs`; both replace exactly their series' rows. Pools and scale-out
mode: docs/architecture.md, "Warehouse".
"""

from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from fantasy_kg.defs.errors import transient_retry_policy, user_errors_as_failures
from fantasy_kg.defs.keys import (
    BOOK_SECTIONS,
    COST_CODE_VERSION,
    COST_SUMMARY,
    EXTRACTION_RESULTS,
    GRAPH_CODE_VERSION,
    KNOWLEDGE_GRAPH,
    OWNERS,
    WAREHOUSE_POOL,
)
from fantasy_kg.defs.outcomes import backend_label
from fantasy_kg.defs.resources import AnthropicBatchResource
from fantasy_kg.pipeline.costs import load_cost_report, series_cost_report
from fantasy_kg.pipeline.graph import load_series_from_files
from fantasy_kg.pipeline.pictures import CostBar, cost_chart_png, markdown_image
from fantasy_kg.warehouse.schema import column_docs
from fantasy_kg.warehouse.shards import CatalogCache, open_catalog, scale_out_root

FACT_TABLES = (
    "entities",
    "entity_aliases",
    "mentions",
    "relationships",
    "evidence",
    "schema_proposals",
    "sections",
)
"""Tables whose column schema the knowledge_graph materialization shows."""

_TOP = 10


class WarehouseResource(DuckDBResource):
    """``DuckDBResource`` for the warehouse engine ``FANTASY_KG_WAREHOUSE`` selects.

    One file (default): exactly ``DuckDBResource`` on ``database``. Scale-out: ``get_connection``
    yields an in-memory catalog over every published series (shard root beside ``database``, or
    the root the setting names), so assets, checks and ``fantasy-kg sql`` read the same data.
    During a run, :func:`series_connection` reuses one series' catalog across the run's steps
    (:class:`~fantasy_kg.warehouse.shards.CatalogCache`), closed when the run ends.
    """

    _catalogs: CatalogCache | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Start the run's catalog cache (scale-out only)."""
        root = scale_out_root(Path(self.database))
        self._catalogs = CatalogCache(root) if root is not None else None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the catalogs the run's steps opened."""
        if self._catalogs is not None:
            if context.log is not None:
                context.log.debug(f"warehouse catalogs opened by this run: {self._catalogs.opened}")
            self._catalogs.close()
            self._catalogs = None

    @contextmanager
    def get_connection(self) -> Iterator[Any]:
        """A connection to the warehouse; closed when the block ends."""
        root = scale_out_root(Path(self.database))
        if root is None:
            with super().get_connection() as conn:
                yield conn
            return
        with closing(open_catalog(root)) as conn:
            yield conn

    @property
    def catalogs(self) -> CatalogCache | None:
        """The run's series catalogs (scale-out mode, between setup and teardown), else None."""
        return self._catalogs


@contextmanager
def series_connection(duckdb: DuckDBResource, series: str) -> Iterator[Any]:
    """A connection for reading one series' rows (every query filters on ``series``).

    Scale-out: a catalog of that series alone, so a partition's steps do not resolve every
    published series (their cost would grow with the library), reused across the run's steps
    while the series is not published again. One file: ``get_connection``.
    """
    root = scale_out_root(Path(duckdb.database))
    if root is None:
        with duckdb.get_connection() as conn:
            yield conn
        return
    cache = duckdb.catalogs if isinstance(duckdb, WarehouseResource) else None
    if cache is not None:
        with cache.connect(series) as conn:
            yield conn
        return
    with closing(open_catalog(root, series)) as conn:
        yield conn


def _location(database: str) -> str:
    """Where the warehouse is: the DuckDB file, or the shard root in scale-out mode."""
    root = scale_out_root(Path(database))
    return root.location if root is not None else database


def table_schema(table: str) -> dg.TableSchema:
    """The Dagster column schema of a warehouse table, with a description for every column.

    Built from the row class that declares the table (the same declaration the DDL comes from),
    so the UI's column table and the database cannot disagree.
    """
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=name, type=dtype, description=doc)
            for name, dtype, doc in column_docs(table)
        ]
    )


def _md_table(header: list[str], rows: list[list[object]]) -> str:
    """A small Markdown table (values escaped for the pipe character)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.4f}" if abs(value) < 1 else f"{value:,.2f}"
        if isinstance(value, int):
            return f"{value:,}"
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value[:5]) + (" …" if len(value) > 5 else "")
        return str(value).replace("|", "\\|")

    align = [
        "---:" if rows and isinstance(rows[0][i], int | float) else "---"
        for i in range(len(header))
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _lock_wait_logger(context: dg.AssetExecutionContext) -> Callable[[float, float], None]:
    """Report a wait for another process's DuckDB lock in the run's log (it is not a hang)."""

    def report(waited: float, limit: float) -> None:
        context.log.info(
            f"waiting for the DuckDB lock held by another process: {waited:.0f} s of "
            f"{limit:.0f} s (lock_wait_seconds)"
        )

    return report


def build_warehouse_assets(
    partitions_def: dg.PartitionsDefinition,
) -> list[dg.AssetsDefinition]:
    """``knowledge_graph`` and ``cost_summary`` for the given series partitions."""

    def warehouse_asset(
        key: dg.AssetKey,
        deps: list[dg.AssetKey],
        code_version: str,
        *,
        table: str,
        stage: str,
        description: str,
    ) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
        """What both assets that write DuckDB share: the writers' pool, retries, kinds, group."""
        return dg.asset(
            key=key,
            deps=deps,
            partitions_def=partitions_def,
            group_name="warehouse",
            description=description,
            kinds={"duckdb", "python"},
            owners=OWNERS,
            code_version=code_version,
            pool=WAREHOUSE_POOL,
            retry_policy=transient_retry_policy(),
            metadata={"dagster/table_name": table},
            tags={"fantasy_kg/stage": stage},
        )

    @warehouse_asset(
        KNOWLEDGE_GRAPH,
        [EXTRACTION_RESULTS],
        GRAPH_CODE_VERSION,
        table="entities",
        stage="graph",
        description=(
            "The knowledge graph of one series in DuckDB: resolved entities with aliases, "
            "deduplicated relationships, and every mention and evidence quote grounded to "
            "character offsets in its book."
        ),
    )
    def knowledge_graph(
        context: dg.AssetExecutionContext,
        anthropic_batches: AnthropicBatchResource,
        duckdb: DuckDBResource,
    ) -> dg.MaterializeResult[None]:
        res = anthropic_batches
        series = context.partition_key
        with user_errors_as_failures():
            summary = load_series_from_files(
                res.sections_path,
                res.extracted_path,
                series,
                Path(duckdb.database),
                jobs_dir=res.jobs_path,
                ontology_path=res.ontology_path(series),
                allow_mixed_backends=res.allow_mixed_backends,
                lock_wait=res.lock_wait_seconds,
                on_lock_wait=_lock_wait_logger(context),
            )
        with series_connection(duckdb, series) as conn:
            schemas = {t: table_schema(t) for t in FACT_TABLES}
            top_entities = conn.execute(
                "SELECT name, type, mention_count, relationship_count, aliases "
                "FROM entity_summary WHERE series = ? "
                "ORDER BY mention_count DESC, relationship_count DESC, name LIMIT ?",
                [series, _TOP],
            ).fetchall()
            top_edges = conn.execute(
                "SELECT name_a, name_b, relationship_types, weight, grounded_evidence_count "
                "FROM character_network WHERE series = ? "
                "ORDER BY weight DESC, name_a, name_b LIMIT ?",
                [series, _TOP],
            ).fetchall()
            backends = [
                str(r[0])
                for r in conn.execute(
                    "SELECT DISTINCT backend FROM sections "
                    "WHERE series = ? AND backend IS NOT NULL ORDER BY 1",
                    [series],
                ).fetchall()
            ]
        context.log.info(
            f"loaded {series}: {summary.entities} entities, {summary.relationships} "
            f"relationships, grounding rate {summary.grounding_rate:.1%}"
        )
        metadata: dict[str, Any] = {
            "entities": summary.entities,
            "relationships": summary.relationships,
            "grounding_rate": dg.MetadataValue.float(summary.grounding_rate),
            "backend": ", ".join(backend_label(b) for b in backends) or "none",
            "top_entities": dg.MetadataValue.md(
                _md_table(
                    ["entity", "type", "mentions", "relationships", "aliases"],
                    [list(r) for r in top_entities],
                )
            ),
            "top_character_links": dg.MetadataValue.md(
                _md_table(
                    ["source", "target", "relationship types", "weight", "grounded quotes"],
                    [list(r) for r in top_edges],
                )
            ),
            "dagster/row_count": dg.MetadataValue.int(summary.row_counts.get("entities", 0)),
            "dagster/column_schema": schemas["entities"],
            "mentions": summary.mentions,
            "evidence": summary.evidence,
            "mention_grounding_rate": dg.MetadataValue.float(summary.mention_grounding_rate),
            "evidence_grounding_rate": dg.MetadataValue.float(summary.evidence_grounding_rate),
            "orphan_relationships": summary.orphan_relationships,
            "ungrounded_relationships": summary.ungrounded_relationships,
            "out_of_ontology_relationships": summary.out_of_ontology_relationships,
            "pending_schema_proposals": summary.pending_proposals,
            "unresolved_failures": summary.unresolved_failures,
            "entity_merges": summary.merges,
            "kept_apart": summary.kept_apart,
            "ontology_version": summary.ontology_version,
            "database": dg.MetadataValue.path(_location(duckdb.database)),
            "load_seconds": dg.MetadataValue.float(summary.seconds),
        }
        for table, count in sorted(summary.row_counts.items()):
            metadata[f"rows/{table}"] = dg.MetadataValue.int(count)
        for table, schema in schemas.items():
            if table != "entities":
                metadata[f"schema/{table}"] = dg.MetadataValue.table_schema(schema)
        return dg.MaterializeResult(metadata=metadata)

    @warehouse_asset(
        COST_SUMMARY,
        [BOOK_SECTIONS, EXTRACTION_RESULTS],
        COST_CODE_VERSION,
        table="costs",
        stage="costs",
        description=(
            "What one series' extraction was estimated to cost before submission and what it "
            "cost after, per model, at the batch rate beside the real-time price (DuckDB "
            "tables costs and batch_jobs)."
        ),
    )
    def cost_summary(
        context: dg.AssetExecutionContext,
        anthropic_batches: AnthropicBatchResource,
        duckdb: DuckDBResource,
    ) -> dg.MaterializeResult[None]:
        res = anthropic_batches
        series = context.partition_key
        with user_errors_as_failures():
            report = series_cost_report(res.sections_path, res.jobs_path, series, res.model_id)
            counts = load_cost_report(
                Path(duckdb.database),
                report,
                lock_wait=res.lock_wait_seconds,
                on_lock_wait=_lock_wait_logger(context),
            )
        with series_connection(duckdb, series) as conn:
            schema = table_schema("costs")
            attempts = conn.execute(
                "SELECT coalesce(model, 'unknown'), coalesce(attempt, 1), "
                "coalesce(sum(estimated_usd), 0), coalesce(sum(actual_usd), 0), "
                "bool_or(backend IS DISTINCT FROM 'local') "
                "FROM costs WHERE series = ? GROUP BY 1, 2 ORDER BY 1, 2",
                [series],
            ).fetchall()
        bars = [
            CostBar(str(m), int(a), float(p), float(x), bool(billed))
            for m, a, p, x, billed in attempts
        ]
        chart = cost_chart_png(bars, series=series)
        estimates = [
            [
                e.model.id,
                e.total.sections,
                e.total.input_tokens,
                int(e.total.output_tokens),
                float(e.total.realtime_usd),
                float(e.total.batch_usd),
                float(e.total.batch_cached_prefix_usd),
            ]
            for e in report.estimates
        ]
        actual = [
            [
                m.model,
                backend_label(m.backend),
                m.mode,
                m.batches,
                m.input_tokens + m.cache_write_tokens + m.cache_read_tokens,
                m.output_tokens,
                m.estimated_usd,
                m.actual_usd,
                m.realtime_equivalent_usd,
                m.savings_usd,
            ]
            for m in report.by_model
        ]
        local_only = bool(report.by_model) and all(m.backend == "local" for m in report.by_model)
        if local_only:
            context.log.info(
                "local backend: nothing was billed; dollars show what the model would have cost"
            )
        metadata: dict[str, Any] = {
            "dagster/row_count": dg.MetadataValue.int(counts.get("costs", 0)),
            "dagster/column_schema": schema,
            "estimated_usd": dg.MetadataValue.float(round(report.estimated_usd, 6)),
            "actual_usd": dg.MetadataValue.float(round(report.actual_usd, 6)),
            "realtime_equivalent_usd": dg.MetadataValue.float(
                round(report.realtime_equivalent_usd, 6)
            ),
            "batch_savings_usd": dg.MetadataValue.float(
                round(report.realtime_equivalent_usd - report.actual_usd, 6)
            ),
            "billed_usd": dg.MetadataValue.float(round(report.billed_usd, 6)),
            "max_cost_usd": dg.MetadataValue.float(res.max_cost_usd)
            if res.max_cost_usd is not None
            else dg.MetadataValue.null(),
            "batches": len(report.batch_jobs),
            "note": (
                "local backend: nothing billed; dollars are what the model would have cost"
                if local_only
                else "actual = batch rate from the API's usage fields; estimate = pre-flight"
            ),
            "actual_by_model": dg.MetadataValue.md(
                _md_table(
                    [
                        "model",
                        "backend",
                        "mode",
                        "batches",
                        "input tokens",
                        "output tokens",
                        "estimated $",
                        "actual $",
                        "real-time $",
                        "saved $",
                    ],
                    actual,
                )
            ),
            "estimate_by_model": dg.MetadataValue.md(
                _md_table(
                    [
                        "model",
                        "sections",
                        "input tokens",
                        "est. output tokens",
                        "real-time $",
                        "batch $",
                        "batch + cached prefix $",
                    ],
                    estimates,
                )
            ),
            "rows/batch_jobs": dg.MetadataValue.int(counts.get("batch_jobs", 0)),
            "cost_chart": dg.MetadataValue.md(
                markdown_image(chart, "planned vs actual cost per model and attempt")
                + "\n\n"
                + _md_table(
                    ["model", "attempt", "planned $", "actual $"],
                    [[b.model, b.attempt, b.planned_usd, b.actual_usd] for b in bars],
                )
            ),
        }
        return dg.MaterializeResult(metadata=metadata)

    return [knowledge_graph, cost_summary]
