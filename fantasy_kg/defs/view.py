"""Asset ``graph_view`` and its check: the series' HTML graph page and a PNG preview.

Thin wiring over :func:`fantasy_kg.pipeline.view.write_view` (the same function as
``fantasy-kg view``) and :func:`fantasy_kg.pipeline.pictures.network_png`. The page and the
preview are written to ``<data_dir>/views/``; the metadata carries their paths, a ``file://`` link
and the preview itself as an inline image, so the UI shows the main characters' network without
opening anything.
"""

from pathlib import Path
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from fantasy_kg.defs.errors import user_errors_as_failures
from fantasy_kg.defs.keys import (
    GRAPH_VIEW,
    KNOWLEDGE_GRAPH,
    OWNERS,
    VIEW_CODE_VERSION,
    WAREHOUSE_POOL,
)
from fantasy_kg.defs.resources import AnthropicBatchResource
from fantasy_kg.defs.warehouse import series_connection
from fantasy_kg.domain import paths
from fantasy_kg.pipeline.pictures import markdown_image, network_png
from fantasy_kg.pipeline.view import default_output, page_entity_ids, write_view


def build_view_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """``graph_view`` for the given series partitions."""

    @dg.asset(
        key=GRAPH_VIEW,
        deps=[KNOWLEDGE_GRAPH],
        partitions_def=partitions_def,
        group_name="warehouse",
        description=(
            "One self-contained HTML page of the series' graph (search, type filters, an "
            "'as of book / chapter' slider, evidence quotes) and a PNG of the main characters' "
            "network."
        ),
        kinds={"html", "python"},
        owners=OWNERS,
        code_version=VIEW_CODE_VERSION,
        # Reading the DuckDB file also takes its lock: queue behind the writers.
        pool=WAREHOUSE_POOL,
        tags={"fantasy_kg/stage": "view"},
    )
    def graph_view(
        context: dg.AssetExecutionContext,
        anthropic_batches: AnthropicBatchResource,
        duckdb: DuckDBResource,
    ) -> dg.MaterializeResult[None]:
        series = context.partition_key
        root = anthropic_batches.root
        page = default_output(series, root)
        with user_errors_as_failures():
            summary, payload = write_view(Path(duckdb.database), series, page)
        preview = network_png(payload)
        preview_path = paths.confined(root / "views", f"{series}_preview.png")
        preview_path.write_bytes(preview)
        context.log.info(
            f"{series}: {summary.nodes} entities, {summary.edges} relationships -> {page}"
        )
        metadata: dict[str, Any] = {
            "path": dg.MetadataValue.path(str(page)),
            "link": dg.MetadataValue.url(page.resolve().as_uri()),
            "preview": dg.MetadataValue.md(markdown_image(preview, "main characters")),
            "preview_path": dg.MetadataValue.path(str(preview_path)),
            "entities": summary.nodes,
            "relationships": summary.edges,
            "evidence_quotes": summary.evidence,
            "orphans_not_drawn": summary.skipped_edges,
            "made_by": str(payload["made_by"]),
            "models": ", ".join(summary.models) or "unknown",
            "page_bytes": summary.bytes,
            "build_seconds": dg.MetadataValue.float(summary.seconds),
        }
        return dg.MaterializeResult(metadata=metadata)

    return [graph_view]


def build_view_checks(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """``view_holds_every_entity``: the written page against the warehouse."""

    @dg.asset_check(
        asset=GRAPH_VIEW,
        name="view_holds_every_entity",
        blocking=False,
        partitions_def=partitions_def,
        pool=WAREHOUSE_POOL,
        description=(
            "The HTML page on disk holds exactly the series' entities in the warehouse (read "
            "back from the page, not from the asset's metadata)."
        ),
    )
    def view_holds_every_entity(
        context: dg.AssetCheckExecutionContext,
        anthropic_batches: AnthropicBatchResource,
        duckdb: DuckDBResource,
    ) -> dg.AssetCheckResult:
        series = context.partition_key
        page = default_output(series, anthropic_batches.root)
        with series_connection(duckdb, series) as conn:
            rows = conn.execute(
                "SELECT entity_id FROM entities WHERE series = ?", [series]
            ).fetchall()
        wanted = {str(r[0]) for r in rows}
        try:
            held = set(page_entity_ids(page))
        except Exception as exc:  # a missing or foreign file is a failed check, not a crash
            return dg.AssetCheckResult(passed=False, description=str(exc))
        missing = sorted(wanted - held)
        extra = sorted(held - wanted)
        return dg.AssetCheckResult(
            passed=not missing and not extra,
            description=(
                f"page holds all {len(wanted)} entities"
                if not missing and not extra
                else f"{len(missing)} entities missing from the page, {len(extra)} not in "
                "the warehouse (re-materialize graph_view)"
            ),
            metadata={
                "entities_in_warehouse": len(wanted),
                "entities_in_page": len(held),
                "missing": dg.MetadataValue.json(missing[:20]),
                "extra": dg.MetadataValue.json(extra[:20]),
            },
        )

    return [view_holds_every_entity]
