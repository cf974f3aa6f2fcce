"""Scenario 6, view: time to build the HTML graph page, and time to first render in Chromium.

* Oz (full mode; the sample series in quick mode) through the real pipeline with the local
  backend, then ``write_view`` (warehouse queries, force layout, HTML) timed;
* a synthetic series written straight into a migrated warehouse: 2,000 entities and 10,000
  relationships with 1-3 evidence quotes each over 5 books x 20 chapters (quick mode: 500 /
  2,500), the size the issue asks to stay smooth at;
* each page opened from file:// in headless Chromium (``scripts/view_check.py``): first render
  (navigation start to cytoscape's first frame), frame times while panning and zooming, and the
  time to apply a story-time cut. Without ``/usr/bin/chromium`` those numbers are skipped.

Baseline of the build row: reading the same rows from DuckDB alone (``graph_payload`` without
layout and HTML is not separable, so the baseline is the payload query + JSON encoding).
"""

import importlib.util
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from bench import corpus
from bench.harness import REPO_ROOT, Context

NAME = "view"
TITLE = "Graph view"
CHROMIUM = Path("/usr/bin/chromium")


def prepare(ctx: Context) -> dict[str, Any]:
    """Nothing to cache: each row builds its own warehouse (seconds)."""
    return {}


def synth_warehouse(db: Path, series: str, nodes: int, edges: int) -> None:
    """A migrated warehouse holding one synthetic series of ``nodes`` entities, ``edges`` edges.

    Endpoints are skewed (a few hubs, a long tail) like a real cast; every relationship has 1-3
    grounded quotes placed in one of 5 books x 20 chapters.
    """
    from fantasy_kg.warehouse.load import connect

    conn = connect(db)
    try:
        conn.execute("SELECT setseed(0.42)")
        conn.execute("BEGIN TRANSACTION")
        for t in (
            "entities",
            "entity_aliases",
            "mentions",
            "relationships",
            "evidence",
            "chapters",
            "sections",
        ):
            conn.execute(f"DELETE FROM {t} WHERE series = ?", [series])
        conn.execute(
            """INSERT INTO chapters (series, book_no, book_file, book, chapter_no, title,
                   char_start, char_end)
               SELECT ?, b, 'book_' || b || '.txt', 'Book ' || b, c, 'Chapter ' || c,
                      (c - 1) * 10000 + 10, c * 10000 + 10
               FROM range(1, 6) t(b), range(1, 21) u(c)""",
            [series],
        )
        conn.execute(
            """INSERT INTO sections (series, section_id, section_number, file_name, status,
                   backend, model)
               VALUES (?, '01', 1, 'synthetic_section_01.txt', 'extracted', 'local',
                       'claude-sonnet-5-5')""",
            [series],
        )
        types = "['Character', 'Location', 'Organization', 'Artifact', 'Event', 'Creature']"
        conn.execute(
            f"""INSERT INTO entities (series, entity_id, type, name, mention_count,
                   first_book_no, first_book, first_section, last_book_no, last_book,
                   last_section)
               SELECT ?, 'e' || i, {types}[1 + (i % 6)], 'Entity ' || i,
                      1 + floor(200 / (1 + i / 20))::INTEGER,
                      1 + (i % 5), 'Book ' || (1 + (i % 5)), '01', 5, 'Book 5', '01'
               FROM range(?) t(i)""",
            [series, nodes],
        )
        conn.execute(
            """INSERT INTO entity_aliases (series, entity_id, alias, instance_count, first_book_no)
               SELECT ?, 'e' || i, 'Alias ' || i, 1, 1 + (i % 5) FROM range(?) t(i)""",
            [series, nodes],
        )
        conn.execute(
            """INSERT INTO mentions (series, mention_id, entity_id, section_id, book_no,
                   book_file, char_start, status)
               SELECT ?, i, 'e' || i, '01', 1 + (i % 5), 'book_' || (1 + (i % 5)) || '.txt',
                      (i * 7919) % 200000, 'exact'
               FROM range(?) t(i)""",
            [series, nodes],
        )
        kinds = "['ALLY_OF', 'ENEMY_OF', 'LOCATED_IN', 'MEMBER_OF', 'PARENT_OF', 'POSSESSES']"
        conn.execute(
            f"""INSERT INTO relationships (series, relationship_id, source_id, type, target_id,
                   directed, evidence_count, first_book_no, description)
               SELECT ?, 'r' || i, 'e' || floor(? * pow(random(), 2))::BIGINT,
                      {kinds}[1 + (i % 6)], 'e' || floor(? * random())::BIGINT,
                      i % 6 NOT IN (0, 1), 1 + (i % 3), 1, 'synthetic'
               FROM range(?) t(i)""",
            [series, nodes, nodes, edges],
        )
        conn.execute(
            """INSERT INTO evidence (series, evidence_id, relationship_id, quote, section_id,
                   book_no, book, book_file, char_start, status, score)
               SELECT ?, row_number() OVER (), r.relationship_id,
                      'A quote about ' || r.source_id || ' and ' || r.target_id || '.', '01', b,
                      'Book ' || b, 'book_' || b || '.txt', (k * 7919 + hash(r.relationship_id)
                      % 100000)::BIGINT % 200000, ['exact', 'normalized', 'fuzzy'][1 + k % 3], 1.0
               FROM relationships r, range(3) q(k),
                    LATERAL (SELECT 1 + (hash(r.relationship_id) % 5)::INTEGER AS b)
               WHERE r.series = ? AND k < r.evidence_count""",
            [series, series],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _view_check() -> Any:
    spec = importlib.util.spec_from_file_location(
        "view_check", REPO_ROOT / "scripts" / "view_check.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _measure(
    db: Path, series: str, out: Path, repeats: int, label: str, size: str
) -> list[dict[str, Any]]:
    from fantasy_kg.pipeline.view import _open, _script_json, graph_payload, write_view

    builds: list[float] = []
    summary: Any = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        summary, _payload = write_view(db, series, out)
        builds.append(time.perf_counter() - t0)
    reads: list[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        conn = _open(db, series)
        try:
            # The same queries without the layout (a graph of no edges lays out instantly).
            payload = graph_payload(conn, series)
        finally:
            conn.close()
        _script_json(payload)
        reads.append(time.perf_counter() - t0)
    build_s = statistics.median(builds)
    rows: list[dict[str, Any]] = [
        {
            "scenario": NAME,
            "kind": "time",
            "case": f"{label}: build HTML",
            "input": size,
            "status": "ok",
            "message": "",
            "runs": repeats,
            "wall_s": build_s,
            "wall_s_runs": builds,
            "details": summary.as_dict() if summary else {},
            "baseline": {
                "name": "queries + layout + JSON, no file",
                "wall_s": statistics.median(reads),
            },
            "ratio": build_s / statistics.median(reads) if statistics.median(reads) else None,
            "targets": [],
            "target_met": None,
            "note": f"{summary.bytes / 1e6:.1f} MB page" if summary else "",
        }
    ]
    if not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None:
        rows.append(
            {
                "scenario": NAME,
                "kind": "time",
                "case": f"{label}: first render in Chromium",
                "input": size,
                "status": "skipped",
                "message": "no /usr/bin/chromium or playwright",
                "targets": [],
                "target_met": None,
            }
        )
        return rows
    report = _view_check().check(out)
    render_s = float(report["first_render_ms"]) / 1000
    rows.append(
        {
            "scenario": NAME,
            "kind": "time",
            "case": f"{label}: first render in Chromium",
            "input": size,
            "status": "ok" if report["ok"] else "failed",
            "message": "" if report["ok"] else json.dumps(report)[:300],
            "runs": 1,
            "wall_s": render_s,
            "value_text": (
                f"{render_s:.2f} s; frames {report['frame_ms_mean']:.1f} ms mean, "
                f"{report['frame_ms_p95']:.1f} ms p95; cut {report['cut_ms']:.0f} ms"
            ),
            "details": report,
            "baseline": {"name": "60 fps frame budget", "value": "16.7 ms"},
            "targets": [],
            "target_met": None,
            "note": f"{report['drawn_nodes']} nodes, {report['drawn_edges']} edges drawn",
        }
    )
    return rows


def rows(ctx: Context) -> list[dict[str, Any]]:
    """Build and render rows for a real series and for the synthetic one."""
    from fantasy_kg.pipeline.run import run_series

    base = ctx.scenario_dir(NAME)
    out: list[dict[str, Any]] = []
    oz = corpus.oz_dir()
    data = base / "data"
    shutil.rmtree(data, ignore_errors=True)
    if ctx.quick or oz is None:
        series = "ashen_crown"
        shutil.copytree(REPO_ROOT / "data" / "books" / series, data / "books" / series)
        label = "sample (quick)" if ctx.quick else "sample (Oz absent)"
    else:
        series = "oz"
        corpus.link_series(oz, data / "books" / series)
        label = "Oz"
    run_series(series, data_dir=data, backend="local")
    db = data / "fantasy_kg.duckdb"
    repeats = 1 if ctx.quick else 3
    out += _measure(db, series, base / f"{series}.html", repeats, label, f"{label} warehouse")
    nodes, edges = (500, 2_500) if ctx.quick else (2_000, 10_000)
    synth_db = base / "synthetic.duckdb"
    synth_db.unlink(missing_ok=True)
    synth_warehouse(synth_db, "synthetic", nodes, edges)
    size = f"{nodes:,} entities, {edges:,} relationships"
    out += _measure(synth_db, "synthetic", base / "synthetic.html", repeats, "synthetic", size)
    json.dumps(out)
    return out
