"""Asset group ``ingest``: the books of one series, cut into sections that fit the model.

Thin wiring over :func:`fantasy_kg.pipeline.sections.build_sections`, the same function as
``fantasy-kg sections``; re-running on unchanged books writes byte-identical files.
"""

import dagster as dg

from fantasy_kg.defs.errors import user_errors_as_failures
from fantasy_kg.defs.keys import BOOK_SECTIONS, OWNERS, SECTIONS_CODE_VERSION
from fantasy_kg.defs.outcomes import sections_version
from fantasy_kg.defs.resources import AnthropicBatchResource
from fantasy_kg.domain.sections import read_sections
from fantasy_kg.pipeline.sections import build_sections

_PREVIEW_ROWS = 30


def build_ingest_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The ``book_sections`` asset for the given series partitions."""

    @dg.asset(
        key=BOOK_SECTIONS,
        partitions_def=partitions_def,
        group_name="ingest",
        description=(
            "Section files of one series: its books cut at chapter and paragraph boundaries "
            "into <slug>_section_NN.txt pieces that fit the model's context, with token counts "
            "and book offsets in .meta.json."
        ),
        kinds={"python", "file"},
        owners=OWNERS,
        code_version=SECTIONS_CODE_VERSION,
        tags={"fantasy_kg/stage": "ingest"},
    )
    def book_sections(
        context: dg.AssetExecutionContext, anthropic_batches: AnthropicBatchResource
    ) -> dg.MaterializeResult[None]:
        series = context.partition_key
        with user_errors_as_failures():
            summary = build_sections(
                anthropic_batches.books_path,
                anthropic_batches.sections_path,
                series=series,
                model=anthropic_batches.model_id,
                max_tokens=anthropic_batches.request_max_tokens,
                max_section_tokens=anthropic_batches.max_section_tokens,
                effort=anthropic_batches.effort,
                output_ratio=anthropic_batches.output_ratio,
            )
        info = summary.series[0]
        for warning in info.warnings:
            context.log.warning(warning)
        sections = read_sections(anthropic_batches.sections_path, series)
        rows = [
            f"| {s.file_name} | {', '.join(s.meta.books)} | {s.meta.chapter_start} | "
            f"{s.meta.input_tokens:,} |"
            for s in sections[:_PREVIEW_ROWS]
        ]
        more = (
            f"\n\n… and {len(sections) - _PREVIEW_ROWS} more"
            if len(sections) > _PREVIEW_ROWS
            else ""
        )
        preview = (
            "| section | books | first chapter | tokens |\n|---|---|---|---:|\n"
            + "\n".join(rows)
            + more
        )
        return dg.MaterializeResult(
            data_version=dg.DataVersion(sections_version(anthropic_batches, series)),
            metadata={
                "series_name": info.series_name,
                "books": info.books,
                "sections": info.sections,
                "input_tokens": info.input_tokens,
                "prefix_tokens": dg.MetadataValue.int(info.prefix_tokens),
                "max_section_tokens": max((s.meta.input_tokens for s in sections), default=0),
                "token_count_method": info.token_count_method,
                "model": summary.model,
                "max_tokens": summary.max_tokens,
                "ontology": info.ontology,
                "stale_files_removed": len(info.removed),
                "warnings": len(info.warnings),
                "sections_dir": dg.MetadataValue.path(str(summary.output_dir)),
                "preview": dg.MetadataValue.md(preview),
            },
        )

    return [book_sections]
