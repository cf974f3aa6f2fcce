"""Numbered, append-only schema migrations of the DuckDB warehouse.

Each migration is a list of SQL statements applied once, in order, inside a transaction, and
recorded in ``schema_migrations``. Never edit a migration that has shipped: add ``m00N`` instead
(a database created by an older version is then brought up to date on the next connect). The
row classes in :mod:`fantasy_kg.domain.graph.models` must match the tables column for column; a
test checks that after migrating a fresh database.

Every table has a ``series`` column (loads replace exactly one series) and a primary key; the
large child tables get the secondary indexes the views and typical queries join on.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from fantasy_kg.domain.story import CHAPTER_UNKNOWN


@dataclass(frozen=True)
class Migration:
    """One schema change."""

    version: int
    name: str
    statements: Sequence[str]


M001_TABLES = Migration(
    1,
    "m001_initial_tables",
    [
        """
        CREATE TABLE sections (
            series VARCHAR NOT NULL,
            section_id VARCHAR NOT NULL,
            section_number INTEGER NOT NULL,
            file_name VARCHAR NOT NULL,
            books VARCHAR[],
            book_files VARCHAR[],
            first_book_no INTEGER,
            chars BIGINT,
            input_tokens BIGINT,
            token_count_method VARCHAR,
            sha256 VARCHAR,
            custom_ids VARCHAR[],
            batch_id VARCHAR,
            prompt_version VARCHAR,
            backend VARCHAR,
            model VARCHAR,
            status VARCHAR NOT NULL,
            entity_instances INTEGER,
            relationship_instances INTEGER,
            PRIMARY KEY (series, section_id)
        )
        """,
        """
        CREATE TABLE batch_jobs (
            series VARCHAR NOT NULL,
            batch_id VARCHAR NOT NULL,
            model VARCHAR,
            backend VARCHAR,
            prompt_version VARCHAR,
            processing_status VARCHAR,
            attempt INTEGER,
            parent_batch_id VARCHAR,
            created_at VARCHAR,
            ended_at VARCHAR,
            request_count INTEGER,
            succeeded INTEGER,
            errored INTEGER,
            canceled INTEGER,
            expired INTEGER,
            processing INTEGER,
            custom_ids VARCHAR[],
            failure_count INTEGER,
            job_file VARCHAR,
            PRIMARY KEY (series, batch_id)
        )
        """,
        """
        CREATE TABLE costs (
            series VARCHAR NOT NULL,
            batch_id VARCHAR NOT NULL,
            model VARCHAR,
            backend VARCHAR,
            mode VARCHAR NOT NULL,
            requests INTEGER,
            succeeded INTEGER,
            input_tokens BIGINT,
            output_tokens BIGINT,
            cache_creation_input_tokens BIGINT,
            cache_read_input_tokens BIGINT,
            estimated_usd DOUBLE,
            actual_usd DOUBLE,
            realtime_equivalent_usd DOUBLE,
            savings_usd DOUBLE,
            PRIMARY KEY (series, batch_id)
        )
        """,
        """
        CREATE TABLE entities (
            series VARCHAR NOT NULL,
            entity_id VARCHAR NOT NULL,
            type VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            canonical_rule VARCHAR,
            confidence DOUBLE,
            confidence_max DOUBLE,
            instance_count INTEGER,
            mention_count INTEGER,
            grounded_mention_count INTEGER,
            section_count INTEGER,
            alias_count INTEGER,
            first_book_no INTEGER,
            first_book VARCHAR,
            first_section VARCHAR,
            last_book_no INTEGER,
            last_book VARCHAR,
            last_section VARCHAR,
            attributes_json VARCHAR,
            source_ids VARCHAR[],
            ambiguous_with VARCHAR[],
            batch_ids VARCHAR[],
            prompt_versions VARCHAR[],
            PRIMARY KEY (series, entity_id)
        )
        """,
        """
        CREATE TABLE entity_aliases (
            series VARCHAR NOT NULL,
            entity_id VARCHAR NOT NULL,
            alias VARCHAR NOT NULL,
            alias_norm VARCHAR,
            kinds VARCHAR[],
            instance_count INTEGER,
            section_count INTEGER,
            first_book_no INTEGER,
            first_book VARCHAR,
            first_section VARCHAR,
            PRIMARY KEY (series, entity_id, alias)
        )
        """,
        """
        CREATE TABLE entity_attributes (
            series VARCHAR NOT NULL,
            entity_id VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            value VARCHAR NOT NULL,
            instance_count INTEGER,
            first_book_no INTEGER,
            first_section VARCHAR,
            sections VARCHAR[],
            PRIMARY KEY (series, entity_id, name, value)
        )
        """,
        """
        CREATE TABLE entity_merges (
            series VARCHAR NOT NULL,
            merge_no INTEGER NOT NULL,
            decision VARCHAR NOT NULL,
            rule VARCHAR NOT NULL,
            key VARCHAR,
            entity_id VARCHAR NOT NULL,
            other_entity_id VARCHAR,
            left_instance VARCHAR,
            right_instance VARCHAR,
            detail VARCHAR,
            PRIMARY KEY (series, merge_no)
        )
        """,
        """
        CREATE TABLE mentions (
            series VARCHAR NOT NULL,
            mention_id BIGINT NOT NULL,
            entity_id VARCHAR NOT NULL,
            raw_entity_id VARCHAR,
            surface VARCHAR,
            section_id VARCHAR NOT NULL,
            section_number INTEGER,
            file_name VARCHAR,
            book_no INTEGER,
            book VARCHAR,
            book_file VARCHAR,
            char_start BIGINT,
            char_end BIGINT,
            section_char_start BIGINT,
            section_char_end BIGINT,
            status VARCHAR NOT NULL,
            score DOUBLE,
            custom_id VARCHAR,
            batch_id VARCHAR,
            prompt_version VARCHAR,
            backend VARCHAR,
            model VARCHAR,
            PRIMARY KEY (series, mention_id)
        )
        """,
        """
        CREATE TABLE relationships (
            series VARCHAR NOT NULL,
            relationship_id VARCHAR NOT NULL,
            source_id VARCHAR NOT NULL,
            type VARCHAR NOT NULL,
            target_id VARCHAR NOT NULL,
            directed BOOLEAN,
            in_ontology BOOLEAN,
            schema_violation VARCHAR,
            orphan BOOLEAN,
            orphan_endpoints VARCHAR[],
            self_loop BOOLEAN,
            instance_count INTEGER,
            evidence_count INTEGER,
            grounded_evidence_count INTEGER,
            grounded BOOLEAN,
            confidence DOUBLE,
            description VARCHAR,
            first_book_no INTEGER,
            first_book VARCHAR,
            first_section VARCHAR,
            last_book_no INTEGER,
            last_book VARCHAR,
            last_section VARCHAR,
            batch_ids VARCHAR[],
            prompt_versions VARCHAR[],
            PRIMARY KEY (series, relationship_id)
        )
        """,
        """
        CREATE TABLE evidence (
            series VARCHAR NOT NULL,
            evidence_id BIGINT NOT NULL,
            relationship_id VARCHAR NOT NULL,
            quote VARCHAR,
            raw_source VARCHAR,
            raw_type VARCHAR,
            raw_target VARCHAR,
            instance_confidence DOUBLE,
            section_id VARCHAR NOT NULL,
            section_number INTEGER,
            file_name VARCHAR,
            book_no INTEGER,
            book VARCHAR,
            book_file VARCHAR,
            char_start BIGINT,
            char_end BIGINT,
            section_char_start BIGINT,
            section_char_end BIGINT,
            status VARCHAR NOT NULL,
            score DOUBLE,
            custom_id VARCHAR,
            batch_id VARCHAR,
            prompt_version VARCHAR,
            backend VARCHAR,
            model VARCHAR,
            PRIMARY KEY (series, evidence_id)
        )
        """,
        """
        CREATE TABLE schema_proposals (
            series VARCHAR NOT NULL,
            proposal_type VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            origin VARCHAR,
            status VARCHAR,
            instance_count INTEGER,
            section_count INTEGER,
            sections VARCHAR[],
            description VARCHAR,
            rationale VARCHAR,
            source_types VARCHAR[],
            target_types VARCHAR[],
            examples VARCHAR[],
            example_sections VARCHAR[],
            PRIMARY KEY (series, proposal_type, name)
        )
        """,
        """
        CREATE TABLE extraction_failures (
            series VARCHAR NOT NULL,
            custom_id VARCHAR NOT NULL,
            section_id VARCHAR,
            file_name VARCHAR,
            stage VARCHAR NOT NULL,
            failure_type VARCHAR,
            message VARCHAR,
            retryable BOOLEAN,
            resolved BOOLEAN,
            batch_id VARCHAR
        )
        """,
        """
        CREATE TABLE load_runs (
            run_id VARCHAR PRIMARY KEY,
            series VARCHAR NOT NULL,
            loaded_at TIMESTAMP WITH TIME ZONE NOT NULL,
            ontology_version VARCHAR,
            ontology_fingerprint VARCHAR,
            input_dir VARCHAR,
            extracted_dir VARCHAR,
            stats_json VARCHAR,
            row_counts_json VARCHAR,
            seconds DOUBLE
        )
        """,
        "CREATE INDEX mentions_entity_idx ON mentions (series, entity_id)",
        "CREATE INDEX evidence_relationship_idx ON evidence (series, relationship_id)",
        "CREATE INDEX relationships_source_idx ON relationships (series, source_id)",
        "CREATE INDEX relationships_target_idx ON relationships (series, target_id)",
        "CREATE INDEX aliases_norm_idx ON entity_aliases (series, alias_norm)",
        "CREATE INDEX failures_custom_id_idx ON extraction_failures (series, custom_id)",
    ],
)

M002_VIEWS = Migration(
    2,
    "m002_views",
    [
        """
        CREATE VIEW entity_summary AS
        SELECT
            e.series,
            e.entity_id,
            e.type,
            e.name,
            coalesce(
                (SELECT list(a.alias ORDER BY a.instance_count DESC, a.alias)
                 FROM entity_aliases a
                 WHERE a.series = e.series AND a.entity_id = e.entity_id AND a.alias <> e.name),
                []
            ) AS aliases,
            e.mention_count,
            e.grounded_mention_count,
            e.section_count,
            e.first_book_no,
            e.first_book,
            e.first_section,
            e.last_book_no,
            e.last_book,
            e.last_section,
            (SELECT count(*) FROM relationships r
             WHERE r.series = e.series
               AND (r.source_id = e.entity_id OR r.target_id = e.entity_id)) AS relationship_count,
            e.confidence,
            e.canonical_rule,
            e.ambiguous_with
        FROM entities e
        """,
        """
        CREATE VIEW character_network AS
        WITH edges AS (
            SELECT
                r.series,
                least(r.source_id, r.target_id) AS character_a,
                greatest(r.source_id, r.target_id) AS character_b,
                r.type,
                r.instance_count,
                r.evidence_count,
                r.grounded_evidence_count,
                r.confidence
            FROM relationships r
            JOIN entities s ON s.series = r.series AND s.entity_id = r.source_id
            JOIN entities t ON t.series = r.series AND t.entity_id = r.target_id
            WHERE s.type IN ('Character', 'Person')
              AND t.type IN ('Character', 'Person')
              AND r.source_id <> r.target_id
        )
        SELECT
            e.series,
            e.character_a,
            a.name AS name_a,
            e.character_b,
            b.name AS name_b,
            count(*) AS relationship_count,
            list_sort(list(DISTINCT e.type)) AS relationship_types,
            sum(e.instance_count) AS weight,
            sum(e.evidence_count) AS evidence_count,
            sum(e.grounded_evidence_count) AS grounded_evidence_count,
            max(e.confidence) AS max_confidence
        FROM edges e
        JOIN entities a ON a.series = e.series AND a.entity_id = e.character_a
        JOIN entities b ON b.series = e.series AND b.entity_id = e.character_b
        GROUP BY e.series, e.character_a, a.name, e.character_b, b.name
        """,
        """
        CREATE VIEW relationship_evidence AS
        SELECT
            r.series,
            r.relationship_id,
            r.source_id,
            s.name AS source_name,
            r.type,
            r.target_id,
            t.name AS target_name,
            r.in_ontology,
            r.orphan,
            r.grounded AS relationship_grounded,
            v.evidence_id,
            v.quote,
            v.status,
            v.score,
            v.book_no,
            v.book,
            v.section_id,
            v.char_start,
            v.char_end,
            v.custom_id,
            v.batch_id,
            v.prompt_version,
            v.backend,
            v.model
        FROM relationships r
        JOIN evidence v ON v.series = r.series AND v.relationship_id = r.relationship_id
        LEFT JOIN entities s ON s.series = r.series AND s.entity_id = r.source_id
        LEFT JOIN entities t ON t.series = r.series AND t.entity_id = r.target_id
        """,
    ],
)

M003_ANSWER_FIT = Migration(
    3,
    "m003_effort_thinking_truncation",
    [
        # Which effort and max_tokens a batch ran with, and how many answers were cut (issue:
        # every answer fits; a cut answer is a planning miss and must be visible).
        "ALTER TABLE batch_jobs ADD COLUMN truncated INTEGER DEFAULT 0",
        "ALTER TABLE batch_jobs ADD COLUMN effort VARCHAR",
        "ALTER TABLE batch_jobs ADD COLUMN max_tokens INTEGER",
        # Thinking is billed as output: show its share, and the attempt a cost belongs to.
        "ALTER TABLE costs ADD COLUMN thinking_tokens BIGINT DEFAULT 0",
        "ALTER TABLE costs ADD COLUMN truncated INTEGER DEFAULT 0",
        "ALTER TABLE costs ADD COLUMN attempt INTEGER",
    ],
)

_POS = 10_000_000
"""A story point as one number: ``book_no * _POS + chapter_no`` (chapters stay below it)."""


def _as_of_body(known: str) -> str:
    """The body of ``graph_as_of``; ``known`` is a predicate over ``{b}``/``{c}`` placeholders."""

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


M005_STORY_TIME = Migration(
    5,
    "m005_chapters_and_graph_as_of",
    [
        # Chapter headings in book coordinates (fantasy_kg.domain.story), written by every load.
        """
        CREATE TABLE chapters (
            series VARCHAR NOT NULL,
            book_no INTEGER NOT NULL,
            book_file VARCHAR NOT NULL,
            book VARCHAR,
            chapter_no INTEGER NOT NULL,
            title VARCHAR,
            char_start BIGINT NOT NULL,
            char_end BIGINT,
            PRIMARY KEY (series, book_file, chapter_no)
        )
        """,
        # The story point of every quote and mention: the chapter whose heading is the last one
        # at or before its offset (0 before the first heading; CHAPTER_UNKNOWN when ungrounded).
        f"""
        CREATE VIEW evidence_positions AS
        SELECT v.series, v.evidence_id, v.relationship_id, v.section_id, v.book_no,
               CASE WHEN v.char_start IS NULL THEN {CHAPTER_UNKNOWN}
                    ELSE coalesce(c.chapter_no, 0) END AS chapter_no,
               c.title AS chapter
        FROM evidence v
        ASOF LEFT JOIN chapters c
          ON c.series = v.series AND c.book_file = v.book_file AND v.char_start >= c.char_start
        """,
        f"""
        CREATE VIEW mention_positions AS
        SELECT m.series, m.mention_id, m.entity_id, m.section_id, m.book_no,
               CASE WHEN m.char_start IS NULL THEN {CHAPTER_UNKNOWN}
                    ELSE coalesce(c.chapter_no, 0) END AS chapter_no,
               c.title AS chapter
        FROM mentions m
        ASOF LEFT JOIN chapters c
          ON c.series = m.series AND c.book_file = m.book_file AND m.char_start >= c.char_start
        """,
        # graph_as_of(series, book_no[, chapter]): entities and relationships known by then.
        # (Overloads of a table macro need each body in parentheses to parse.)
        "CREATE MACRO graph_as_of(p_series, p_book) AS TABLE ("
        + _as_of_body("{b} <= p_book")
        + "), (p_series, p_book, p_chapter) AS TABLE ("
        + _as_of_body("{b} < p_book OR ({b} = p_book AND {c} <= p_chapter)")
        + ")",
    ],
)

M004_DIRECTED_NETWORK = Migration(
    4,
    "m004_character_network_keeps_direction",
    [
        # character_a is the source and character_b the target, as stored: sorting each pair
        # alphabetically (M002) lost the direction of PARENT_OF, RULES and the like.
        # Symmetric types are stored once, in the graph's order, and so shown once.
        "DROP VIEW IF EXISTS character_network",
        """
        CREATE VIEW character_network AS
        WITH edges AS (
            SELECT
                r.series,
                r.source_id AS character_a,
                r.target_id AS character_b,
                r.type,
                r.instance_count,
                r.evidence_count,
                r.grounded_evidence_count,
                r.confidence
            FROM relationships r
            JOIN entities s ON s.series = r.series AND s.entity_id = r.source_id
            JOIN entities t ON t.series = r.series AND t.entity_id = r.target_id
            WHERE s.type IN ('Character', 'Person')
              AND t.type IN ('Character', 'Person')
              AND r.source_id <> r.target_id
        )
        SELECT
            e.series,
            e.character_a,
            a.name AS name_a,
            e.character_b,
            b.name AS name_b,
            count(*) AS relationship_count,
            list_sort(list(DISTINCT e.type)) AS relationship_types,
            sum(e.instance_count) AS weight,
            sum(e.evidence_count) AS evidence_count,
            sum(e.grounded_evidence_count) AS grounded_evidence_count,
            max(e.confidence) AS max_confidence
        FROM edges e
        JOIN entities a ON a.series = e.series AND a.entity_id = e.character_a
        JOIN entities b ON b.series = e.series AND b.entity_id = e.character_b
        GROUP BY e.series, e.character_a, a.name, e.character_b, b.name
        """,
    ],
)

MIGRATIONS: tuple[Migration, ...] = (
    M001_TABLES,
    M002_VIEWS,
    M003_ANSWER_FIT,
    M004_DIRECTED_NETWORK,
    M005_STORY_TIME,
)

TABLES: tuple[str, ...] = (
    "sections",
    "batch_jobs",
    "costs",
    "entities",
    "entity_aliases",
    "entity_attributes",
    "entity_merges",
    "mentions",
    "relationships",
    "evidence",
    "schema_proposals",
    "extraction_failures",
    "load_runs",
)
"""Every table, in load order (``load_runs`` is an append-only log of loads)."""

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


def migrate(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply every pending migration, each in its own transaction.

    Returns:
        Names of the migrations applied now (empty when the schema was current).
    """
    done = set(applied_versions(conn))
    applied: list[str] = []
    for mig in MIGRATIONS:
        if mig.version in done:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            for statement in mig.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                [mig.version, mig.name],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(mig.name)
    return applied
