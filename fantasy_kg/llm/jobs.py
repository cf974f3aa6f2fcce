"""Job store: job files, intent records and request payloads on disk, written atomically.

Under ``jobs_dir`` (default ``data/batch_jobs``): ``<batch_id>.json`` job files (the source of
truth, readable by hand), ``intents/<manifest_hash>.json``, ``payloads/<manifest_hash>.jsonl.gz``
and a self-healing SQLite index (``index/jobs.sqlite3``) that lets a reader open only the files it
needs. The records themselves are in :mod:`fantasy_kg.llm.job_records` (re-exported here).
Layout and reasoning: docs/architecture.md, "Job store".
"""

import fcntl
import gzip
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from fantasy_kg.domain import paths
from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.llm.job_records import (
    BatchProcessingStatus,
    BatchResultType,
    FailureRecord,
    InputRef,
    IntentRecord,
    JobRecord,
    RequestCounts,
    RequestUsage,
    ResultCounts,
    UnprovenCandidate,
    iso,
    utcnow,
)
from fantasy_kg.llm.request_size import canonical_json
from fantasy_kg.llm.request_types import PreparedRequest

logger = logging.getLogger(__name__)

_MTIME_SETTLE_NS = 2_000_000_000

INDEX_FILE = "index/jobs.sqlite3"
"""The job index under ``jobs_dir``: in a sub-folder, so that SQLite's ``-wal``/``-shm`` files
(created and removed with connections) do not touch the job folder's mtime, which says whether a
job file may have appeared since the last look."""


_FILES_PARSED = 0


def job_files_parsed() -> int:
    """Job files parsed by any store in this process so far (tests and benches diff it)."""
    return _FILES_PARSED


_CONNECTIONS_LOCK = threading.RLock()
_CONNECTIONS: "OrderedDict[tuple[int, Path], sqlite3.Connection]" = OrderedDict()
_MAX_CONNECTIONS = 8


def _connection(path: Path) -> sqlite3.Connection:
    """A cached connection to the index at ``path`` (call with ``_CONNECTIONS_LOCK`` held).

    Opening SQLite, setting WAL and checking the schema costs ~10 ms, far more than a job file
    write, so each process keeps a few connections open (keyed by pid: never used across a fork).
    """
    key = (os.getpid(), path)
    conn = _CONNECTIONS.get(key)
    if conn is not None and path.is_file():
        _CONNECTIONS.move_to_end(key)
        return conn
    if conn is not None:  # the index file was removed (a deleted jobs folder): start afresh
        conn.close()
        del _CONNECTIONS[key]
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS jobs (batch_id TEXT PRIMARY KEY, series TEXT NOT NULL, "
            "sort_key TEXT NOT NULL, owed INTEGER NOT NULL)"
        )
        conn.execute("CREATE INDEX IF NOT EXISTS jobs_owed ON jobs (owed, series)")
        conn.execute("CREATE INDEX IF NOT EXISTS jobs_series ON jobs (series)")
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    except sqlite3.Error:
        conn.close()
        raise
    _CONNECTIONS[key] = conn
    while len(_CONNECTIONS) > _MAX_CONNECTIONS:
        _, old = _CONNECTIONS.popitem(last=False)
        old.close()
    return conn


def _owes(job: JobRecord) -> bool:
    """Whether a job still owes something: results not processed or a follow-up to create.

    A released job (someone else's batch, adopted by mistake and let go) owes nothing.
    """
    if job.is_released:
        return False
    return not job.is_settled or job.followup_state == "pending"


def _order(job: JobRecord) -> tuple[str, str]:
    """Oldest submission first (the order every reader of job files uses)."""
    return (job.submitted_at or job.created_at or "", job.id)


def manifest_hash(requests: Sequence[PreparedRequest], model: str, backend: str = "") -> str:
    """Hash of the work a batch would do: backend, model and every (custom_id, params).

    Order-free. The backend is part of it because the same requests sent to the local baseline
    and to Claude are different work: a job of one must never stand in for the other.
    """
    h = hashlib.sha256(f"{backend}|{model}".encode() if backend else model.encode())
    for req in sorted(requests, key=lambda r: r.custom_id):
        params_hash = hashlib.sha256(
            canonical_json(req.body.get("params", {})).encode()
        ).hexdigest()
        h.update(f"\n{req.custom_id}:{params_hash}".encode())
    return h.hexdigest()[:32]


class JobStore:
    """Reads and writes job files, intents and payloads under one directory."""

    def __init__(self, jobs_dir: Path | str | None = None) -> None:
        self.root = Path(jobs_dir) if jobs_dir is not None else paths.jobs_dir()
        self.root = self.root.expanduser().resolve()
        #: Job files parsed by this store (tests and benches check that settled jobs are not).
        self.files_parsed = 0

    def _parsed(self) -> None:
        global _FILES_PARSED
        self.files_parsed += 1
        _FILES_PARSED += 1

    # --- job files -------------------------------------------------------------------------

    def job_path(self, batch_id: str) -> Path:
        """``<jobs_dir>/<batch_id>.json``; the id comes from the server, so it is confined."""
        return paths.confined(self.root, f"{batch_id}.json")

    def exists(self, batch_id: str) -> bool:
        """Whether a job file exists for ``batch_id``."""
        return self.job_path(batch_id).is_file()

    def save(self, job: JobRecord) -> None:
        """Write the job file atomically, and its index row.

        The row is marked owed *before* the file is written and set to the truth after: a crash
        in between leaves a row that says "owed", which the next read re-checks against the file.
        A row that wrongly said "settled" would hide the job from the sensor.
        """
        job.updated_at = utcnow().isoformat()
        self._index_put(job, owed=True)
        paths.atomic_write_text(self.job_path(job.id), job.model_dump_json(indent=2) + "\n")
        self._index_put(job, owed=_owes(job))

    def load(self, batch_id: str) -> JobRecord:
        """Read a job file.

        Raises:
            InputFileError: no job file for ``batch_id`` here, or it does not validate.
        """
        path = self.job_path(batch_id)
        try:
            self._parsed()
            return JobRecord.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputFileError(
                f"no job file for batch {batch_id!r} in {self.root}: check --batch-id and "
                "--jobs-dir"
            ) from exc
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise InputFileError(f"{path}: field {loc}: {err['msg']}") from exc

    def all_jobs(self, series: str | None = None) -> list[JobRecord]:
        """Every job file (optionally of one series), oldest submission first.

        With ``series``, only that series' files are parsed (found through the index).
        """
        ids = self._indexed_ids(series=series, owed_only=False)
        if ids is None:
            return self._scan(series, owed_only=False)
        return self._read_rows(ids, series=series, owed_only=False)

    def owed_jobs(self, series: str | None = None) -> list[JobRecord]:
        """Jobs that still owe something (results not processed, or a follow-up to create).

        Settled jobs are never parsed: this is what keeps a sensor tick or a partition's planning
        as cheap with 10,000 finished batches on disk as with 10.
        """
        ids = self._indexed_ids(series=series, owed_only=True)
        if ids is None:
            return self._scan(series, owed_only=True)
        return self._read_rows(ids, series=series, owed_only=True)

    def job_files(self, series: str) -> list[Path]:
        """Job files of ``series``, plus those whose series is not recorded (older files).

        For readers that parse job files their own way (the graph's provenance reader).
        """
        ids = self._indexed_ids(series=series, owed_only=False, unknown_series=True)
        if ids is None:
            return sorted(self.root.glob("*.json")) if self.root.is_dir() else []
        return [self.job_path(batch_id) for batch_id in ids]

    def known_batch_ids(self) -> set[str]:
        """Batch ids that already belong to some job file (never adopted by reconciliation)."""
        if not self.root.is_dir():
            return set()
        return {p.stem for p in self.root.glob("*.json")}

    def _scan(self, series: str | None, *, owed_only: bool) -> list[JobRecord]:
        """Parse every job file (the path without an index: an unwritable or broken index)."""
        jobs: list[JobRecord] = []
        if not self.root.is_dir():
            return jobs
        for path in sorted(self.root.glob("*.json")):
            try:
                self._parsed()
                job = JobRecord.model_validate_json(path.read_text(encoding="utf-8"))
            except (OSError, ValidationError, ValueError):
                continue
            if job.is_released:
                continue  # nothing that sums, polls or loads jobs may see it; ``load`` still does
            if (series is None or job.series == series) and (not owed_only or _owes(job)):
                jobs.append(job)
        jobs.sort(key=_order)
        return jobs

    def _read_rows(self, ids: list[str], *, series: str | None, owed_only: bool) -> list[JobRecord]:
        """Parse the job files the index points at, correcting rows that went stale."""
        jobs: list[JobRecord] = []
        for batch_id in ids:
            try:
                path = self.job_path(batch_id)
                self._parsed()
                job = JobRecord.model_validate_json(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                self._index_drop(batch_id)
                continue
            except (OSError, ValidationError, ValueError, InputFileError):
                continue
            owes = _owes(job)
            if job.is_released:
                if owed_only:
                    self._index_put(job, owed=False)
                continue
            if owed_only and not owes:
                self._index_put(job, owed=False)  # settled by a writer that left the row stale
                continue
            if series is None or job.series == series:
                jobs.append(job)
        jobs.sort(key=_order)
        return jobs

    # --- the index -------------------------------------------------------------------------

    @property
    def index_path(self) -> Path:
        """``<jobs_dir>/index/jobs.sqlite3``."""
        return self.root / INDEX_FILE

    @contextmanager
    def _index(self, *, create: bool = True) -> Iterator[sqlite3.Connection | None]:
        """The index connection of this process (``None``: no index and ``create`` is off)."""
        if not create and not self.index_path.is_file():
            yield None
            return
        with _CONNECTIONS_LOCK:
            yield _connection(self.index_path)

    def _index_put(self, job: JobRecord, *, owed: bool) -> None:
        try:
            with self._index() as conn:
                assert conn is not None
                conn.execute(
                    "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?)",
                    [job.id, job.series, _order(job)[0], int(owed)],
                )
        except (sqlite3.Error, OSError) as exc:
            logger.debug("job index %s not updated: %s", self.index_path, exc)

    def _index_drop(self, batch_id: str) -> None:
        try:
            with self._index(create=False) as conn:
                if conn is not None:
                    conn.execute("DELETE FROM jobs WHERE batch_id = ?", [batch_id])
        except (sqlite3.Error, OSError) as exc:
            logger.debug("job index %s not updated: %s", self.index_path, exc)

    def _indexed_ids(
        self, *, series: str | None, owed_only: bool, unknown_series: bool = False
    ) -> list[str] | None:
        """Batch ids from the index, oldest first; ``None`` when the index cannot be used."""
        if not self.root.is_dir():
            return []
        try:
            with self._index() as conn:
                assert conn is not None
                self._sync(conn)
                where, args = [], []
                if owed_only:
                    where.append("owed = 1")
                if series is not None:
                    where.append("(series = ? OR series = '')" if unknown_series else "series = ?")
                    args.append(series)
                sql = "SELECT batch_id FROM jobs"
                if where:
                    sql += " WHERE " + " AND ".join(where)
                rows = conn.execute(sql + " ORDER BY sort_key, batch_id", args).fetchall()
                return [str(r[0]) for r in rows]
        except (sqlite3.Error, OSError) as exc:
            logger.warning(
                "job index %s unusable (%s): reading every job file", self.index_path, exc
            )
            return None

    def _sync(self, conn: sqlite3.Connection) -> None:
        """Index job files that appeared without the index knowing (other versions, copies).

        Listing the folder (names only) is skipped while its mtime is unchanged: renaming a new
        job file into the folder changes it, rewriting one in place through :meth:`save` keeps
        the index current by itself.
        """
        stamp = str(os.stat(self.root).st_mtime_ns)
        row = conn.execute("SELECT value FROM meta WHERE key = 'dir_mtime'").fetchone()
        if row is not None and row[0] == stamp:
            return
        on_disk = {
            entry.name[:-5]
            for entry in os.scandir(self.root)
            if entry.name.endswith(".json") and entry.is_file()
        }
        indexed = {str(r[0]) for r in conn.execute("SELECT batch_id FROM jobs")}
        new = sorted(on_disk - indexed)
        first = conn.execute("SELECT 1 FROM meta WHERE key = 'initialized'").fetchone() is None
        if first and new:
            logger.warning(
                "indexing %d existing job files in %s (first use of the job index, once; "
                "job files stay where they are)",
                len(new),
                self.root,
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            for batch_id in new:
                try:
                    self._parsed()
                    job = JobRecord.model_validate_json(
                        (self.root / f"{batch_id}.json").read_text(encoding="utf-8")
                    )
                except (OSError, ValidationError, ValueError):
                    # Not a job file (or a broken one): remembered as settled, so it is not
                    # parsed again on every listing; readers of all files skip it as before.
                    conn.execute("INSERT OR REPLACE INTO jobs VALUES (?, '', '', 0)", [batch_id])
                    continue
                conn.execute(
                    "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?)",
                    [job.id, job.series, _order(job)[0], int(_owes(job))],
                )
            if first:
                conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('initialized', ?)", [iso(utcnow())]
                )
            for batch_id in indexed - on_disk:
                conn.execute("DELETE FROM jobs WHERE batch_id = ?", [batch_id])
            if time.time_ns() - int(stamp) > _MTIME_SETTLE_NS:
                # A file renamed in within the file system's timestamp granularity could share
                # this mtime: only trust a stamp that is old enough.
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('dir_mtime', ?)", [stamp])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # --- intents ---------------------------------------------------------------------------

    def intent_path(self, mhash: str) -> Path:
        """``<jobs_dir>/intents/<manifest_hash>.json``."""
        return paths.confined(self.root, "intents", f"{mhash}.json")

    def load_intent(self, mhash: str) -> IntentRecord | None:
        """The intent for a manifest, or ``None``."""
        path = self.intent_path(mhash)
        if not path.is_file():
            return None
        return IntentRecord.model_validate_json(path.read_text(encoding="utf-8"))

    def save_intent(self, intent: IntentRecord) -> None:
        """Write an intent atomically (fsynced before the create call is made)."""
        paths.atomic_write_text(
            self.intent_path(intent.manifest_hash), intent.model_dump_json(indent=2) + "\n"
        )

    def all_intents(self) -> list[IntentRecord]:
        """Every intent record."""
        folder = self.root / "intents"
        out: list[IntentRecord] = []
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                try:
                    out.append(IntentRecord.model_validate_json(path.read_text(encoding="utf-8")))
                except (OSError, ValidationError, ValueError):
                    continue
        return out

    @contextmanager
    def lock(self, name: str, *, blocking: bool = True) -> Iterator[bool]:
        """Exclusive inter-process lock ``<jobs_dir>/locks/<name>.lock``.

        Two processes submitting the same manifest at once (a Dagster run and a CLI call) are
        serialized, so the second sees the first's intent and reuses its batch.

        Args:
            name: Lock name (a manifest hash).
            blocking: False to yield ``False`` at once when another process holds the lock
                (housekeeping that can wait for a later call).
        """
        path = paths.confined(self.root, "locks", f"{name}.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        locked = False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                pass
            yield locked
        finally:
            if locked:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # --- payloads --------------------------------------------------------------------------

    def payload_path(self, mhash: str) -> Path:
        """``<jobs_dir>/payloads/<manifest_hash>.jsonl.gz``."""
        return paths.confined(self.root, "payloads", f"{mhash}.jsonl.gz")

    def write_payloads(self, mhash: str, requests: Sequence[PreparedRequest]) -> Path:
        """Store the request bodies and metadata of a manifest (idempotent, atomic)."""
        path = self.payload_path(mhash)
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=5) as fh:
                for req in requests:
                    meta = InputRef.from_meta(req.meta).model_dump(mode="json")
                    fh.write(json.dumps({"body": req.body, "meta": meta}, ensure_ascii=False))
                    fh.write("\n")
            with open(tmp, "rb") as raw:
                os.fsync(raw.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    def read_payloads(self, mhash: str) -> list[PreparedRequest]:
        """Load the requests of a manifest.

        Raises:
            InputFileError: the payload file is missing (e.g. deleted by hand).
        """
        path = self.payload_path(mhash)
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                lines = [json.loads(line) for line in fh if line.strip()]
        except FileNotFoundError as exc:
            raise InputFileError(
                f"request payloads {path} are missing: re-submit the sections with "
                "`fantasy-kg extract-batch --mode submit`"
            ) from exc
        out = []
        for line in lines:
            cid = str(line["body"]["custom_id"])
            meta = InputRef.model_validate(line["meta"]).to_meta(cid)
            out.append(PreparedRequest(body=line["body"], meta=meta))
        return out


__all__ = [
    "INDEX_FILE",
    "BatchProcessingStatus",
    "BatchResultType",
    "FailureRecord",
    "InputRef",
    "IntentRecord",
    "JobRecord",
    "JobStore",
    "RequestCounts",
    "RequestUsage",
    "ResultCounts",
    "UnprovenCandidate",
    "iso",
    "job_files_parsed",
    "manifest_hash",
    "utcnow",
]
