"""Dagster definitions: partitions, resources, assets, sensors and checks (wiring only).

:func:`build_definitions` assembles the code location for one data directory; the module
``fantasy_kg.definitions`` calls it with ``$FANTASY_KG_DATA_DIR`` (default ``./data``) and is
what ``workspace.yaml`` loads. Building definitions from a function rather than at import time
lets tests (and other projects) point the same assets at another data directory.
"""

import os
import warnings
from pathlib import Path

import dagster as dg

from fantasy_kg.defs.checks import DEFAULT_MIN_GROUNDING_RATE, build_checks
from fantasy_kg.defs.extraction import build_extraction_assets
from fantasy_kg.defs.ingest import build_ingest_assets
from fantasy_kg.defs.partitions import discover_series, series_partitions_def
from fantasy_kg.defs.resources import AnthropicBatchResource
from fantasy_kg.defs.sensors import build_completion_sensor
from fantasy_kg.defs.view import build_view_assets, build_view_checks
from fantasy_kg.defs.warehouse import WarehouseResource, build_warehouse_assets
from fantasy_kg.domain import paths
from fantasy_kg.domain.catalog import default_model
from fantasy_kg.domain.errors import ConfigError
from fantasy_kg.llm.backend import BACKEND_CHOICES, backend_name

__all__ = [
    "AnthropicBatchResource",
    "build_checks",
    "build_completion_sensor",
    "build_definitions",
    "build_extraction_assets",
    "build_ingest_assets",
    "build_view_assets",
    "build_view_checks",
    "build_warehouse_assets",
    "default_resources",
    "discover_series",
    "series_partitions_def",
]


def _env_float(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else None


def default_resources(data_dir: Path) -> dict[str, object]:
    """Resources for a data directory, configured from the environment.

    ``ANTHROPIC_API_KEY`` is passed as ``dg.EnvVar`` (the UI shows its name, never its value) and
    only when it is set: an unset ``EnvVar`` fails resource initialization, and no key simply
    means the local backend. ``FANTASY_KG_BACKEND``, ``FANTASY_KG_MODEL`` and
    ``FANTASY_KG_MAX_COST_USD`` override the backend, model and budget cap.
    """
    root = data_dir.expanduser().resolve()
    backend = os.environ.get("FANTASY_KG_BACKEND", "auto").strip() or "auto"
    if backend not in BACKEND_CHOICES:
        raise ConfigError(
            f"FANTASY_KG_BACKEND={backend!r} is not a backend: use one of "
            f"{', '.join(BACKEND_CHOICES)}"
        )
    return {
        "anthropic_batches": AnthropicBatchResource(
            api_key=dg.EnvVar("ANTHROPIC_API_KEY") if os.environ.get("ANTHROPIC_API_KEY") else None,
            backend=backend,  # type: ignore[arg-type]  # validated by the resource's Literal
            model=os.environ.get("FANTASY_KG_MODEL", "").strip() or default_model(),
            data_dir=str(root),
            max_cost_usd=_env_float("FANTASY_KG_MAX_COST_USD"),
        ),
        "duckdb": WarehouseResource(database=str(paths.warehouse_path(root))),
    }


def _uses_claude(resources: dict[str, object]) -> bool:
    """Whether the batch resource will talk to Claude (decides the lineage badges)."""
    res = resources.get("anthropic_batches")
    if not isinstance(res, AnthropicBatchResource):
        return backend_name("auto") == "anthropic"
    key = res.api_key if isinstance(res.api_key, str) and res.api_key else None
    return backend_name(res.backend, api_key=key) == "anthropic"


def build_definitions(
    data_dir: Path | None = None,
    *,
    resources: dict[str, object] | None = None,
    min_grounding_rate: float | None = None,
    sensor_interval_seconds: int | None = None,
) -> dg.Definitions:
    """The fantasy_kg code location for ``data_dir`` (default ``$FANTASY_KG_DATA_DIR``).

    Args:
        data_dir: Data directory; its ``books/`` sub-folders become the series partitions.
        resources: Replace the default resources (tests pass a local server's ``base_url``).
        min_grounding_rate: Floor of the grounding check (default
            ``$FANTASY_KG_MIN_GROUNDING_RATE`` or 0.9).
        sensor_interval_seconds: Minimum seconds between completion-sensor ticks (default
            ``$FANTASY_KG_SENSOR_INTERVAL_SECONDS`` or 60).
    """
    root = (data_dir or paths.data_dir()).expanduser().resolve()
    partitions = series_partitions_def(paths.books_dir(root))
    floor = min_grounding_rate
    if floor is None:
        floor = _env_float("FANTASY_KG_MIN_GROUNDING_RATE") or DEFAULT_MIN_GROUNDING_RATE
    with warnings.catch_warnings():
        # Partitioned asset checks are "preview" in Dagster 1.13, but they are what makes a
        # check result belong to one series in the UI; the warning would repeat on every load.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        checks = [
            *build_checks(partitions, min_grounding_rate=floor),
            *build_view_checks(partitions),
        ]
    interval = sensor_interval_seconds
    if interval is None:
        interval = int(_env_float("FANTASY_KG_SENSOR_INTERVAL_SECONDS") or 60)
    chosen = resources if resources is not None else default_resources(root)
    return dg.Definitions(
        assets=[
            *build_ingest_assets(partitions),
            *build_extraction_assets(partitions, claude=_uses_claude(chosen)),
            *build_warehouse_assets(partitions),
            *build_view_assets(partitions),
        ],
        asset_checks=checks,
        sensors=[
            build_completion_sensor(
                minimum_interval_seconds=interval,
                partition_keys=partitions.get_partition_keys(),
            )
        ],
        resources=chosen,
        # One process per run: steps run in lineage order inside it, so a run never holds two
        # DuckDB connections from two processes (DuckDB allows one read-write process per file),
        # and no step pays a fresh interpreter's import time. Partitions still run in parallel
        # as separate runs, serialized on DuckDB by the duckdb_writer pool.
        executor=dg.in_process_executor,
    )
