"""Migrations 1 to 5 as they shipped: how a database file created by an older version is upgraded.

Never edit these (a file at version N has run exactly them); a schema change is a new migration
in :mod:`fantasy_kg.warehouse.migrations`. Fresh databases do not run them: they are created at
the current schema from :mod:`fantasy_kg.warehouse.schema` directly.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from fantasy_kg.warehouse.schema import EVIDENCE_POSITIONS, GRAPH_AS_OF, MENTION_POSITIONS


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
        # The story point of every quote and mention, and graph_as_of (unchanged since).
        EVIDENCE_POSITIONS,
        MENTION_POSITIONS,
        GRAPH_AS_OF,
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
