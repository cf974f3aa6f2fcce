"""Numbered, append-only schema migrations of the DuckDB warehouse, and ``migrate``.

A fresh database is created at the current schema (:mod:`fantasy_kg.warehouse.schema`, derived
from the row classes) and stamped with every version; a file made by an older version runs the
migrations it lacks (:mod:`fantasy_kg.warehouse.history`, then the ones below), each in its own
transaction. Both roads end at the same schema; a test compares them.
"""

from typing import Any

import duckdb

from fantasy_kg.warehouse.history import (
    M001_TABLES,
    M002_VIEWS,
    M003_ANSWER_FIT,
    M004_DIRECTED_NETWORK,
    M005_STORY_TIME,
    Migration,
)
from fantasy_kg.warehouse.schema import (
    TABLE_SPECS,
    comment_sql,
    current_schema_statements,
    view_statements,
)

_DROPPED_INDEXES = (
    "mentions_entity_idx",
    "evidence_relationship_idx",
    "relationships_source_idx",
    "relationships_target_idx",
    "aliases_norm_idx",
    "failures_custom_id_idx",
)
"""Secondary ART indexes of m001: DuckDB joins with hash joins and never uses them there, while
every insert pays to maintain them (and they must fit in memory)."""


def _m006_statements() -> list[str]:
    out = [f"DROP INDEX IF EXISTS {name}" for name in _DROPPED_INDEXES]
    # Views bind by name: drop them before changing the types they read.
    out += [s for s in view_statements() if s.startswith("DROP VIEW")]
    out += [
        "ALTER TABLE entities ALTER attributes_json SET DATA TYPE JSON",
        "ALTER TABLE load_runs ALTER stats_json SET DATA TYPE JSON",
        "ALTER TABLE load_runs ALTER row_counts_json SET DATA TYPE JSON",
        "ALTER TABLE batch_jobs ALTER created_at SET DATA TYPE TIMESTAMPTZ "
        "USING TRY_CAST(created_at AS TIMESTAMPTZ)",
        "ALTER TABLE batch_jobs ALTER ended_at SET DATA TYPE TIMESTAMPTZ "
        "USING TRY_CAST(ended_at AS TIMESTAMPTZ)",
    ]
    out += view_statements()
    for spec in TABLE_SPECS:
        out += comment_sql(spec)
    return out


M006_FAST_VIEWS = Migration(
    6,
    "m006_preaggregated_views_types_and_descriptions",
    _m006_statements(),
)
"""Pre-aggregated views, no unused indexes, JSON/TIMESTAMPTZ types, a description per column."""

MIGRATIONS: tuple[Migration, ...] = (
    M001_TABLES,
    M002_VIEWS,
    M003_ANSWER_FIT,
    M004_DIRECTED_NETWORK,
    M005_STORY_TIME,
    M006_FAST_VIEWS,
)

TABLES: tuple[str, ...] = tuple(s.name for s in TABLE_SPECS if s.name != "chapters")
"""Every fact table, in load order (``load_runs`` is an append-only log of loads)."""

VIEWS: tuple[str, ...] = (
    "character_network",
    "entity_summary",
    "evidence_positions",
    "mention_positions",
    "relationship_evidence",
)

STORY_TABLES: tuple[str, ...] = ("chapters",)
"""Tables written by a load beside the fact tables (replaced per series, not row-class checked)."""


def applied_versions(conn: duckdb.DuckDBPyConnection) -> list[int]:
    """Versions recorded in ``schema_migrations`` (empty for a fresh database)."""
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            name VARCHAR NOT NULL,
            applied_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT current_timestamp
        )
        """
    )
    rows: list[tuple[Any, ...]] = conn.execute(
        "SELECT version FROM schema_migrations ORDER BY version"
    ).fetchall()
    return [int(r[0]) for r in rows]


def _apply(conn: duckdb.DuckDBPyConnection, statements: list[str], done: list[Migration]) -> None:
    """Run statements and record migrations in one transaction (all or nothing)."""
    conn.execute("BEGIN TRANSACTION")
    try:
        for statement in statements:
            conn.execute(statement)
        for mig in done:
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                [mig.version, mig.name],
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _is_empty(conn: duckdb.DuckDBPyConnection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM duckdb_tables() "
        "WHERE database_name = current_database() AND table_name <> 'schema_migrations'"
    ).fetchone()
    return not row or int(row[0]) == 0


def migrate(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Bring the database to the current schema.

    Returns:
        Names of the migrations applied (or stamped, for a fresh database) now; empty when the
        schema was current.
    """
    done = set(applied_versions(conn))
    if not done and _is_empty(conn):
        _apply(conn, current_schema_statements(), list(MIGRATIONS))
        return [m.name for m in MIGRATIONS]
    applied: list[str] = []
    for mig in MIGRATIONS:
        if mig.version in done:
            continue
        _apply(conn, list(mig.statements), [mig])
        applied.append(mig.name)
    return applied
