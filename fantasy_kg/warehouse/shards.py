"""The scale-out warehouse: one immutable Parquet version per series, published by a pointer swap.

Selected by ``FANTASY_KG_WAREHOUSE=shards`` (root ``<db file stem>_shards`` beside the DuckDB
file) or ``shards:<path or URL>``. A load stages its series in an in-memory DuckDB with the
current schema, writes one Parquet file per table into a new version folder, then replaces the
series' ``CURRENT`` pointer atomically; readers resolve every series' pointer once and see views
over exactly those files. docs/scale-out.md has the layout, the guarantees and the numbers.
"""

import contextlib
import fcntl
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from fantasy_kg.domain.errors import ConfigError, TransientError
from fantasy_kg.warehouse.schema import (
    TABLE_SPECS,
    cast_select,
    create_table_sql,
    view_statements,
)

log = logging.getLogger(__name__)

WAREHOUSE_ENV = "FANTASY_KG_WAREHOUSE"
"""``duckdb`` (default: one file) or ``shards[:<root>]`` (the scale-out engine)."""

PAUSE_ENV = "FANTASY_KG_TEST_PAUSE_IN_LOAD"
"""Test hook: seconds to sleep between staging a series and publishing it (kill tests)."""

KEEP_SECONDS = 3600.0
"""A superseded version stays readable this long (a reader resolves pointers once, at connect)."""

_POINTER = "CURRENT"
_PREFIX = "series="
"""Series folders are Hive-style partitions, so a filter on ``series`` opens only its files."""
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_REMOTE = re.compile(r"^[a-z][a-z0-9+]*://")


@dataclass(frozen=True)
class ShardRoot:
    """Where the shards live: a local folder or an object-storage URL DuckDB can write."""

    location: str

    @property
    def remote(self) -> bool:
        """True for URLs (s3://, gs://, az://, ...), handled by DuckDB's httpfs/azure."""
        return bool(_REMOTE.match(self.location))

    def series_dir(self, series: str) -> str:
        """The folder (or prefix) of one series; the slug is checked so it cannot escape."""
        if not _SLUG.match(series) or ".." in series:
            raise ConfigError(f"series {series!r} is not a valid warehouse shard name")
        return f"{self.location.rstrip('/')}/{_PREFIX}{series}"


def scale_out_selected() -> bool:
    """Whether ``FANTASY_KG_WAREHOUSE`` selects the scale-out engine (no path needed)."""
    return os.environ.get(WAREHOUSE_ENV, "").strip().startswith("shards")


def scale_out_root(db_path: Path) -> ShardRoot | None:
    """The shard root selected by ``FANTASY_KG_WAREHOUSE``, or None for the one-file default.

    Raises:
        ConfigError: the setting is neither ``duckdb`` nor ``shards[:<root>]``.
    """
    raw = os.environ.get(WAREHOUSE_ENV, "").strip()
    if raw in ("", "duckdb"):
        return None
    kind, _, where = raw.partition(":")
    if kind != "shards":
        raise ConfigError(
            f"{WAREHOUSE_ENV}={raw!r}: use 'duckdb' (one file) or 'shards[:<folder or URL>]'"
        )
    if not where:
        path = Path(db_path).expanduser()
        return ShardRoot(str(path.parent.resolve() / f"{path.stem}_shards"))
    if _REMOTE.match(where):
        return ShardRoot(where)
    return ShardRoot(str(Path(where).expanduser().resolve()))


# --- reading -------------------------------------------------------------------------------


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def published(
    root: ShardRoot, conn: duckdb.DuckDBPyConnection, series: str | None = None
) -> dict[str, str]:
    """Series → its published version folder, each pointer read once (the reader's snapshot).

    With ``series``, only that series' pointer is read (absent if it was never published).
    """
    base = root.location.rstrip("/")
    out: dict[str, str] = {}
    if not root.remote:
        if not os.path.isdir(base):
            return out
        if series is not None:
            root.series_dir(series)  # checks the slug: it names a folder under the root
        names = [_PREFIX + series] if series is not None else sorted(os.listdir(base))
        for name in names:
            if not name.startswith(_PREFIX):
                continue
            try:
                with open(os.path.join(base, name, _POINTER), encoding="utf-8") as fh:
                    version = fh.read().strip()
            except FileNotFoundError:
                continue  # never published (or its first load was killed)
            if version:
                out[name[len(_PREFIX) :]] = f"{base}/{name}/{version}"
        return out
    pattern = root.series_dir(series) if series is not None else f"{base}/{_PREFIX}*"
    try:
        rows = conn.execute(
            "SELECT filename, content FROM read_text(?)", [f"{pattern}/{_POINTER}"]
        ).fetchall()
    except duckdb.IOException:
        if series is None:
            raise
        rows = []  # that series was never published
    for filename, content in rows:
        name = str(filename).rstrip("/").split("/")[-2]
        version = str(content).strip()
        if version and name.startswith(_PREFIX):
            out[name[len(_PREFIX) :]] = f"{base}/{name}/{version}"
    return dict(sorted(out.items()))


def open_catalog(root: ShardRoot, series: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB whose tables are views over every published series' Parquet files.

    Each series is read at the version its pointer names now, so a reader sees every series in
    a consistent state for the life of the connection; the analyst views and ``graph_as_of``
    are the same SQL as in the one-file warehouse. Nothing written here is persisted.

    Args:
        root: The shard root.
        series: Only this series (a partition's run reading its own rows): one pointer and one
            file per table instead of all of them, so its cost does not grow with the library.
    """
    conn = duckdb.connect(":memory:")
    try:
        versions = published(root, conn, series)
        for spec in TABLE_SPECS:
            files = [f"{folder}/{spec.name}.parquet" for folder in versions.values()]
            if files:
                listing = "[" + ", ".join(_sql_str(f) for f in files) + "]"
                # Hive partitions: a filter on series opens only that series' files. Every file
                # of a table has the same columns (one schema version), so no union_by_name.
                source = (
                    f"read_parquet({listing}, hive_partitioning = true, "
                    "hive_types_autocast = false)"
                )
                conn.execute(f"CREATE VIEW {spec.name} AS {cast_select(spec, source)}")
            else:
                conn.execute(create_table_sql(spec))
        for statement in view_statements():
            conn.execute(statement)
        _stamp_current(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _stamp_current(conn: duckdb.DuckDBPyConnection) -> None:
    """A ``schema_migrations`` saying "current", for readers that check the schema version."""
    from fantasy_kg.warehouse.migrations import MIGRATIONS, applied_versions

    applied_versions(conn)
    for mig in MIGRATIONS:
        conn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [mig.version, mig.name]
        )


class CatalogCache:
    """One catalog per series, reused while that series' pointer stays where it was.

    A partition's run reads its series' catalog in many steps (the checks, the metadata of
    ``knowledge_graph`` and ``cost_summary``); opening one costs ~60 ms of CPU (an in-memory
    DuckDB, a view per table, the analyst views), so a run opened eight. Here each step gets a
    cursor on a catalog that is reopened only when the series was published again since, so a
    reader still sees the series as published when it connected. Local roots only: on object
    storage reading the pointer is a request of its own, and every connection opens afresh.

    Thread-safe. Catalogs superseded by a newer version are closed with the cache, not at once:
    a cursor taken from one may still be reading (closing a DuckDB connection closes its cursors).
    """

    def __init__(self, root: ShardRoot) -> None:
        """A cache for catalogs under ``root`` (nothing opened yet)."""
        self._root = root
        self._lock = threading.Lock()
        self._open: dict[str, tuple[str | None, duckdb.DuckDBPyConnection]] = {}
        self._superseded: list[duckdb.DuckDBPyConnection] = []
        self.opened = 0
        """Catalogs opened so far (tests and benchmarks read it)."""

    @contextlib.contextmanager
    def connect(self, series: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read connection to ``series``' catalog, closed when the block ends."""
        if self._root.remote:
            with contextlib.closing(open_catalog(self._root, series)) as conn:
                yield conn
            return
        # Read before opening: if a load publishes in between, the catalog holds the newer
        # version under the older name, and the next call reopens it. Never the reverse.
        version = _read_pointer(self._root, series, None)
        with self._lock:
            entry = self._open.get(series)
            if entry is None or entry[0] != version:
                if entry is not None:
                    self._superseded.append(entry[1])
                entry = (version, open_catalog(self._root, series))
                self._open[series] = entry
                self.opened += 1
            cursor = entry[1].cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def close(self) -> None:
        """Close every catalog (the end of the run that used them)."""
        with self._lock:
            conns = [conn for _, conn in self._open.values()] + self._superseded
            self._open.clear()
            self._superseded.clear()
        for conn in conns:
            conn.close()


# --- writing -------------------------------------------------------------------------------


@contextlib.contextmanager
def _series_lock(root: ShardRoot, series: str, lock_wait: float) -> Iterator[None]:
    """Serialize writers of the same series on this storage (other series never wait).

    ``flock`` is released by the kernel when the process dies, so a killed load never leaves a
    stale lock. On object storage there is no lock: the publish step's version check catches a
    concurrent writer of the same series instead (docs/scale-out.md).
    """
    if root.remote:
        yield
        return
    folder = Path(root.series_dir(series))
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        deadline = time.monotonic() + lock_wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    from fantasy_kg.warehouse.load import WarehouseLockedError

                    raise WarehouseLockedError(
                        f"series {series} stayed locked by another load for {lock_wait:.0f} s"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _read_pointer(
    root: ShardRoot, series: str, conn: duckdb.DuckDBPyConnection | None
) -> str | None:
    """The series' published version, or None; ``conn`` reads it on object storage."""
    pointer = f"{root.series_dir(series)}/{_POINTER}"
    if not root.remote:
        try:
            return Path(pointer).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None
    if conn is None:
        raise ValueError("reading a remote pointer needs a DuckDB connection")
    try:
        row = conn.execute("SELECT content FROM read_text(?)", [pointer]).fetchone()
    except duckdb.Error:
        return None
    return str(row[0]).strip() if row and row[0] else None


def _write_pointer(root: ShardRoot, series: str, version: str) -> None:
    """Publish: replace the pointer in one atomic step (rename locally, one PUT remotely)."""
    folder = root.series_dir(series)
    if root.remote:
        remote = duckdb.connect(":memory:")
        try:
            remote.execute(
                f"COPY (SELECT ? AS v) TO {_sql_str(folder + '/' + _POINTER)} "
                "(FORMAT csv, HEADER false, QUOTE '')",
                [version],
            )
        finally:
            remote.close()
        return
    tmp = Path(folder) / f".{_POINTER}.{uuid.uuid4().hex}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(version + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, Path(folder) / _POINTER)
    _fsync_dir(Path(folder))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_version() -> str:
    return f"v-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}"


def _version_time(version: str) -> float | None:
    try:
        stamp = version.split("-")[1]
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC).timestamp()
    except (IndexError, ValueError):
        return None


def _stage(root: ShardRoot, series: str) -> tuple[duckdb.DuckDBPyConnection, str | None]:
    """An in-memory warehouse holding the series' published rows (or none), and their version."""
    from fantasy_kg.warehouse.migrations import migrate

    conn = duckdb.connect(":memory:")
    try:
        migrate(conn)
        base = _read_pointer(root, series, conn)
        if base is not None:
            folder = f"{root.series_dir(series)}/{base}"
            for spec in TABLE_SPECS:
                source = f"read_parquet({_sql_str(f'{folder}/{spec.name}.parquet')})"
                conn.execute(f"INSERT INTO {spec.name} {cast_select(spec, source)}")
    except BaseException:
        conn.close()
        raise
    return conn, base


def _export(conn: duckdb.DuckDBPyConnection, root: ShardRoot, series: str) -> str:
    """Write every table of the series to a new, not yet published version folder."""
    version = _new_version()
    folder = f"{root.series_dir(series)}/{version}"
    if not root.remote:
        Path(folder).mkdir(parents=True)
    for spec in TABLE_SPECS:
        target = f"{folder}/{spec.name}.parquet"
        conn.execute(
            f"COPY (SELECT * FROM {spec.name} WHERE series = ?) TO {_sql_str(target)} "
            "(FORMAT parquet, COMPRESSION zstd)",
            [series],
        )
        if not root.remote:
            with open(target, "rb") as fh:
                os.fsync(fh.fileno())
    if not root.remote:
        _fsync_dir(Path(folder))
    return version


def _pause_for_tests() -> None:
    raw = os.environ.get(PAUSE_ENV, "").strip()
    if raw:
        time.sleep(float(raw))


def _collect_garbage(root: ShardRoot, series: str, current: str) -> None:
    """Delete versions superseded (or abandoned) more than :data:`KEEP_SECONDS` ago."""
    if root.remote:
        return  # left to a bucket lifecycle rule (docs/scale-out.md)
    folder = Path(root.series_dir(series))
    versions = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("v-"))
    now = time.time()
    for i, name in enumerate(versions):
        if name == current:
            continue
        later = versions[i + 1] if i + 1 < len(versions) else None
        since = _version_time(later) if later else _version_time(name)
        if since is not None and now - since > KEEP_SECONDS:
            shutil.rmtree(folder / name, ignore_errors=True)


class ConcurrentWriteError(TransientError):
    """Another writer published the same series between this one's staging and publish.

    Transient: the same load, retried, stages from the newer version (Dagster retries it).
    """


@contextlib.contextmanager
def series_writer(
    root: ShardRoot, series: str, *, lock_wait: float
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A staging connection for one series; its rows are published when the block succeeds.

    The block replaces the series' rows with the usual loaders (``load_series``, ``load_costs``).
    An exception, or a kill at any point before the pointer swap, leaves the published version
    untouched: a new version folder is invisible until the pointer names it.
    """
    with _series_lock(root, series, lock_wait):
        conn, base = _stage(root, series)
        try:
            yield conn
            version = _export(conn, root, series)
            _pause_for_tests()
            if _read_pointer(root, series, conn) != base:
                raise ConcurrentWriteError(
                    f"series {series} was published by another writer during this load; retry"
                )
            _write_pointer(root, series, version)
        finally:
            conn.close()
        log.info("published series %s version %s to %s", series, version, root.location)
        try:
            _collect_garbage(root, series, version)
        except OSError:
            log.debug("garbage collection of %s failed", series, exc_info=True)
