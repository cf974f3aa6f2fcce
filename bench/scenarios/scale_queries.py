"""Scenario scale_queries: the three analyst views over 100,000 entities and 400,000 relationships.

A synthetic warehouse (10 series; 1-3 aliases per entity, one a copy of the name; skewed
endpoints, a few self loops and dangling targets; one evidence quote per relationship) is written
straight into a migrated DuckDB file. Each view is materialized in full (
``SELECT * FROM view`` run to completion: DuckDB holds the whole result, every column, with no
conversion to Python objects) and timed against
``SELECT count(*)`` over the same joined tables. Target: within 3x. Quick mode: 10,000 / 40,000.
In full mode the m002 ``entity_summary`` (correlated subqueries) is timed too, for the record.
"""

import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench.harness import Context, Target, apply_targets

NAME = "scale_queries"
TITLE = "Warehouse views at scale"
TARGET_RATIO = 3.0

BASELINES: dict[str, str] = {
    "entity_summary": """
        SELECT count(*) FROM entities e
        LEFT JOIN entity_aliases a ON a.series = e.series AND a.entity_id = e.entity_id
        LEFT JOIN relationships r ON r.series = e.series AND r.source_id = e.entity_id""",
    "character_network": """
        SELECT count(*) FROM relationships r
        JOIN entities s ON s.series = r.series AND s.entity_id = r.source_id
        JOIN entities t ON t.series = r.series AND t.entity_id = r.target_id""",
    "relationship_evidence": """
        SELECT count(*) FROM relationships r
        JOIN evidence v ON v.series = r.series AND v.relationship_id = r.relationship_id
        LEFT JOIN entities s ON s.series = r.series AND s.entity_id = r.source_id
        LEFT JOIN entities t ON t.series = r.series AND t.entity_id = r.target_id""",
}


def synth_graph(conn: Any, entities: int, relationships: int, series: int = 10) -> None:
    """Fill a migrated warehouse with a synthetic graph spread over ``series`` series.

    Deterministic for a given size (``setseed``). Covers the cases the views must get right:
    an alias equal to the name (excluded from ``aliases``), NULL alias counts (ordering),
    self loops (counted once), dangling targets (no entity row) and non-character endpoints.
    """
    conn.execute("SELECT setseed(0.42)")
    per = max(1, entities // series)
    conn.execute("BEGIN TRANSACTION")
    types = "['Character', 'Character', 'Person', 'Location', 'Organization', 'Artifact']"
    conn.execute(
        f"""INSERT INTO entities (series, entity_id, type, name, confidence, mention_count,
               section_count, first_book_no, first_section, last_book_no, last_section)
           SELECT 's' || (i % {series}), 'e' || i, {types}[1 + (i // {series}) % 6],
                  'Entity ' || i, round(random(), 3), 1 + (i % 50), 1 + (i % 7),
                  1 + (i % 5), '01', 5, '09'
           FROM range(?) t(i)""",
        [entities],
    )
    conn.execute(
        """INSERT INTO entity_aliases (series, entity_id, alias, instance_count)
           SELECT series, entity_id, alias, CASE WHEN k = 2 AND n % 4 = 0 THEN NULL ELSE n END
           FROM (SELECT e.series, e.entity_id, k, (hash(e.entity_id) % 9)::INTEGER AS n,
                        CASE k WHEN 0 THEN e.name WHEN 1 THEN 'Alias ' || e.entity_id
                               ELSE 'Nick ' || e.entity_id END AS alias
                 FROM entities e, range(3) q(k)
                 WHERE k < 1 + hash(e.entity_id) % 3)"""
    )
    kinds = "['ALLY_OF', 'ENEMY_OF', 'LOCATED_IN', 'MEMBER_OF', 'PARENT_OF', 'POSSESSES']"
    conn.execute(
        f"""INSERT INTO relationships (series, relationship_id, source_id, type, target_id,
               directed, instance_count, evidence_count, grounded_evidence_count, confidence,
               in_ontology, orphan, grounded, first_book_no)
           SELECT 's' || s, 'r' || i,
                  'e' || (s + {series} * floor({per} * pow(random(), 2))::BIGINT),
                  {kinds}[1 + (i % 6)],
                  CASE WHEN i % 97 = 0 THEN 'missing' || i
                       WHEN i % 89 = 0 THEN 'e' || (s + {series} * (i % {per}))
                       ELSE 'e' || (s + {series} * floor({per} * random())::BIGINT) END,
                  i % 6 NOT IN (0, 1), 1 + (i % 4), 1, (i % 3) // 2, round(random(), 3),
                  true, i % 97 = 0, i % 3 = 2, 1 + (i % 5)
           FROM (SELECT i, i % {series} AS s FROM range(?) t(i))""",
        [relationships],
    )
    # Self loops: every 89th relationship points from an entity back to itself.
    conn.execute(
        "UPDATE relationships SET target_id = source_id "
        "WHERE CAST(substr(relationship_id, 2) AS BIGINT) % 89 = 0"
    )
    conn.execute(
        """INSERT INTO evidence (series, evidence_id, relationship_id, quote, section_id,
               book_no, book, book_file, char_start, char_end, status, score, custom_id,
               batch_id, prompt_version, backend, model)
           SELECT series, row_number() OVER (), relationship_id,
                  'A quote about ' || source_id || ' and ' || target_id || '.', '01',
                  first_book_no, 'Book ' || first_book_no, 'book.txt', 100, 140, 'exact', 1.0,
                  's_section_01', 'msgbatch_1', 'v1', 'local', 'claude-sonnet-5-5'
           FROM relationships"""
    )
    conn.execute("COMMIT")


def prepare(ctx: Context) -> dict[str, Any]:
    """Build the synthetic warehouse once per size (cached under bench/_work/scale_queries)."""
    from fantasy_kg.warehouse.load import connect

    os.environ.pop("FANTASY_KG_WAREHOUSE", None)  # this scenario measures the one-file engine
    entities, relationships = _size(ctx)
    db = _db(ctx, entities)
    if not db.exists():
        tmp = db.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        conn = connect(tmp)
        try:
            synth_graph(conn, entities, relationships)
            conn.execute("CHECKPOINT")
        finally:
            conn.close()
        tmp.rename(db)
    return {"db": str(db)}


def _size(ctx: Context) -> tuple[int, int]:
    return (10_000, 40_000) if ctx.quick else (100_000, 400_000)


def _db(ctx: Context, entities: int) -> Path:
    return ctx.scenario_dir(NAME) / f"views_{entities}.duckdb"


def _time(conn: Any, sql: str, repeats: int, *, fetch: bool = True) -> list[float]:
    """Wall times of ``sql``; without ``fetch`` the result stays in DuckDB (not converted)."""
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = conn.execute(sql)
        if fetch:
            result.fetchall()
        walls.append(time.perf_counter() - t0)
        del result
    return walls


def _old_entity_summary() -> str:
    from fantasy_kg.warehouse.history import M002_VIEWS

    sql = next(s for s in M002_VIEWS.statements if "VIEW entity_summary" in s)
    return sql.replace("CREATE VIEW entity_summary", "CREATE OR REPLACE TEMP VIEW old_summary")


def rows(ctx: Context) -> list[dict[str, Any]]:
    """One row per view: full materialization vs count(*) over the same joins."""
    import duckdb

    entities, relationships = _size(ctx)
    db = _db(ctx, entities)
    repeats = 2 if ctx.quick else 5
    conn = duckdb.connect(str(db))  # read-write: the m002 view is created as a temp view
    size = f"{entities:,} entities, {relationships:,} relationships, 10 series"
    out: list[dict[str, Any]] = []
    try:
        for view, baseline_sql in BASELINES.items():
            select = f"SELECT * FROM {view}"
            _time(conn, select, 1, fetch=False)  # warm the buffer pool for both sides alike
            walls = _time(conn, select, repeats, fetch=False)
            n = conn.execute(f"SELECT count(*) FROM {view}").fetchone()
            base = _time(conn, baseline_sql, repeats)
            wall, base_s = statistics.median(walls), statistics.median(base)
            ratio = wall / base_s if base_s else None
            row: dict[str, Any] = {
                "scenario": NAME,
                "kind": "time",
                "case": f"SELECT * FROM {view}",
                "input": size,
                "status": "ok",
                "message": "",
                "runs": repeats,
                "wall_s": wall,
                "wall_s_runs": walls,
                "baseline": {"name": "count(*) over the same joined tables", "wall_s": base_s},
                "ratio": ratio,
                "note": f"{int(n[0]) if n else 0:,} rows",
            }
            apply_targets(row, [Target("ratio", TARGET_RATIO, f"<= {TARGET_RATIO:g}x count(*)")])
            out.append(row)
        if not ctx.quick:
            conn.execute(_old_entity_summary())
            old = _time(conn, "SELECT * FROM old_summary", 1, fetch=False)
            out.append(
                {
                    "scenario": NAME,
                    "kind": "time",
                    "case": "SELECT * FROM entity_summary as of m002 (correlated subqueries)",
                    "input": size,
                    "status": "ok",
                    "message": "",
                    "runs": 1,
                    "wall_s": old[0],
                    "baseline": {"name": "pre-aggregated view", "wall_s": out[0]["wall_s"]},
                    "ratio": old[0] / out[0]["wall_s"] if out[0]["wall_s"] else None,
                    "targets": [],
                    "target_met": None,
                    "note": "for the record: what m006 replaced",
                }
            )
    finally:
        conn.close()
    return out
