"""The warehouse's current schema: tables derived from the row classes, plus the views and macro.

Tables come from the ``Annotated[..., Col]`` declarations of the row classes (one definition per
table); the views pre-aggregate child tables in CTEs joined once, so they stay linear in the
number of rows. Fresh databases are created from here; older files reach the same state through
:mod:`fantasy_kg.warehouse.migrations`.
"""

from typing import Any

from fantasy_kg.domain.columns import TableSpec, table_spec
from fantasy_kg.domain.graph.models import ROW_TYPES
from fantasy_kg.domain.story import CHAPTER_UNKNOWN, ChapterRow

TABLE_SPECS: tuple[TableSpec, ...] = tuple(table_spec(t) for t in (*ROW_TYPES, ChapterRow))
"""Every table, in load order (``load_runs`` is an append-only log; ``chapters`` is story time)."""

SPEC_BY_TABLE: dict[str, TableSpec] = {s.name: s for s in TABLE_SPECS}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def create_table_sql(spec: TableSpec, *, if_not_exists: bool = False) -> str:
    """``CREATE TABLE`` for a table spec (columns in declaration order, then its primary key)."""
    lines = [f"{c.name} {c.sql}" for c in spec.columns]
    if spec.primary_key:
        lines.append(f"PRIMARY KEY ({', '.join(spec.primary_key)})")
    exists = "IF NOT EXISTS " if if_not_exists else ""
    return f"CREATE TABLE {exists}{spec.name} (\n    " + ",\n    ".join(lines) + "\n)"


def comment_sql(spec: TableSpec) -> list[str]:
    """``COMMENT ON`` statements that store the table's and every column's description."""
    out = [f"COMMENT ON TABLE {spec.name} IS {_quote(spec.doc)}"]
    out += [f"COMMENT ON COLUMN {spec.name}.{c.name} IS {_quote(c.doc)}" for c in spec.columns]
    return out


ENTITY_SUMMARY = """
CREATE VIEW entity_summary AS
WITH alias_lists AS (
    SELECT a.series, a.entity_id,
           list(a.alias ORDER BY a.instance_count DESC, a.alias) AS aliases
    FROM entity_aliases a
    JOIN entities e ON e.series = a.series AND e.entity_id = a.entity_id
    WHERE a.alias <> e.name
    GROUP BY a.series, a.entity_id
),
endpoints AS (
    SELECT series, source_id AS entity_id FROM relationships
    UNION ALL
    SELECT series, target_id FROM relationships WHERE target_id <> source_id
),
relationship_counts AS (
    SELECT series, entity_id, count(*) AS relationship_count
    FROM endpoints GROUP BY series, entity_id
)
SELECT
    e.series, e.entity_id, e.type, e.name,
    coalesce(al.aliases, []) AS aliases,
    e.mention_count, e.grounded_mention_count, e.section_count,
    e.first_book_no, e.first_book, e.first_section,
    e.last_book_no, e.last_book, e.last_section,
    coalesce(rc.relationship_count, 0) AS relationship_count,
    e.confidence, e.canonical_rule, e.ambiguous_with
FROM entities e
LEFT JOIN alias_lists al ON al.series = e.series AND al.entity_id = e.entity_id
LEFT JOIN relationship_counts rc ON rc.series = e.series AND rc.entity_id = e.entity_id
"""
"""Aliases and relationship counts aggregated once per entity (a correlated subquery per row
took 15 s over 100,000 entities; see bench scenario ``scale_queries``)."""

CHARACTER_NETWORK = """
CREATE VIEW character_network AS
SELECT
    r.series,
    r.source_id AS character_a,
    s.name AS name_a,
    r.target_id AS character_b,
    t.name AS name_b,
    count(*) AS relationship_count,
    list_sort(list(DISTINCT r.type)) AS relationship_types,
    sum(r.instance_count) AS weight,
    sum(r.evidence_count) AS evidence_count,
    sum(r.grounded_evidence_count) AS grounded_evidence_count,
    max(r.confidence) AS max_confidence
FROM relationships r
JOIN entities s ON s.series = r.series AND s.entity_id = r.source_id
JOIN entities t ON t.series = r.series AND t.entity_id = r.target_id
WHERE s.type IN ('Character', 'Person')
  AND t.type IN ('Character', 'Person')
  AND r.source_id <> r.target_id
GROUP BY r.series, r.source_id, s.name, r.target_id, t.name
"""
"""Directed (character_a is the source): each endpoint joined once, names taken from that join."""

RELATIONSHIP_EVIDENCE = """
CREATE VIEW relationship_evidence AS
SELECT
    r.series, r.relationship_id, r.source_id, s.name AS source_name, r.type,
    r.target_id, t.name AS target_name, r.in_ontology, r.orphan,
    r.grounded AS relationship_grounded,
    v.evidence_id, v.quote, v.status, v.score, v.book_no, v.book, v.section_id,
    v.char_start, v.char_end, v.custom_id, v.batch_id, v.prompt_version, v.backend, v.model
FROM relationships r
JOIN evidence v ON v.series = r.series AND v.relationship_id = r.relationship_id
LEFT JOIN entities s ON s.series = r.series AND s.entity_id = r.source_id
LEFT JOIN entities t ON t.series = r.series AND t.entity_id = r.target_id
"""


def _positions_view(name: str, table: str, alias: str, id_column: str, key: str) -> str:
    """The story point of every quote or mention: the last chapter heading at or before it."""
    return f"""
CREATE VIEW {name} AS
SELECT {alias}.series, {alias}.{id_column}, {alias}.{key}, {alias}.section_id, {alias}.book_no,
       CASE WHEN {alias}.char_start IS NULL THEN {CHAPTER_UNKNOWN}
            ELSE coalesce(c.chapter_no, 0) END AS chapter_no,
       c.title AS chapter
FROM {table} {alias}
ASOF LEFT JOIN chapters c
  ON c.series = {alias}.series AND c.book_file = {alias}.book_file
 AND {alias}.char_start >= c.char_start
"""


EVIDENCE_POSITIONS = _positions_view(
    "evidence_positions", "evidence", "v", "evidence_id", "relationship_id"
)
MENTION_POSITIONS = _positions_view("mention_positions", "mentions", "m", "mention_id", "entity_id")

_POS = 10_000_000
"""A story point as one number: ``book_no * _POS + chapter_no`` (chapters stay below it)."""


def _as_of_body(known: str) -> str:
    """The body of ``graph_as_of``; ``known`` is a predicate over ``{b}``/``{c}`` placeholders.

    Evidence and mentions are aggregated per relationship / entity first (GROUP BY in CTEs);
    the "no evidence at all" cases are anti-joins, which DuckDB plans as hash joins.
    """

    def cond(book: str, chapter: str) -> str:
        return "(" + known.format(b=book, c=chapter) + ")"

    unknown = str(CHAPTER_UNKNOWN)
    return f"""
        WITH ev AS (
            SELECT relationship_id, count(*) AS n, min(book_no * {_POS} + chapter_no) AS pos
            FROM evidence_positions
            WHERE series = p_series AND {cond("book_no", "chapter_no")}
            GROUP BY relationship_id
        ),
        rel AS (
            SELECT r.relationship_id, r.type, r.source_id, r.target_id, r.directed,
                   ev.n AS evidence_known, ev.pos
            FROM relationships r JOIN ev USING (relationship_id)
            WHERE r.series = p_series
            UNION ALL
            SELECT r.relationship_id, r.type, r.source_id, r.target_id, r.directed,
                   0, r.first_book_no * {_POS} + {unknown}
            FROM relationships r
            WHERE r.series = p_series AND {cond("r.first_book_no", unknown)}
              AND NOT EXISTS (SELECT 1 FROM evidence v
                              WHERE v.series = r.series AND v.relationship_id = r.relationship_id)
        ),
        men AS (
            SELECT entity_id, count(*) AS n, min(book_no * {_POS} + chapter_no) AS pos
            FROM mention_positions
            WHERE series = p_series AND {cond("book_no", "chapter_no")}
            GROUP BY entity_id
        ),
        seen AS (
            SELECT entity_id, n, pos FROM men
            UNION ALL
            SELECT e.entity_id, 0, e.first_book_no * {_POS} + {unknown}
            FROM entities e
            WHERE e.series = p_series AND {cond("e.first_book_no", unknown)}
              AND NOT EXISTS (SELECT 1 FROM mentions m
                              WHERE m.series = e.series AND m.entity_id = e.entity_id)
            UNION ALL SELECT source_id, 0, pos FROM rel
            UNION ALL SELECT target_id, 0, pos FROM rel
        ),
        ent AS (SELECT entity_id, sum(n) AS n, min(pos) AS pos FROM seen GROUP BY entity_id)
        SELECT 'entity' AS kind, e.entity_id AS id, e.type, e.name,
               NULL::VARCHAR AS source_id, NULL::VARCHAR AS source_name,
               NULL::VARCHAR AS target_id, NULL::VARCHAR AS target_name, NULL::BOOLEAN AS directed,
               (ent.pos // {_POS})::INTEGER AS first_book_no,
               (ent.pos % {_POS})::INTEGER AS first_chapter_no,
               ent.n::BIGINT AS mentions_known, NULL::BIGINT AS evidence_known
        FROM ent JOIN entities e ON e.series = p_series AND e.entity_id = ent.entity_id
        UNION ALL
        SELECT 'relationship', rel.relationship_id, rel.type, s.name || ' ' || rel.type || ' '
               || t.name, rel.source_id, s.name, rel.target_id, t.name, rel.directed,
               (rel.pos // {_POS})::INTEGER, (rel.pos % {_POS})::INTEGER,
               NULL::BIGINT, rel.evidence_known::BIGINT
        FROM rel
        LEFT JOIN entities s ON s.series = p_series AND s.entity_id = rel.source_id
        LEFT JOIN entities t ON t.series = p_series AND t.entity_id = rel.target_id
    """


GRAPH_AS_OF = (
    # graph_as_of(series, book_no[, chapter]): entities and relationships known by then.
    # (Overloads of a table macro need each body in parentheses to parse.)
    "CREATE OR REPLACE MACRO graph_as_of(p_series, p_book) AS TABLE ("
    + _as_of_body("{b} <= p_book")
    + "), (p_series, p_book, p_chapter) AS TABLE ("
    + _as_of_body("{b} < p_book OR ({b} = p_book AND {c} <= p_chapter)")
    + ")"
)

VIEW_SQL: dict[str, str] = {
    "entity_summary": ENTITY_SUMMARY,
    "character_network": CHARACTER_NETWORK,
    "relationship_evidence": RELATIONSHIP_EVIDENCE,
    "evidence_positions": EVIDENCE_POSITIONS,
    "mention_positions": MENTION_POSITIONS,
}


def view_statements() -> list[str]:
    """(Re)create every view and the ``graph_as_of`` macro at their current definitions."""
    out = [f"DROP VIEW IF EXISTS {name}" for name in VIEW_SQL]
    out += list(VIEW_SQL.values())
    out.append(GRAPH_AS_OF)
    return out


def current_schema_statements() -> list[str]:
    """Everything a fresh warehouse needs: tables, descriptions, views and the macro."""
    out = [create_table_sql(s) for s in TABLE_SPECS]
    for spec in TABLE_SPECS:
        out += comment_sql(spec)
    out += view_statements()
    return out


def cast_select(spec: TableSpec, source: str) -> str:
    """``SELECT`` every column of ``spec`` from ``source`` cast to its declared type.

    Used over Parquet shards so a view has exactly the types of the default file's tables.
    """
    cols = ", ".join(f"CAST({c.name} AS {c.type}) AS {c.name}" for c in spec.columns)
    return f"SELECT {cols} FROM {source}"


def column_docs(table: str) -> list[tuple[str, str, str]]:
    """``(name, type, description)`` of each column of a table (Dagster column schema)."""
    spec = SPEC_BY_TABLE[table]
    return [(c.name, c.type, c.doc) for c in spec.columns]


def describe(table: str) -> dict[str, Any]:
    """A table's description and columns as plain data (docs, tests)."""
    spec = SPEC_BY_TABLE[table]
    return {"table": spec.name, "doc": spec.doc, "columns": column_docs(table)}
