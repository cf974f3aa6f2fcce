"""Helpers shared by the Dagster tests: definitions for a data dir, runs, DuckDB snapshots."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from fantasy_kg.defs import build_definitions
from fantasy_kg.defs.resources import AnthropicBatchResource
from fantasy_kg.domain import paths
from fantasy_kg.warehouse.migrations import TABLES

SERIES = "ashen_crown"


def resources_for(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    """The code location's resources for ``data_dir`` (local backend unless overridden)."""
    return {
        "anthropic_batches": AnthropicBatchResource(data_dir=str(data_dir), **overrides),
        "duckdb": DuckDBResource(database=str(paths.warehouse_path(data_dir))),
    }


def defs_for(data_dir: Path, **overrides: Any) -> dg.Definitions:
    """``build_definitions`` for a test data dir, with resource overrides."""
    return build_definitions(data_dir, resources=resources_for(data_dir, **overrides))


def assets_of(defs: dg.Definitions) -> list[dg.AssetsDefinition]:
    """The assets of ``defs`` (all of them are ``AssetsDefinition`` here)."""
    return [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition)]


def checks_of(defs: dg.Definitions) -> list[dg.AssetChecksDefinition]:
    """The asset checks of ``defs``."""
    return [c for c in defs.asset_checks or [] if isinstance(c, dg.AssetChecksDefinition)]


def resources_of(defs: dg.Definitions) -> dict[str, Any]:
    """The resources of ``defs`` as a plain dict."""
    return dict(defs.resources or {})


def materialize(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    *,
    selection: dg.AssetSelection | Sequence[dg.AssetKey] | None = None,
    tags: dict[str, str] | None = None,
    partition: str = SERIES,
) -> dg.ExecuteInProcessResult:
    """Materialize (a selection of) every asset and check of ``defs`` for one partition."""
    return dg.materialize(
        [*assets_of(defs), *checks_of(defs)],
        partition_key=partition,
        instance=instance,
        resources=resources_of(defs),
        selection=selection,
        tags=tags,
        raise_on_error=False,
    )


def metadata_of(result: dg.ExecuteInProcessResult, key: str) -> dict[str, Any]:
    """The plain metadata values of the last materialization of ``key`` in a run."""
    for event in reversed(result.get_asset_materialization_events()):
        mat = event.materialization
        if mat.asset_key == dg.AssetKey(key):
            return {k: v.value for k, v in mat.metadata.items()}
    raise AssertionError(
        f"{key} was not materialized; failed steps: {result.get_failed_step_keys()}"
    )


def data_version(result: dg.ExecuteInProcessResult, key: str) -> str | None:
    """The data version recorded with the materialization of ``key`` in a run."""
    for event in reversed(result.get_asset_materialization_events()):
        mat = event.materialization
        if mat.asset_key == dg.AssetKey(key):
            return mat.tags.get("dagster/data_version") if mat.tags else None
    raise AssertionError(f"{key} was not materialized")


def materialized_keys(result: dg.ExecuteInProcessResult) -> set[str]:
    """Asset keys materialized by a run."""
    return {
        e.materialization.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
    }


def table_snapshot(
    db_path: Path, skip: Sequence[str] = ("load_runs",)
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every warehouse table (sorted), to compare two states of the database.

    ``load_runs`` is skipped by default: it is the append-only audit log of loads, one row per
    load with its time, so it grows by design on every materialization.
    """
    conn = duckdb.connect(str(db_path), read_only=True)
    try:
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table in TABLES:
            if table in skip:
                continue
            rows = conn.execute(f"SELECT * FROM {table}").fetchall()
            out[table] = sorted(rows, key=repr)
        return out
    finally:
        conn.close()


class Clock:
    """A settable clock for the local API server (jump ahead instead of sleeping)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
