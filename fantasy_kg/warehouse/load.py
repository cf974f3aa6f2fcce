"""Load a series' knowledge graph into DuckDB: one transaction, exactly that series' rows.

Re-loading never duplicates rows, another series is never touched, and a crash before ``COMMIT``
leaves the previous state. Why and how (bulk insert through JSON files): docs/architecture.md,
"Warehouse".
"""

import contextlib
import json
import logging
import operator
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from fantasy_kg.domain.errors import ConfigError, TransientError, UserError
from fantasy_kg.domain.failpoints import failpoint
from fantasy_kg.domain.graph.models import BatchJobRow, CostRow, KnowledgeGraph, column_names
from fantasy_kg.warehouse.migrations import TABLES, migrate
from fantasy_kg.warehouse.shards import (
    PAUSE_ENV,
    open_catalog,
    scale_out_root,
    series_writer,
)

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""Progress callback ``(table, tables_done, tables_total)``."""

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


LOCK_WAIT_SECONDS = 120.0
"""How long :func:`connect` waits for another process's lock on the DuckDB file by default."""

LOCK_WAIT_ENV = "FANTASY_KG_LOCK_WAIT_SECONDS"
"""Environment variable that overrides :data:`LOCK_WAIT_SECONDS` (CLI ``--lock-wait``, the
resource's ``lock_wait_seconds``)."""

LOCK_PROGRESS_SECONDS = 5.0
"""While waiting for the lock, say so this often (more often for a limit under 20 s)."""

LockWaitReport = Callable[[float, float], None]
"""Called while waiting for the lock with ``(seconds waited, limit)``."""


class WarehouseError(UserError):
    """The warehouse file cannot be opened or a query failed (bad SQL, locked file, ...)."""


class WarehouseLockedError(WarehouseError, TransientError):
    """Another process held the DuckDB file's lock for longer than the wait limit.

    Transient: the other load ends, so the same load later succeeds (Dagster retries it).
    """


@dataclass(frozen=True)
class LoadResult:
    """What one load wrote."""

    series: str
    run_id: str
    row_counts: dict[str, int]
    seconds: float
    applied_migrations: list[str] = field(default_factory=list)


def lock_wait_seconds(value: float | None = None) -> float:
    """The lock wait limit: ``value``, else ``$FANTASY_KG_LOCK_WAIT_SECONDS``, else 120 s.

    Raises:
        ConfigError: the environment variable is not a non-negative number.
    """
    if value is not None:
        return max(0.0, float(value))
    raw = os.environ.get(LOCK_WAIT_ENV, "").strip()
    if not raw:
        return LOCK_WAIT_SECONDS
    try:
        parsed = float(raw)
    except ValueError:
        parsed = -1.0
    if parsed < 0:
        raise ConfigError(f"{LOCK_WAIT_ENV}={raw!r} is not a number of seconds >= 0")
    return parsed


def _log_wait(waited: float, limit: float) -> None:
    log.warning(
        "waiting for the DuckDB lock (another process is loading): %.0f s of %.0f s", waited, limit
    )


def connect(
    db_path: Path,
    *,
    read_only: bool = False,
    lock_wait: float | None = None,
    on_wait: LockWaitReport | None = None,
    series: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (creating and migrating it unless ``read_only``).

    In scale-out mode (``FANTASY_KG_WAREHOUSE=shards...``) this returns an in-memory catalog of
    every published series instead (read-only in effect; writes go through :func:`writer`).

    DuckDB allows one read-write process per file: another load (a second partition's run, a CLI
    call) holds it for seconds, so this waits for its turn, and says so every few seconds (a
    silent two-minute wait looks like a hang).

    Args:
        db_path: The DuckDB file.
        read_only: Open read-only (the file must exist).
        lock_wait: Seconds to wait for another process's lock (default :func:`lock_wait_seconds`).
        on_wait: Progress report while waiting, every :data:`LOCK_PROGRESS_SECONDS` (default: a
            warning on this module's logger, i.e. a line on stderr in the CLI).
        series: Scale-out only: a catalog of this one series (a reader that filters on it need
            not resolve the whole library). The one-file warehouse ignores it.

    Raises:
        WarehouseError: missing file in read-only mode, or the file cannot be opened.
        WarehouseLockedError: the file stayed locked by another process past ``lock_wait``.
    """
    path = Path(db_path).expanduser()
    shards = scale_out_root(path)
    if shards is not None:
        return open_catalog(shards, series)
    if read_only and not path.exists():
        raise WarehouseError(
            f"warehouse {path} does not exist: load a series first with `fantasy-kg load`"
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    limit = lock_wait_seconds(lock_wait)
    report = on_wait or _log_wait
    start = time.monotonic()
    every = min(LOCK_PROGRESS_SECONDS, max(0.5, limit / 4))
    next_report = start + every
    delay = 0.05
    while True:
        try:
            conn = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.Error as exc:
            if "lock" not in str(exc).lower():
                raise WarehouseError(f"cannot open warehouse {path}: {_one_line(exc)}") from exc
            now = time.monotonic()
            if now - start >= limit:
                raise WarehouseLockedError(
                    f"warehouse {path} stayed locked by another process for {limit:.0f} s "
                    f"({_one_line(exc)}); retry when it is done, or raise the wait with "
                    f"--lock-wait / {LOCK_WAIT_ENV}"
                ) from exc
            if now >= next_report:
                report(now - start, limit)
                next_report = now + every
            time.sleep(min(delay, max(0.0, limit - (now - start))))
            delay = min(delay * 2, 1.0)
    if not read_only:
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
    return conn


@contextlib.contextmanager
def writer(
    db_path: Path,
    series: str,
    *,
    lock_wait: float | None = None,
    on_wait: LockWaitReport | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-write connection for replacing one series' rows, in either warehouse engine.

    One file (default): the migrated DuckDB file, waiting for its single-writer lock. Scale-out:
    a staging connection holding only this series, published atomically when the block ends
    without an error (:func:`fantasy_kg.warehouse.shards.series_writer`); other series' loads
    run at the same time and never wait.
    """
    shards = scale_out_root(Path(db_path))
    if shards is not None:
        with series_writer(shards, series, lock_wait=lock_wait_seconds(lock_wait)) as conn:
            _STAGING.add(id(conn))
            try:
                yield conn
            finally:
                _STAGING.discard(id(conn))
        return
    conn = connect(db_path, lock_wait=lock_wait, on_wait=on_wait)
    try:
        yield conn
    finally:
        conn.close()


_STAGING: set[int] = set()
"""Connections that stage a shard (the test pause happens at publish, not before COMMIT)."""


def _pause_before_commit(conn: duckdb.DuckDBPyConnection) -> None:
    """Test hook :data:`PAUSE_ENV`: hold the load open so a test can kill it mid-write."""
    raw = os.environ.get(PAUSE_ENV, "").strip()
    if raw and id(conn) not in _STAGING:
        time.sleep(float(raw))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500]


def table_columns(conn: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    """``(column, duckdb type)`` of a table in ordinal order (the source of the load casts)."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
        [table],
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def _select_list(columns: Sequence[tuple[str, str]]) -> str:
    """Casts from a JSON array row (``j``) to each column's type."""
    exprs = []
    for i, (_, dtype) in enumerate(columns):
        if dtype.endswith("[]"):
            exprs.append(f"CAST(j -> '$[{i}]' AS {dtype})")
        elif dtype == "VARCHAR":
            exprs.append(f"(j ->> {i})")
        else:
            exprs.append(f"CAST(j ->> {i} AS {dtype})")
    return ", ".join(exprs)


def _write_jsonl(path: Path, rows: Iterable[Any], names: Sequence[str]) -> int:
    getter = operator.attrgetter(*names)
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            values = getter(row)
            fh.write(_ENCODE(values if len(names) > 1 else [values]))
            fh.write("\n")
            n += 1
    return n


def _insert_rows(
    conn: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Any], tmp: Path
) -> int:
    """Insert dataclass rows whose fields match ``table``'s columns; returns rows inserted."""
    if not rows:
        return 0
    columns = table_columns(conn, table)
    names = [c for c, _ in columns]
    expected = column_names(type(rows[0]))
    if names != expected:
        raise RuntimeError(
            f"table {table} columns {names} do not match {type(rows[0]).__name__} {expected}"
        )
    path = tmp / f"{table}.jsonl"
    n = _write_jsonl(path, rows, names)
    cols = ", ".join(f'"{c}"' for c in names)
    conn.execute(
        f"INSERT INTO {table} ({cols}) SELECT {_select_list(columns)} "
        "FROM (SELECT json AS j FROM read_json_objects(?, format = 'newline_delimited'))",
        [str(path)],
    )
    path.unlink()
    return n


def _replace_tables(
    conn: duckdb.DuckDBPyConnection,
    series: str,
    tables: Mapping[str, Sequence[Any]],
    progress: Progress | None,
) -> dict[str, int]:
    counts: dict[str, int] = {}
    total = len(tables)
    with _staging_dir(conn) as tmp:
        for done, (table, rows) in enumerate(tables.items(), start=1):
            conn.execute(f"DELETE FROM {table} WHERE series = ?", [series])
            counts[table] = _insert_rows(conn, table, rows, tmp)
            failpoint("during_load")
            if progress is not None:
                progress(table, done, total)
    return counts


@contextlib.contextmanager
def _staging_dir(conn: duckdb.DuckDBPyConnection) -> Iterator[Path]:
    """A scratch folder for the JSONL staging files, next to the database file.

    It lives beside the database (not in the system temp dir) and is emptied at the start of every
    load, so files left by a load killed mid-transaction are swept by the next one. Clearing it is
    safe because the caller holds DuckDB's single read-write lock on that file.
    """
    row = conn.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    db_file = row[0] if row else None
    if not db_file:
        with tempfile.TemporaryDirectory(prefix="fantasy_kg_load_") as tmpdir:
            yield Path(tmpdir)
        return
    staging = Path(db_file).resolve().parent / f".{Path(db_file).name}.load_staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_series(
    conn: duckdb.DuckDBPyConnection,
    graph: KnowledgeGraph,
    *,
    input_dir: Path | None = None,
    extracted_dir: Path | None = None,
    progress: Progress | None = None,
    story: Mapping[str, Sequence[Any]] | None = None,
) -> LoadResult:
    """Replace one series' rows in every table with the graph, in one transaction.

    Args:
        conn: A read-write connection (from :func:`connect`, so migrated).
        graph: The series' graph from :func:`fantasy_kg.domain.graph.build_graph`.
        input_dir: Sections folder, recorded in ``load_runs``.
        extracted_dir: Results folder, recorded in ``load_runs``.
        progress: Optional ``(table, done, total)`` callback, called inside the transaction.
        story: Rows of the story tables (``chapters``) to replace in the same transaction, so
            a fact's chapter never comes from an older load than the fact.

    Returns:
        Rows written per table.

    Raises:
        Whatever interrupted the load, after rolling back: the previous rows stay as they were.
    """
    started = time.monotonic()
    run_id = uuid.uuid4().hex
    conn.execute("BEGIN TRANSACTION")
    try:
        counts = _replace_tables(conn, graph.series, graph.tables(), progress)
        if story:
            counts.update(_replace_tables(conn, graph.series, story, None))
        seconds = round(time.monotonic() - started, 3)
        conn.execute(
            "INSERT INTO load_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                graph.series,
                datetime.now(UTC),
                graph.ontology_version,
                graph.ontology_fingerprint,
                str(input_dir) if input_dir else None,
                str(extracted_dir) if extracted_dir else None,
                json.dumps(graph.stats.as_dict(), sort_keys=True),
                json.dumps(counts, sort_keys=True),
                seconds,
            ],
        )
        _pause_before_commit(conn)
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except duckdb.Error:  # the transaction may already be aborted
            log.debug("rollback after a failed load raised", exc_info=True)
        raise
    log.info("loaded series %s: %s", graph.series, counts)
    return LoadResult(graph.series, run_id, counts, seconds)


def load_costs(
    conn: duckdb.DuckDBPyConnection,
    series: str,
    batch_jobs: Sequence[BatchJobRow],
    costs: Sequence[CostRow],
) -> dict[str, int]:
    """Replace one series' ``batch_jobs`` and ``costs`` rows (the cost summary, without a graph)."""
    conn.execute("BEGIN TRANSACTION")
    try:
        counts = _replace_tables(
            conn, series, {"batch_jobs": list(batch_jobs), "costs": list(costs)}, None
        )
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except duckdb.Error:
            log.debug("rollback after a failed cost load raised", exc_info=True)
        raise
    return counts


def row_counts(conn: duckdb.DuckDBPyConnection, series: str | None = None) -> dict[str, int]:
    """Rows per table, for one series or all."""
    out: dict[str, int] = {}
    for table in TABLES:
        if series is None:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        else:
            row = conn.execute(
                f"SELECT count(*) FROM {table} WHERE series = ?",
                [series],
            ).fetchone()
        out[table] = int(row[0]) if row else 0
    return out


def run_query(
    conn: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one statement; SQL errors become one-line :class:`WarehouseError`.

    Returns:
        Column names and rows (empty for statements without a result set).
    """
    try:
        cur = conn.execute(sql, list(params) if params else None)
        description = cur.description
        if not description:
            return [], []
        columns = [str(d[0]) for d in description]
        return columns, [tuple(r) for r in cur.fetchall()]
    except duckdb.Error as exc:
        raise WarehouseError(f"SQL error: {_one_line(exc)}") from exc
