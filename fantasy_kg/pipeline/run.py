"""The whole pipeline for one series (or all): sections → batch extraction → graph → DuckDB.

This is the main job of the README (``fantasy-kg run``) and the Python API twin of materializing
every Dagster asset of a partition. It only chains the three steps the CLI and Dagster share, so
each step's idempotency carries over: re-running an unchanged series re-writes identical section
files, submits nothing (no API call, $0) and leaves DuckDB with the same rows.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fantasy_kg.domain import paths
from fantasy_kg.domain.answer import DEFAULT_OUTPUT_RATIO
from fantasy_kg.domain.catalog import default_model
from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.llm.jobs import JobRecord
from fantasy_kg.pipeline.extraction import FullRunResult, run_full
from fantasy_kg.pipeline.graph import LoadSummary, load_series_from_files
from fantasy_kg.pipeline.sections import SectionsSummary, build_sections

#: Seconds between status polls: the local backend ends batches in seconds, Claude in minutes.
LOCAL_POLL_SECONDS = 0.5
REMOTE_POLL_SECONDS = 60.0


@dataclass
class RunSummary:
    """What one run did, step by step (JSON-ready through :meth:`to_json`)."""

    series: list[str]
    sections: SectionsSummary
    extraction: FullRunResult
    loads: list[LoadSummary] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The document ``fantasy-kg run`` prints on stdout."""
        return {
            "series": self.series,
            "sections": self.sections.to_dict(),
            "extraction": self.extraction.to_json(),
            "graph": [load.as_dict() for load in self.loads],
        }


def default_poll_interval(backend: str) -> float:
    """Fast polling for the local backend, the batch guide's 60 s for the real API."""
    uses_local = backend == "local" or (
        backend == "auto" and not os.environ.get("ANTHROPIC_API_KEY")
    )
    return LOCAL_POLL_SECONDS if uses_local else REMOTE_POLL_SECONDS


def run_series(
    series: str | None = None,
    *,
    data_dir: Path | None = None,
    books_dir: Path | None = None,
    model: str | None = None,
    backend: str = "auto",
    max_cost: float | None = None,
    max_tokens: int | None = None,
    max_section_tokens: int | None = None,
    effort: str | None = None,
    output_ratio: float = DEFAULT_OUTPUT_RATIO,
    force: bool = False,
    allow_mixed_backends: bool = False,
    poll_interval_seconds: float | None = None,
    db_path: Path | None = None,
    on_status: Callable[[JobRecord], None] | None = None,
) -> RunSummary:
    """Run sections, batch extraction and the DuckDB load for one series or every series.

    Args:
        series: Series slug (a folder under ``books/``); ``None`` runs every series.
        data_dir: Root of the data layout (default ``$FANTASY_KG_DATA_DIR`` or ``./data``).
        books_dir: Input books (default ``<data>/books``).
        model: Model id or alias (default: the catalog's default).
        backend: ``auto`` | ``anthropic`` | ``local``.
        max_cost: Refuse to submit when the pre-flight batch estimate exceeds this (USD).
        max_tokens: Output budget per request, thinking included (default: 32,000 capped at
            the model's output limit).
        max_section_tokens: Cap on each section's text tokens (default: 16,000, lowered until
            the expected answer fits ``max_tokens``).
        effort: ``output_config.effort`` on models that think (default ``low``).
        output_ratio: Expected answer tokens per section token.
        force: Extract again sections that already have a result.
        allow_mixed_backends: Load a series whose results come from different backends.
        poll_interval_seconds: Seconds between polls (default depends on the backend).
        db_path: DuckDB file (default ``<data>/fantasy_kg.duckdb``).
        on_status: Called with the job record after every poll (progress bars).

    Raises:
        UserError: bad input, unknown model or series, budget exceeded; nothing half-written.
    """
    root = data_dir or paths.data_dir()
    books = books_dir or paths.books_dir(root)
    sections_dir = paths.sections_dir(root)
    extracted = paths.extracted_dir(root)
    jobs = paths.jobs_dir(root)
    db = db_path or paths.warehouse_path(root)
    model_name = model or default_model()

    sections = build_sections(
        books,
        sections_dir,
        series=series,
        model=model_name,
        max_tokens=max_tokens,
        max_section_tokens=max_section_tokens,
        effort=effort,
        output_ratio=output_ratio,
    )
    slugs = [s.series for s in sections.series]
    if not slugs:
        raise InputFileError(f"no series found under {books}: add a folder of .txt/.epub books")
    extraction = run_full(
        sections_dir,
        extracted,
        series,
        model_name,
        jobs_dir=jobs,
        backend=backend,
        max_cost=max_cost,
        max_tokens=max_tokens,
        effort=effort,
        output_ratio=output_ratio,
        force=force,
        poll_interval_seconds=poll_interval_seconds or default_poll_interval(backend),
        on_status=on_status,
    )
    loads = [
        load_series_from_files(
            sections_dir,
            extracted,
            slug,
            db,
            jobs_dir=jobs,
            allow_mixed_backends=allow_mixed_backends,
        )
        for slug in slugs
    ]
    return RunSummary(series=slugs, sections=sections, extraction=extraction, loads=loads)
