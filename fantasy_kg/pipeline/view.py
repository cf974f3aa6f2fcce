"""The graph view: one self-contained, spoiler-aware HTML page per series, from the warehouse.

Why it works this way: docs/architecture.md, "Graph build".
"""

import html
import json
import math
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from fantasy_kg.domain import paths
from fantasy_kg.domain.errors import UserError
from fantasy_kg.domain.story import CHAPTER_UNKNOWN
from fantasy_kg.warehouse.load import connect
from fantasy_kg.warehouse.migrations import MIGRATIONS

POS = 10_000_000
"""A story point as one number, ``book_no * POS + chapter_no`` (as in ``graph_as_of``)."""

ALL_BOOKS = 1_000_000
"""A book number past any series: ``graph_as_of(series, ALL_BOOKS)`` knows every placed fact."""

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1f77b4",
    "#8c564b",
)
"""Tableau 10 plus two: distinct on white and in greyscale print."""

LOCAL_NOTE = "local baseline (rule-based extractor, not Claude)"


class ViewError(UserError):
    """The view cannot be built: unknown series, empty warehouse, bad option."""


@dataclass(frozen=True)
class ViewSummary:
    """What :func:`write_view` wrote."""

    series: str
    path: str
    nodes: int
    edges: int
    evidence: int
    skipped_edges: int
    bytes: int
    seconds: float
    backends: list[str]
    models: list[str]
    as_of_book: int | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI prints it)."""
        return dict(self.__dict__)


def _rows(
    conn: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any]
) -> list[tuple[Any, ...]]:
    return conn.execute(sql, list(params)).fetchall()


def _open(db_path: Path, series: str | None) -> duckdb.DuckDBPyConnection:
    """Read-only when the schema is current; a warehouse made by an older version is migrated.

    ``series`` scopes a scale-out catalog to that series (see :func:`connect`).
    """
    conn = connect(db_path, read_only=True, series=series)
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    if row and row[0] is not None and int(row[0]) >= max(m.version for m in MIGRATIONS):
        return conn
    conn.close()
    return connect(db_path, series=series)


def force_layout(
    n: int, edges: Sequence[tuple[int, int, float]], *, seed: int = 0, iterations: int = 60
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Fruchterman-Reingold positions for ``n`` nodes, deterministic for a given seed.

    Repulsion is computed in row blocks (O(n²) work, O(block x n) memory), attraction along the
    weighted edges, and a weak gravity keeps disconnected pieces on screen.

    Returns:
        ``(n, 2)`` coordinates scaled so that neighbours sit about 60 px apart.
    """
    if n == 0:
        return np.zeros((0, 2), dtype=np.float32)
    rng = np.random.default_rng(seed)
    pos = rng.standard_normal((n, 2)).astype(np.float32) * math.sqrt(n)
    if n == 1:
        return pos * 0
    src = np.array([e[0] for e in edges], dtype=np.int64)
    dst = np.array([e[1] for e in edges], dtype=np.int64)
    weight = np.array([e[2] for e in edges], dtype=np.float32)
    k = np.float32(1.0)
    temp = math.sqrt(n) * 0.5
    cool = (0.02 / max(temp, 0.02)) ** (1 / max(iterations, 1))
    block = max(1, 2_000_000 // n)
    for _ in range(iterations):
        disp = np.zeros_like(pos)
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            delta = pos[lo:hi, None, :] - pos[None, :, :]
            dist2 = np.einsum("ijk,ijk->ij", delta, delta) + np.float32(1e-4)
            disp[lo:hi] += np.einsum("ijk,ij->ik", delta, k * k / dist2)
        if len(src):
            delta = pos[src] - pos[dst]
            dist = np.sqrt(np.einsum("ij,ij->i", delta, delta)) + np.float32(1e-6)
            pull = delta * (dist * weight / k)[:, None]
            np.add.at(disp, src, -pull)
            np.add.at(disp, dst, pull)
        disp -= pos * np.float32(0.3)
        length = np.sqrt(np.einsum("ij,ij->i", disp, disp)) + np.float32(1e-9)
        pos += disp * (np.minimum(length, temp) / length)[:, None]
        temp *= cool
    # Nodes without any edge would float at the rim: put them on a ring just around the rest.
    degree = np.zeros(n, dtype=np.int64)
    if len(src):
        np.add.at(degree, src, 1)
        np.add.at(degree, dst, 1)
    lonely = np.flatnonzero(degree == 0)
    linked = np.flatnonzero(degree > 0)
    if len(linked):
        centre = pos[linked].mean(axis=0)
        pos -= centre
        radius = float(np.percentile(np.sqrt((pos[linked] ** 2).sum(axis=1)), 95)) * 1.15 + 1
        angles = np.linspace(0, 2 * math.pi, num=len(lonely), endpoint=False, dtype=np.float32)
        pos[lonely, 0] = radius * np.cos(angles)
        pos[lonely, 1] = radius * np.sin(angles)
    else:
        pos -= pos.mean(axis=0)
    return pos * np.float32(60.0)


def _point_label(
    book_no: int | None,
    chapter_no: int | None,
    books: dict[int, str],
    chapters: dict[tuple[int, int], str],
) -> str:
    if book_no is None:
        return "unplaced"
    book = f"Book {book_no}: {books.get(book_no, '')}".rstrip(": ")
    if chapter_no is None or chapter_no >= CHAPTER_UNKNOWN:
        return book
    if chapter_no == 0:
        return f"{book}, before chapter 1"
    return f"{book}, {chapters.get((book_no, chapter_no), f'chapter {chapter_no}')}"


def graph_payload(
    conn: duckdb.DuckDBPyConnection, series: str, *, as_of_book: int | None = None
) -> dict[str, Any]:
    """Everything the page shows for one series, as JSON-ready data.

    Args:
        conn: A warehouse connection (schema with ``graph_as_of``).
        series: Series slug.
        as_of_book: Keep only facts first stated by the end of this book (the file then holds
            no later fact at all, not merely hidden ones).

    Raises:
        ViewError: the series has no entities in the warehouse, or ``as_of_book`` < 1.
    """
    if as_of_book is not None and as_of_book < 1:
        raise ViewError(f"--as-of-book must be 1 or more, not {as_of_book}")
    count = _rows(conn, "SELECT count(*) FROM entities WHERE series = ?", [series])[0][0]
    if not count:
        known = [r[0] for r in _rows(conn, "SELECT DISTINCT series FROM entities ORDER BY 1", [])]
        raise ViewError(
            f"series {series!r} has no entities in the warehouse"
            + (f" (series there: {', '.join(known)})" if known else " (it is empty)")
            + ": run `fantasy-kg run --series ...` first"
        )
    limit = as_of_book if as_of_book is not None else ALL_BOOKS
    cut = limit * POS + CHAPTER_UNKNOWN
    books = {
        int(b): str(t or "")
        for b, t in _rows(
            conn,
            "SELECT book_no, any_value(book) FROM (SELECT book_no, book FROM chapters "
            "WHERE series = ? UNION ALL SELECT first_book_no, first_book FROM entities "
            "WHERE series = ?) WHERE book_no IS NOT NULL GROUP BY 1",
            [series, series],
        )
    }
    chapters = {
        (int(b), int(c)): str(t)
        for b, c, t in _rows(
            conn,
            "SELECT book_no, chapter_no, title FROM chapters WHERE series = ?",
            [series],
        )
    }
    known_at: dict[tuple[str, str], tuple[int, int, int | None, int | None]] = {}
    for kind, ident, b, c, mentions, quotes in _rows(
        conn,
        "SELECT kind, id, first_book_no, first_chapter_no, mentions_known, evidence_known "
        "FROM graph_as_of(?, ?)",
        [series, limit],
    ):
        known_at[(kind, ident)] = (int(b), int(c), mentions, quotes)

    def pos_of(kind: str, ident: str) -> int | None:
        found = known_at.get((kind, ident))
        return found[0] * POS + found[1] if found else None

    def placed(kind: str, sql: str) -> Iterator[tuple[int | None, tuple[Any, ...]]]:
        """The rows of ``sql`` (the fact's id first) with the point the fact is first stated.

        On a spoiler-free page (``as_of_book``) a fact not stated by the cut is left out.
        """
        for row in _rows(conn, sql, [series]):
            p = pos_of(kind, row[0])
            if as_of_book is None or p is not None:
                yield p, row

    aliases: dict[str, list[list[Any]]] = defaultdict(list)
    for eid, alias, b in _rows(
        conn,
        "SELECT a.entity_id, a.alias, a.first_book_no FROM entity_aliases a "
        "JOIN entities e USING (series, entity_id) WHERE a.series = ? AND a.alias <> e.name "
        "ORDER BY a.entity_id, a.instance_count DESC, a.alias",
        [series],
    ):
        if b is None or b <= limit:
            aliases[eid].append([alias, b])
    attributes: dict[str, list[list[Any]]] = defaultdict(list)
    for eid, name, value, b in _rows(
        conn,
        "SELECT entity_id, name, value, first_book_no FROM entity_attributes WHERE series = ? "
        "ORDER BY entity_id, name, instance_count DESC, value",
        [series],
    ):
        if b is None or b <= limit:
            attributes[eid].append([name, value, b])
    spans: dict[str, tuple[int, int]] = {
        eid: (int(lo), int(hi))
        for eid, lo, hi in _rows(
            conn,
            f"SELECT entity_id, min(book_no * {POS} + chapter_no), "
            f"max(book_no * {POS} + chapter_no) FROM mention_positions "
            f"WHERE series = ? AND book_no IS NOT NULL AND book_no * {POS} + chapter_no <= ? "
            "GROUP BY entity_id",
            [series, cut],
        )
    }

    def label(p: int | None) -> str:
        if p is None:
            return "unplaced"
        return _point_label(p // POS, p % POS, books, chapters)

    nodes: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for p, (eid, name, etype, mentions, fsec, lsec) in placed(
        "entity",
        "SELECT entity_id, name, type, mention_count, first_section, last_section "
        "FROM entities WHERE series = ? ORDER BY mention_count DESC, name, entity_id",
    ):
        seen = known_at.get(("entity", eid))
        span = spans.get(eid)
        index[eid] = len(nodes)
        nodes.append(
            {
                "id": eid,
                "name": name,
                "type": etype,
                "mentions": int(seen[2] if seen and seen[2] is not None else mentions or 0)
                if as_of_book is not None
                else int(mentions or 0),
                "aliases": aliases.get(eid, []),
                "attributes": attributes.get(eid, []),
                "pos": p,
                "first": label(span[0] if span else p) + (f" (section {fsec})" if fsec else ""),
                "last": label(span[1] if span else p) + (f" (section {lsec})" if lsec else ""),
            }
        )
    evidence: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rid, quote, b, book, c, chapter, section, status, score in _rows(
        conn,
        "SELECT v.relationship_id, v.quote, v.book_no, v.book, p.chapter_no, p.chapter, "
        "v.section_id, v.status, v.score FROM evidence v "
        "JOIN evidence_positions p USING (series, evidence_id) WHERE v.series = ? "
        "ORDER BY v.relationship_id, v.book_no NULLS LAST, p.chapter_no, v.evidence_id",
        [series],
    ):
        p = b * POS + c if b is not None else None
        if as_of_book is not None and (p is None or p > cut):
            continue
        evidence[rid].append(
            {
                "quote": quote,
                "book": f"Book {b}: {book}" if b is not None else "unknown book",
                "chapter": chapter
                if chapter
                else ("before chapter 1" if c == 0 else "chapter unknown (quote not found)"),
                "section": section,
                "status": status,
                "score": round(float(score), 3) if score is not None else None,
                "pos": p,
            }
        )
    edges: list[dict[str, Any]] = []
    skipped = 0
    for p, (rid, source, target, rtype, directed, ev_count, description, confidence) in placed(
        "relationship",
        "SELECT relationship_id, source_id, target_id, type, directed, evidence_count, "
        "description, confidence FROM relationships WHERE series = ? "
        "ORDER BY relationship_id",
    ):
        if source not in index or target not in index:
            skipped += 1  # an orphan: an endpoint the graph does not hold cannot be drawn
            continue
        edges.append(
            {
                "id": rid,
                "source": source,
                "target": target,
                "type": rtype,
                "directed": bool(directed),
                "evidence_count": len(evidence.get(rid, [])) if as_of_book else int(ev_count or 0),
                "description": description or "",
                "confidence": round(float(confidence), 3) if confidence is not None else None,
                "pos": p,
                "evidence": evidence.get(rid, []),
            }
        )
    made = _rows(
        conn,
        "SELECT DISTINCT backend, model FROM sections WHERE series = ? AND backend IS NOT NULL "
        "ORDER BY 1, 2",
        [series],
    )
    backends = sorted({str(b) for b, _ in made})
    models = sorted({str(m) for _, m in made if m})
    etypes = _type_table([n["type"] for n in nodes])
    rtypes = _type_table([e["type"] for e in edges])
    directed_types = {e["type"] for e in edges if e["directed"]}
    for t in rtypes:
        t["directed"] = t["name"] in directed_types
    points: list[dict[str, Any]] = [
        {"pos": b * POS + c, "label": _point_label(b, c, books, chapters)}
        for (b, c) in sorted(chapters)
        if b <= limit
    ]
    for b in sorted(books):
        if b <= limit:
            points.append(
                {"pos": b * POS + CHAPTER_UNKNOWN, "label": f"end of Book {b}: {books[b]}"}
            )
    points.sort(key=lambda p: int(p["pos"]))
    _place(nodes, edges, seed=zlib.crc32(series.encode("utf-8")))
    return {
        "series": series,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "backends": backends,
        "models": models,
        "local": backends == ["local"],
        "made_by": ", ".join(LOCAL_NOTE if b == "local" else b for b in backends) or "unknown",
        "as_of_book": as_of_book,
        "entity_types": etypes,
        "relationship_types": rtypes,
        "points": points,
        "nodes": nodes,
        "edges": edges,
        "skipped_edges": skipped,
    }


def _type_table(names: Sequence[str]) -> list[dict[str, Any]]:
    counts: dict[str, int] = defaultdict(int)
    for name in names:
        counts[name] += 1
    ordered = sorted(counts, key=lambda t: (-counts[t], t))
    return [
        {"name": t, "count": counts[t], "color": PALETTE[i % len(PALETTE)]}
        for i, t in enumerate(ordered)
    ]


def _place(nodes: list[dict[str, Any]], edges: list[dict[str, Any]], *, seed: int) -> None:
    """Give every node ``x``/``y`` from one force layout of the whole (cut) graph."""
    index = {n["id"]: i for i, n in enumerate(nodes)}
    links = [
        (index[e["source"]], index[e["target"]], 1.0 + math.log1p(e["evidence_count"]))
        for e in edges
        if e["source"] != e["target"]
    ]
    xy = force_layout(len(nodes), links, seed=seed, iterations=60 if len(nodes) < 1000 else 40)
    for i, node in enumerate(nodes):
        node["x"] = round(float(xy[i, 0]), 1)
        node["y"] = round(float(xy[i, 1]), 1)


def _asset(name: str) -> str:
    return resources.files("fantasy_kg").joinpath("data", "view", name).read_text(encoding="utf-8")


def _script_json(value: Any) -> str:
    """JSON that cannot close its ``<script>`` element (book quotes may hold ``</script>``)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(payload: dict[str, Any]) -> str:
    """The self-contained page for a payload from :func:`graph_payload`."""
    page = _asset("template.html")
    title = f"{payload['series']} — fantasy_kg graph"
    parts = {
        "<!--FKG:TITLE-->": html.escape(title),
        "/*FKG:CYTOSCAPE*/": _asset("cytoscape.min.js"),
        "/*FKG:APP*/": _asset("app.js"),
        "/*FKG:DATA*/": _script_json(payload),
    }
    for marker, text in parts.items():
        head, sep, tail = page.partition(marker)
        if not sep:
            raise RuntimeError(f"view template lacks {marker}")
        page = head + text + tail
    return page


def default_output(series: str, root: Path | None = None) -> Path:
    """``<data>/views/<series>.html``, confined to the data directory."""
    return paths.confined((root or paths.data_dir()) / "views", f"{series}.html")


def write_view(
    db_path: Path,
    series: str,
    output: Path | None = None,
    *,
    as_of_book: int | None = None,
) -> tuple[ViewSummary, dict[str, Any]]:
    """Build the page of one series from the warehouse and write it atomically.

    Args:
        db_path: The DuckDB warehouse.
        series: Series slug.
        output: HTML file (default ``<data>/views/<series>.html``).
        as_of_book: Spoiler-free file: only facts first stated by the end of this book.

    Returns:
        What was written, and the payload (the Dagster asset draws its PNG preview from it).

    Raises:
        ViewError: unknown series or bad option; WarehouseError: no or locked warehouse.
    """
    started = time.perf_counter()
    conn = _open(db_path, series)
    try:
        known = _rows(conn, "SELECT count(*) FROM entities WHERE series = ?", [series])[0][0]
        if not known:
            # A scoped scale-out catalog holds no other series to name in the error: reopen whole.
            conn.close()
            conn = _open(db_path, None)
        payload = graph_payload(conn, series, as_of_book=as_of_book)
    finally:
        conn.close()
    page = render_html(payload)
    target = output or default_output(series)
    if target.exists() and target.is_dir():
        raise ViewError(f"--output {target} is a directory: give a file name ending in .html")
    target.parent.mkdir(parents=True, exist_ok=True)
    paths.atomic_write_text(target, page)
    summary = ViewSummary(
        series=series,
        path=str(target),
        nodes=len(payload["nodes"]),
        edges=len(payload["edges"]),
        evidence=sum(len(e["evidence"]) for e in payload["edges"]),
        skipped_edges=int(payload["skipped_edges"]),
        bytes=len(page.encode("utf-8")),
        seconds=round(time.perf_counter() - started, 3),
        backends=list(payload["backends"]),
        models=list(payload["models"]),
        as_of_book=as_of_book,
    )
    return summary, payload


def page_entity_ids(html_path: Path) -> list[str]:
    """The entity ids a written page holds, read back from its inlined JSON (for checks).

    Raises:
        ViewError: the file is missing or holds no graph data.
    """
    if not html_path.is_file():
        raise ViewError(
            f"no view page at {html_path}: materialize graph_view or run fantasy-kg view"
        )
    page = html_path.read_text(encoding="utf-8")
    _, sep, rest = page.partition('<script id="fkg-data" type="application/json">')
    body, end, _tail = rest.partition("</script>")
    if not sep or not end:
        raise ViewError(f"{html_path} is not a fantasy-kg view page (no graph data)")
    data = json.loads(body)
    return [str(n["id"]) for n in data["nodes"]]
