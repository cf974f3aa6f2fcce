"""Pipeline step ``costs``: what a series was estimated to cost, and what it did cost.

Why it works this way: docs/architecture.md, "Extraction steps".
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fantasy_kg.domain.catalog import get_model
from fantasy_kg.domain.estimate import GUIDE_MODELS, ModelEstimate, estimate_costs, series_tokens
from fantasy_kg.domain.graph.models import BatchJobRow, CostRow
from fantasy_kg.domain.sections import read_sections
from fantasy_kg.pipeline.graph import read_provenance
from fantasy_kg.warehouse.load import LockWaitReport, load_costs, writer


@dataclass(frozen=True)
class ModelCost:
    """Actual usage and dollars of all batches of one model, backend and mode."""

    model: str
    backend: str
    mode: str
    batches: int
    requests: int
    succeeded: int
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    estimated_usd: float
    actual_usd: float
    realtime_equivalent_usd: float

    @property
    def savings_usd(self) -> float:
        """What the batch discount saved against the real-time price."""
        return self.realtime_equivalent_usd - self.actual_usd


@dataclass(frozen=True)
class CostReport:
    """Estimate before, actual after, batch against real time, per model, for one series."""

    series: str
    estimates: tuple[ModelEstimate, ...]
    by_model: tuple[ModelCost, ...]
    batch_jobs: tuple[BatchJobRow, ...]
    costs: tuple[CostRow, ...]

    @property
    def estimated_usd(self) -> float:
        """Sum of the pre-flight estimates stored with each batch."""
        return sum((m.estimated_usd for m in self.by_model), 0.0)

    @property
    def actual_usd(self) -> float:
        """Sum of actual batch-rate dollars (local batches priced as their model would be)."""
        return sum((m.actual_usd for m in self.by_model), 0.0)

    @property
    def realtime_equivalent_usd(self) -> float:
        """The same tokens at the real-time price."""
        return sum((m.realtime_equivalent_usd for m in self.by_model), 0.0)

    @property
    def billed_usd(self) -> float:
        """Dollars actually charged: batches that went to Anthropic (the local backend is free)."""
        return sum((m.actual_usd for m in self.by_model if m.backend != "local"), 0.0)


def _group(rows: Sequence[CostRow]) -> tuple[ModelCost, ...]:
    groups: dict[tuple[str, str, str], list[CostRow]] = {}
    for row in rows:
        key = (row.model or "unknown", row.backend or "unknown", row.mode)
        groups.setdefault(key, []).append(row)
    out = []
    for (model, backend, mode), items in sorted(groups.items()):
        out.append(
            ModelCost(
                model=model,
                backend=backend,
                mode=mode,
                batches=len(items),
                requests=sum(r.requests for r in items),
                succeeded=sum(r.succeeded for r in items),
                input_tokens=sum(r.input_tokens for r in items),
                output_tokens=sum(r.output_tokens for r in items),
                cache_write_tokens=sum(r.cache_creation_input_tokens for r in items),
                cache_read_tokens=sum(r.cache_read_input_tokens for r in items),
                estimated_usd=sum((r.estimated_usd or 0.0 for r in items), 0.0),
                actual_usd=sum((r.actual_usd or 0.0 for r in items), 0.0),
                realtime_equivalent_usd=sum((r.realtime_equivalent_usd or 0.0 for r in items), 0.0),
            )
        )
    return tuple(out)


def series_cost_report(
    sections_dir: Path,
    jobs_dir: Path,
    series: str,
    model: str,
    *,
    compare_models: Sequence[str] = GUIDE_MODELS,
) -> CostReport:
    """Build the cost report of one series from its section meta files and job files.

    Args:
        sections_dir: Folder of section files (their meta holds the token counts).
        jobs_dir: Folder of batch job files.
        series: Series slug.
        model: The model the series is extracted with; its estimate comes first.
        compare_models: Further models to estimate for comparison (the guide's two by default).

    Raises:
        InputFileError: unreadable section meta files; UserError for an unknown model.
    """
    sections = read_sections(sections_dir, series)
    tokens = series_tokens(s.meta for s in sections)
    wanted: list[str] = []
    for name in (model, *compare_models):
        model_id = get_model(name).id
        if model_id not in wanted:
            wanted.append(model_id)
    estimates = tuple(estimate_costs(tokens, get_model(m)) for m in wanted) if tokens else ()
    provenance = read_provenance(jobs_dir, series, {s.stem for s in sections})
    costs = tuple(provenance.cost_rows(series))
    return CostReport(
        series=series,
        estimates=estimates,
        by_model=_group(costs),
        batch_jobs=tuple(provenance.batch_job_rows(series)),
        costs=costs,
    )


def load_cost_report(
    db_path: Path,
    report: CostReport,
    *,
    lock_wait: float | None = None,
    on_lock_wait: LockWaitReport | None = None,
) -> dict[str, int]:
    """Replace the series' ``batch_jobs`` and ``costs`` rows in the warehouse (one transaction).

    Args:
        db_path: The DuckDB file.
        report: What to load.
        lock_wait: Seconds to wait for another process's lock (see ``connect``).
        on_lock_wait: Progress report while waiting.

    Raises:
        WarehouseError: the database cannot be opened (e.g. locked by another process).
    """
    with writer(db_path, report.series, lock_wait=lock_wait, on_wait=on_lock_wait) as conn:
        return load_costs(conn, report.series, report.batch_jobs, report.costs)
