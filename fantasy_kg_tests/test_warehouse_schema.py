"""One declaration per table: fresh and upgraded databases end identical, every column described.

A fresh database is created from the row classes; a file at m005 (built by running the shipped
migrations 1-5, holding rows) is upgraded by m006. Both must have the same columns (types,
nullability, defaults, descriptions), constraints, views and macro, and the upgraded rows survive.
"""

from pathlib import Path
from typing import Any

import duckdb

from fantasy_kg.domain.columns import columns_of, table_spec
from fantasy_kg.domain.graph.models import ROW_TYPES
from fantasy_kg.warehouse.load import table_columns
from fantasy_kg.warehouse.migrations import MIGRATIONS, applied_versions, migrate
from fantasy_kg.warehouse.schema import TABLE_SPECS


def _at_m005(path: Path) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect(str(path))
    applied_versions(conn)
    for mig in MIGRATIONS[:5]:
        for statement in mig.statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [mig.version, mig.name]
        )
    return conn


def _schema(conn: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    where = "WHERE database_name = current_database()"
    return {
        "columns": conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default, comment "
            f"FROM duckdb_columns() {where} ORDER BY table_name, column_index"
        ).fetchall(),
        "constraints": conn.execute(
            "SELECT table_name, constraint_type, constraint_column_names "
            f"FROM duckdb_constraints() {where} ORDER BY ALL"
        ).fetchall(),
        "views": conn.execute(
            f"SELECT view_name, sql FROM duckdb_views() {where} AND NOT internal ORDER BY 1"
        ).fetchall(),
        "macros": conn.execute(
            "SELECT function_name, macro_definition FROM duckdb_functions() "
            f"{where} AND function_type = 'table_macro' ORDER BY ALL"
        ).fetchall(),
        "indexes": conn.execute(f"SELECT index_name FROM duckdb_indexes() {where}").fetchall(),
        "versions": applied_versions(conn),
    }


def test_fresh_and_upgraded_databases_have_the_same_schema(tmp_path: Path):
    fresh = duckdb.connect(str(tmp_path / "fresh.duckdb"))
    old = _at_m005(tmp_path / "old.duckdb")
    old.execute(
        "INSERT INTO batch_jobs (series, batch_id, created_at) "
        "VALUES ('s', 'msgbatch_1', '2026-01-02T03:04:05Z')"
    )
    old.execute(
        "INSERT INTO entities (series, entity_id, type, name, attributes_json) "
        """VALUES ('s', 'e1', 'Character', 'Mira', '{"title": "captain"}')"""
    )
    assert migrate(fresh) == [m.name for m in MIGRATIONS]
    assert migrate(old) == [MIGRATIONS[-1].name]
    assert _schema(fresh) == _schema(old)
    assert old.execute("SELECT year(created_at) FROM batch_jobs").fetchone() == (2026,)
    assert old.execute("SELECT attributes_json ->> 'title' FROM entities").fetchone() == (
        "captain",
    )
    fresh.close()
    old.close()


def test_every_column_is_declared_once_with_a_type_and_a_description(tmp_path: Path):
    conn = duckdb.connect(str(tmp_path / "w.duckdb"))
    migrate(conn)
    for spec in TABLE_SPECS:
        assert spec.doc, spec.name
        assert [c for c, _ in table_columns(conn, spec.name)] == [c.name for c in spec.columns]
        for col in spec.columns:
            assert col.doc.strip(), f"{spec.name}.{col.name}"
        comments = conn.execute(
            "SELECT column_name, comment FROM duckdb_columns() WHERE table_name = ?", [spec.name]
        ).fetchall()
        assert all(c for _, c in comments), spec.name
    for row_type in ROW_TYPES:
        assert table_spec(row_type).columns == columns_of(row_type)
    conn.close()
