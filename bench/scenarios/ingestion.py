"""Scenario 3, results ingestion at 10x the guide's scale, against DuckDB's ``read_json``.

Input (generated once by :mod:`bench.synth`, cached under ``bench/_work/ingestion``): 310
sections of synthetic prose at the guide's section sizes (about 113 M tokens) and one answer per
section shaped like Claude's (wire JSON, 15 % of the section's tokens: about 17 M output tokens).

Subject, the path a real batch takes once its results are downloaded:

1. every answer through ``interpret_message`` (JSON parse, ``parse_extraction``: validation and
   wire-to-stored conversion) and ``write_result`` (``<custom_id>_extracted.json`` + provenance),
   as ``process_results_to_files`` does for each succeeded line;
2. ``load_series_from_files`` for each of the three series: read sections and result files,
   ground every mention and quote, resolve entities series-wide, deduplicate relationships, and
   replace the series' rows in DuckDB in one transaction.

Baseline (the floor for loading): DuckDB alone reads the same answer files with ``read_json``
and fills the same tables (migrated by the warehouse's own migrations) with plain SQL:
entities grouped by id, aliases and attributes deduplicated, one mention row per surface form,
relationships grouped by (source, type, target), one evidence row per quote. No grounding and no
resolution, so it is the least any loader of these files could cost.
"""

import importlib
import json
import shutil
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

from bench import synth
from bench.harness import MB, Case, Context, Target, Variant

NAME = "ingestion"
TITLE = "Results ingestion"
FULL_SCALE = 10
QUICK_FRACTION = 0.03
TARGETS = [
    Target(metric="ratio", limit=3.0, text="≤ 3× read_json"),
    Target(metric="peak_rss_mb", limit=2000.0, text="< 2 GB RSS"),
]
_GEN_VERSION = 3


def _root(ctx: Context) -> Path:
    return ctx.scenario_dir(NAME) / ("quick" if ctx.quick else "full")


def _plans(ctx: Context) -> list[synth.SectionPlan]:
    return synth.plan_sections(FULL_SCALE, QUICK_FRACTION if ctx.quick else 1.0)


def _write_chunk(args: tuple[list[synth.SectionPlan], str, str]) -> dict[str, Any]:
    plans, sections_dir, answers_dir = args
    return synth.write_corpus(plans, Path(sections_dir), Path(answers_dir))


def prepare(ctx: Context) -> dict[str, Any]:
    """Generate sections and answers (two processes), unless a matching stamp says they exist."""
    root = _root(ctx)
    plans = _plans(ctx)
    stamp = root / "prepared.json"
    want = {
        "version": _GEN_VERSION,
        "sections": [p.stem for p in plans],
        "synth": synth.GENERATOR_VERSION,
    }
    if stamp.exists():
        have = json.loads(stamp.read_text(encoding="utf-8"))
        if have.get("want") == want:
            return dict(have["totals"])
    shutil.rmtree(root, ignore_errors=True)
    sections_dir, answers_dir = root / "sections", root / "answers"
    chunks = [plans[i::2] for i in range(2)]
    with Pool(2) as pool:
        parts = pool.map(
            _write_chunk, [(c, str(sections_dir), str(answers_dir)) for c in chunks if c]
        )
    totals: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            totals[key] = totals.get(key, 0) + value
    totals["series"] = sorted({p.slug for p in plans})
    stamp.write_text(json.dumps({"want": want, "totals": totals}), encoding="utf-8")
    return totals


def cases(ctx: Context) -> list[Case]:
    """One case: all 310 answers (3 % of them in quick mode)."""
    totals = json.loads((_root(ctx) / "prepared.json").read_text(encoding="utf-8"))["totals"]
    desc = (
        f"{totals['sections']} answers: {totals['output_tokens'] / 1e6:.1f} M output tokens, "
        f"{totals['answer_bytes'] / MB:.1f} MB JSON, {totals['rows'] / 1e6:.2f} M items; "
        f"{totals['text_bytes'] / MB:.0f} MB of section text"
    )
    scale = "10× the guide" if not ctx.quick else f"quick: {QUICK_FRACTION:.0%} of 10× the guide"
    return [
        Case(
            scenario=NAME,
            name=scale,
            input_desc=desc,
            size=totals["answer_bytes"] / MB,
            unit="MB",
            targets=TARGETS,
            repeats_full=3,
            repeats_quick=1,
            params={"series": totals["series"]},
            subject_label="parse + validate + ground + resolve + load",
            baseline_label="DuckDB read_json",
            references={"grounding_floor": "json.loads + one str.find per needle"},
            note=(
                f"{totals['input_tokens'] / 1e6:.0f} M input tokens; items = "
                f"{totals['entity_instances']:,} entity + {totals['relationship_instances']:,} "
                f"relationship instances, {totals['mentions']:,} mentions, "
                f"{totals['evidence_quotes']:,} evidence quotes, {totals['aliases']:,} aliases, "
                f"{totals['attributes']:,} attributes (answer sizes from the project's token "
                "estimate)"
            ),
        )
    ]


# ------------------------------------------------------------------------------------------
# Subject
# ------------------------------------------------------------------------------------------


def _process_answers(answers_dir: Path, sections_dir: Path, out_dir: Path) -> dict[str, Any]:
    """What ``process_results_to_files`` does per succeeded line, minus the download."""
    from fantasy_kg.domain.prompts import prompt_version
    from fantasy_kg.domain.schemas import default_ontology
    from fantasy_kg.llm.requests import RequestMeta
    from fantasy_kg.llm.results import Provenance, interpret_message, write_result

    # (imported by variants() already, untimed; these are dictionary lookups here)
    rejected = written = 0
    pv_cache: dict[str, str] = {}
    for path in sorted(answers_dir.glob("*.json")):
        cid = path.stem
        slug, num = cid.rsplit("_section_", 1)
        meta_file = sections_dir / f"{cid}.meta.json"
        sha = json.loads(meta_file.read_text(encoding="utf-8")).get("sha256", "")
        pv = pv_cache.setdefault(slug, prompt_version(default_ontology(slug), "claude-sonnet-5-5"))
        meta = RequestMeta(
            custom_id=cid,
            file_name=f"{cid}.txt",
            chunk_id=num,
            series=slug,
            section_path=str(sections_dir / f"{cid}.txt"),
            sha256=sha,
            prompt_version=pv,
        )
        message = {
            "type": "message",
            "stop_reason": "end_turn",
            "content": [{"type": "text", "text": path.read_text(encoding="utf-8")}],
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        outcome = interpret_message(message, meta, batch_id="msgbatch_bench")
        if outcome.result is None:
            raise RuntimeError(f"{cid}: {outcome.failure}")
        rejected += len(outcome.rejected)
        prov = Provenance(
            custom_id=cid,
            file_name=meta.file_name,
            chunk_id=num,
            series=slug,
            section_path=meta.section_path,
            sha256=sha,
            prompt_version=pv,
            model="claude-sonnet-5-5",
            batch_id="msgbatch_bench",
            backend="bench",
            rejected=outcome.rejected,
        )
        write_result(out_dir, meta, outcome.result, prov)
        written += 1
    return {"result_files": written, "rejected_items": rejected}


def variants(case: Case, ctx: Context) -> dict[str, Variant]:
    """Subject: answers → result files → graph → DuckDB. Baseline: read_json → same tables."""
    # Import everything untimed: a user pays imports once per process, not per batch.
    for module in ("llm.requests", "llm.results", "warehouse.load"):
        importlib.import_module(f"fantasy_kg.{module}")  # llm.requests pulls in the SDK (~2 s)
    from fantasy_kg.pipeline.graph import load_series_from_files

    root = _root(ctx)
    sections_dir, answers_dir = root / "sections", root / "answers"
    out_dir, db_path = root / "extracted", root / "bench.duckdb"
    jobs_dir = root / "batch_jobs"
    series: list[str] = case.params["series"]

    def setup() -> None:
        shutil.rmtree(out_dir, ignore_errors=True)
        for p in (db_path, db_path.with_name(db_path.name + ".wal")):
            p.unlink(missing_ok=True)
        jobs_dir.mkdir(parents=True, exist_ok=True)

    def subject(_: None) -> dict[str, Any]:
        t0 = time.perf_counter()
        details = _process_answers(answers_dir, sections_dir, out_dir)
        details["parse_s"] = round(time.perf_counter() - t0, 2)
        rows: dict[str, int] = {}
        for slug in series:
            t1 = time.perf_counter()
            summary = load_series_from_files(
                sections_dir, out_dir, slug, db_path, jobs_dir=jobs_dir
            )
            details[f"load_{slug}_s"] = round(time.perf_counter() - t1, 2)
            details[f"grounding_rate_{slug}"] = summary.grounding_rate
            for table, n in summary.row_counts.items():
                rows[table] = rows.get(table, 0) + n
        details["rows"] = rows
        details["total_rows"] = sum(rows.values())
        return details

    def baseline(_: None) -> dict[str, Any]:
        return read_json_floor(answers_dir, db_path)

    return {
        "subject": Variant(run=subject, setup=setup, label=case.subject_label),
        "baseline": Variant(run=baseline, setup=setup, label=case.baseline_label),
        "grounding_floor": Variant(
            run=lambda _: grounding_floor(answers_dir, sections_dir),
            label=case.references["grounding_floor"],
        ),
    }


def grounding_floor(answers_dir: Path, sections_dir: Path) -> dict[str, Any]:
    """The least any grounding loader must do: parse each answer, find each needle once.

    One ``str.find`` per mention and quote in its section's text (C speed, no normalization, no
    fuzzy stage, nothing stored). A loader that grounds at all cannot be faster than this, so it
    is the fair yardstick for the subject beside the ``read_json`` floor, which grounds nothing.
    """
    needles = found = 0
    for path in sorted(answers_dir.glob("*.json")):
        answer = json.loads(path.read_text(encoding="utf-8"))
        text = (sections_dir / f"{path.stem}.txt").read_text(encoding="utf-8")
        for entity in answer["entities"]:
            for surface in entity["mentions"]:
                needles += 1
                found += text.find(surface) >= 0
        for rel in answer["relationships"]:
            for quote in rel["evidence"]:
                needles += 1
                found += text.find(quote) >= 0
    return {"needles": needles, "found_exactly": found}


# ------------------------------------------------------------------------------------------
# Baseline: DuckDB read_json into the same tables
# ------------------------------------------------------------------------------------------

_RAW = """
CREATE TEMP TABLE raw AS
SELECT
    regexp_extract(filename, '([A-Za-z0-9_]+)_section_([0-9]+)\\.json$', 1) AS series,
    regexp_extract(filename, '([A-Za-z0-9_]+)_section_([0-9]+)\\.json$', 2) AS section_id,
    entities,
    relationships
FROM read_json(?, filename = true, format = 'auto', maximum_object_size = 67108864)
"""

_FLOOR_SQL = [
    """
    CREATE TEMP TABLE ents AS
    SELECT series, section_id, unnest(entities) AS e FROM raw
    """,
    """
    CREATE TEMP TABLE rels AS
    SELECT series, section_id, unnest(relationships) AS r FROM raw
    """,
    """
    INSERT INTO entities (series, entity_id, type, name, confidence, confidence_max,
        instance_count, mention_count, section_count, alias_count, first_section, last_section,
        attributes_json, source_ids)
    SELECT series, e.id, any_value(e.type), any_value(e.name), avg(e.confidence),
        max(e.confidence), count(*), sum(len(e.mentions)), count(DISTINCT section_id),
        max(len(e.aliases)), min(section_id), max(section_id), '{}', [e.id]
    FROM ents GROUP BY series, e.id
    """,
    """
    INSERT INTO entity_aliases (series, entity_id, alias, instance_count, section_count,
        first_section)
    SELECT series, id, alias, count(*), count(DISTINCT section_id), min(section_id)
    FROM (SELECT series, section_id, e.id AS id, unnest(e.aliases) AS alias FROM ents)
    GROUP BY series, id, alias
    """,
    """
    INSERT INTO entity_attributes (series, entity_id, name, value, instance_count,
        first_section)
    SELECT series, id, a.name, a.value, count(*), min(section_id)
    FROM (SELECT series, section_id, e.id AS id, unnest(e.attributes) AS a FROM ents)
    GROUP BY series, id, a.name, a.value
    """,
    """
    INSERT INTO mentions (series, mention_id, entity_id, raw_entity_id, surface, section_id,
        file_name, status)
    SELECT series, row_number() OVER (), id, id, surface, section_id,
        series || '_section_' || section_id || '.txt', 'not_grounded'
    FROM (SELECT series, section_id, e.id AS id, unnest(e.mentions) AS surface FROM ents)
    """,
    """
    INSERT INTO relationships (series, relationship_id, source_id, type, target_id,
        instance_count, evidence_count, confidence, description, first_section, last_section)
    SELECT series, r.source || '|' || r.type || '|' || r.target, r.source, r.type, r.target,
        count(*), sum(len(r.evidence)), max(r.confidence), any_value(r.description),
        min(section_id), max(section_id)
    FROM rels GROUP BY series, r.source, r.type, r.target
    """,
    """
    INSERT INTO evidence (series, evidence_id, relationship_id, quote, raw_source, raw_type,
        raw_target, instance_confidence, section_id, file_name, status)
    SELECT series, row_number() OVER (), source || '|' || type || '|' || target, quote, source,
        type, target, confidence, section_id, series || '_section_' || section_id || '.txt',
        'not_grounded'
    FROM (SELECT series, section_id, r.source AS source, r.type AS type, r.target AS target,
            r.confidence AS confidence, unnest(r.evidence) AS quote FROM rels)
    """,
]


def read_json_floor(answers_dir: Path, db_path: Path) -> dict[str, Any]:
    """Load the answer files into the warehouse tables with DuckDB alone (one transaction)."""
    from fantasy_kg.warehouse.load import connect, row_counts

    conn = connect(db_path)
    try:
        conn.execute("BEGIN TRANSACTION")
        conn.execute(_RAW, [str(answers_dir / "*.json")])
        for sql in _FLOOR_SQL:
            conn.execute(sql)
        conn.execute("COMMIT")
        counts = row_counts(conn)
    finally:
        conn.close()
    return {"rows": counts, "total_rows": sum(counts.values())}
