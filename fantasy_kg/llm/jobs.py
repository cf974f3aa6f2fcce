"""Job store: job files, intent records and request payloads on disk, written atomically.

Three kinds of files live under ``jobs_dir`` (default ``data/batch_jobs``):

* ``<batch_id>.json``: one :class:`JobRecord` per batch, the guide's job file plus what
  exactly-once, retries and cost accounting need. A process that did not submit the batch (the
  Dagster sensor, ``fantasy-kg extract-batch --mode status``) works from this file alone.
* ``intents/<manifest_hash>.json``: an :class:`IntentRecord` written *before* the create call and
  updated at once after it. A crash between the two leaves a ``pending`` intent, which the next
  run reconciles against the server's batch list instead of submitting again (invariant 1).
* ``payloads/<manifest_hash>.jsonl.gz``: the exact request bodies of a manifest, so retries,
  truncation splits and resubmission of archived results work from any process.
* ``index/jobs.sqlite3`` (SQLite in WAL mode): one row per job file with its series, its submission
  order and whether it still owes anything. Job files stay flat and stay the source of truth (the
  guide's ``<jobs_dir>/<batch_id>.json``, readable by hand and by ``_load_job``); the index only
  lets a reader open *the files it needs*: one series' jobs, or the jobs that still owe results,
  without parsing thousands of settled ones. It is rebuilt from the files when missing (a data
  folder from an older version is indexed once, with a log line) and heals itself: a row that
  says "owed" is re-checked against its file on every read.

The API key is never part of any of these records.
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
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fantasy_kg.domain import paths
from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.domain.pricing import Cost, TokenUsage
from fantasy_kg.llm.requests import PreparedRequest, RequestMeta, _canonical

logger = logging.getLogger(__name__)

_MTIME_SETTLE_NS = 2_000_000_000

INDEX_FILE = "index/jobs.sqlite3"
"""The job index under ``jobs_dir``: in a sub-folder, so that SQLite's ``-wal``/``-shm`` files
(created and removed with connections) do not touch the job folder's mtime, which says whether a
job file may have appeared since the last look."""


class BatchProcessingStatus(StrEnum):
    """``processing_status`` of a Message Batch."""

    IN_PROGRESS = "in_progress"
    CANCELING = "canceling"
    ENDED = "ended"


class BatchResultType(StrEnum):
    """``result.type`` of one line of a batch's results."""

    SUCCEEDED = "succeeded"
    ERRORED = "errored"
    CANCELED = "canceled"
    EXPIRED = "expired"


def utcnow() -> datetime:
    """Now, timezone-aware UTC (the API's timestamps are RFC 3339 UTC)."""
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    """RFC 3339 text of ``dt`` or ``None``."""
    return dt.isoformat() if dt is not None else None


class _ItemAccess(BaseModel):
    """Lets code written for the guide's dict-shaped job files use ``job["id"]`` too."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError as exc:
            raise KeyError(key) from exc

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style ``get``."""
        return getattr(self, key, default)


class RequestCounts(_ItemAccess):
    """The API's ``request_counts``; they sum to the number of requests in the batch."""

    model_config = ConfigDict(extra="ignore")

    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @property
    def total(self) -> int:
        """All requests of the batch."""
        return self.processing + self.succeeded + self.errored + self.canceled + self.expired


FailureType = Literal[
    "errored",
    "expired",
    "canceled",
    "refusal",
    "max_tokens",
    "model_context_window_exceeded",
    "invalid_json",
    "schema_mismatch",
    "no_text_block",
    "missing_result",
    "archived",
    "split_incomplete",
]


class FailureRecord(_ItemAccess):
    """Why one custom_id did not end as a result file.

    Attributes:
        custom_id: The request.
        batch_id: The batch it ran in (``realtime`` for real-time mode).
        type: What went wrong (see :data:`FailureType`).
        error_type: The API's ``error.type`` for errored results (``invalid_request_error``, ...).
        message: The API's message or the validation error, one line, no secrets.
        retryable: Whether resubmitting the same request can succeed.
        attempt: Attempt number of the batch that produced it (1 = first submission).
        resubmitted_in: Batch id of the follow-up that retries it, once created.
        file_name: Section file of the request.
        series: Series slug.
        stop_reason: The message's ``stop_reason`` for succeeded-but-unusable results.
        recorded_at: When it was recorded.
    """

    model_config = ConfigDict(extra="ignore")

    custom_id: str
    batch_id: str
    type: str
    error_type: str = ""
    message: str = ""
    retryable: bool = False
    attempt: int = 1
    resubmitted_in: str | None = None
    file_name: str = ""
    series: str = ""
    stop_reason: str = ""
    recorded_at: str = Field(default_factory=lambda: utcnow().isoformat())


class InputRef(_ItemAccess):
    """One request's section and idempotency key (section sha256 + prompt version + model)."""

    model_config = ConfigDict(extra="ignore")

    file_name: str
    chunk_id: str
    series: str = ""
    section_path: str = ""
    sha256: str = ""
    prompt_version: str = ""
    split_of: str = ""
    split_root: str = ""
    effort: str = ""
    max_tokens: int = 0

    @classmethod
    def from_meta(cls, meta: RequestMeta) -> "InputRef":
        """Copy a request's metadata."""
        return cls(
            file_name=meta.file_name,
            chunk_id=meta.chunk_id,
            series=meta.series,
            section_path=meta.section_path,
            sha256=meta.sha256,
            prompt_version=meta.prompt_version,
            split_of=meta.split_of,
            split_root=meta.split_root,
            effort=meta.effort,
            max_tokens=meta.max_tokens,
        )

    def to_meta(self, custom_id: str) -> RequestMeta:
        """Back to request metadata."""
        return RequestMeta(
            custom_id=custom_id,
            file_name=self.file_name,
            chunk_id=self.chunk_id,
            series=self.series,
            section_path=self.section_path,
            sha256=self.sha256,
            prompt_version=self.prompt_version,
            split_of=self.split_of,
            split_root=self.split_root,
            effort=self.effort,
            max_tokens=self.max_tokens,
        )


class RequestUsage(BaseModel):
    """Usage and cost of one succeeded request (only succeeded results are billed)."""

    usage: TokenUsage
    cost: Cost


class ResultCounts(_ItemAccess):
    """How every submitted custom_id ended (``submitted == written + parts + failed + split``)."""

    submitted: int = 0
    written: int = 0
    parts_written: int = 0
    failed: int = 0
    retryable: int = 0
    split: int = 0
    unexpected: int = 0


class UnprovenCandidate(_ItemAccess):
    """A batch that may be a late create of ours, or anybody's: reported, never touched.

    Attributes:
        batch_id: The server's id.
        created_at: Its ``created_at``.
        request_count: Its number of requests (the manifest's).
        seen_at: When it was first seen.
    """

    model_config = ConfigDict(extra="ignore")

    batch_id: str
    created_at: str | None = None
    request_count: int = 0
    seen_at: str = Field(default_factory=lambda: utcnow().isoformat())


class JobRecord(_ItemAccess):
    """The job file ``<jobs_dir>/<batch_id>.json``.

    The first fields are the guide's (``id``, ``processing_status``, ``request_counts``,
    ``created_at``, ``expires_at``, ``local_request_mapping``, ``output_dir``, ``model``,
    ``series_name``); the rest make retries, idempotency and cost accounting possible from any
    process. Unknown fields written by newer versions are kept.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    type: str = "message_batch"
    processing_status: str = BatchProcessingStatus.IN_PROGRESS.value
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    created_at: str | None = None
    expires_at: str | None = None
    ended_at: str | None = None
    cancel_initiated_at: str | None = None
    archived_at: str | None = None
    results_url: str | None = None
    local_request_mapping: dict[str, str] = Field(default_factory=dict)
    output_dir: str
    model: str
    series_name: str | None = None
    series: str = ""
    backend: str = "anthropic"
    manifest_hash: str = ""
    payload_file: str = ""
    prompt_version: str = ""
    inputs: dict[str, InputRef] = Field(default_factory=dict)
    attempt: int = 1
    max_attempts: int = 2
    parent_batch_id: str | None = None
    retry_batch_ids: list[str] = Field(default_factory=list)
    sibling_batch_ids: list[str] = Field(default_factory=list)
    reconciled: bool = False
    #: Batches the server created for this job's manifest besides this one (a timed-out create
    #: that landed late): canceled, never processed, never counted in cost.
    duplicate_batch_ids: list[str] = Field(default_factory=list)
    submitted_at: str | None = None
    updated_at: str | None = None
    estimated_cost: Cost | None = None
    failures: dict[str, FailureRecord] = Field(default_factory=dict)
    splits: dict[str, list[str]] = Field(default_factory=dict)
    results_processed_at: str | None = None
    result_counts: ResultCounts | None = None
    followup_state: Literal["none", "pending", "created", "exhausted"] = "none"
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost: Cost = Field(default_factory=lambda: Cost(batch_usd=0.0, realtime_usd=0.0))
    request_usage: dict[str, RequestUsage] = Field(default_factory=dict)
    #: Random nonce of the submission this batch was created for; every custom_id sent carries
    #: it (see :mod:`fantasy_kg.llm.ownership`). Empty in job files from before nonces.
    nonce: str = ""
    #: Section custom_id -> custom_id sent on the wire. Every other field (``inputs``,
    #: ``local_request_mapping``, ``failures``, result file names) uses the section id; a
    #: section missing here was sent under its own id.
    wire_custom_ids: dict[str, str] = Field(default_factory=dict)
    #: Whose batch this is: ``created`` (the create call returned it), ``provisional`` (found by
    #: reconciliation after an ambiguous create: nothing proves it is ours until its results
    #: are read), ``proven`` (its results carried this submission's custom_ids) or ``released``
    #: (they did not: someone else's batch; nothing of it is written or counted, and its
    #: sections went out again in ``replaced_by``).
    ownership: Literal["created", "provisional", "proven", "released"] = "created"
    released_at: str | None = None
    release_reason: str = ""
    replaced_by: str | None = None
    #: Batches seen while looking for a late create of this job's manifest (same size, inside the
    #: window) that nothing proves to be ours: left alone (never canceled, never adopted).
    unproven_candidates: list[UnprovenCandidate] = Field(default_factory=list)

    @property
    def is_released(self) -> bool:
        """Reconciliation adopted someone else's batch by mistake and let it go again."""
        return self.ownership == "released"

    def wire_id(self, custom_id: str) -> str:
        """The custom_id that section ``custom_id`` was sent under."""
        return self.wire_custom_ids.get(custom_id, custom_id)

    def sections_by_wire_id(self) -> dict[str, str]:
        """``wire custom_id -> section custom_id`` for every input of the job."""
        return {self.wire_id(cid): cid for cid in self.inputs}

    @property
    def is_ended(self) -> bool:
        """The batch has finished processing (which does not mean every request succeeded)."""
        return self.processing_status == BatchProcessingStatus.ENDED.value

    @property
    def is_settled(self) -> bool:
        """Ended and every result handled: nothing more to do for this batch itself."""
        return self.is_ended and self.results_processed_at is not None

    def update_from_batch(self, batch: Any) -> None:
        """Copy the server's view of the batch (an SDK ``MessageBatch``) into the record."""
        self.processing_status = str(batch.processing_status)
        self.request_counts = RequestCounts.model_validate(batch.request_counts.model_dump())
        self.created_at = _ts(batch.created_at) or self.created_at
        self.expires_at = _ts(batch.expires_at) or self.expires_at
        self.ended_at = _ts(batch.ended_at)
        self.cancel_initiated_at = _ts(batch.cancel_initiated_at)
        self.archived_at = _ts(batch.archived_at)
        self.results_url = batch.results_url
        self.updated_at = utcnow().isoformat()


def _ts(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


IntentState = Literal["pending", "created", "failed", "done", "released"]


class IntentRecord(BaseModel):
    """What is about to be submitted, written before the create call (invariant 1).

    Attributes:
        manifest_hash: Hash of model + every (custom_id, params) pair: same work, same hash.
        custom_ids: The requests of the manifest.
        model: Model id.
        series: Series slug.
        request_count: How many requests; reconciliation matches it against ``request_counts``.
        window_start: Wall-clock time just before the (latest) create call.
        window_end: Time the create call returned or failed; ``None`` when the process died.
        state: pending (create may or may not have happened), created (``batch_id`` known),
            failed (definitely not created), done (batch settled; a new submission is new work).
        batch_id: The batch created for this manifest.
        create_attempts: Create calls made so far.
        output_dir: Where results go.
        parent_batch_id: For follow-up batches: the batch whose failures they retry.
        attempt: Attempt number of the batch.
        late_possible: Failed create calls that may still create a batch on the server later
            (a timeout, a dropped connection: the request may be landing after the client gave
            up) and whose batch has not been found yet; while above 0, status, poll, retrieve
            and re-runs look for such a batch until ``watch_until`` and cancel it.
        watch_until: When to stop looking for a late batch.
        duplicate_batch_ids: Batches found besides ``batch_id`` for this manifest: canceled
            duplicates, never adopted or processed (only with a dedicated workspace).
        nonce: Random nonce every custom_id of this submission carries on the wire; kept when an
            interrupted or released submission is sent again, so whichever of its creates landed
            is still recognized as ours.
        provisional: ``batch_id`` was adopted by reconciliation and is not proven ours yet.
        released_batch_ids: Batches adopted by reconciliation whose results proved them not
            ours: never adopted again, never canceled.
        unproven_batch_ids: Batches of the manifest's size seen inside its window that nothing
            proves to be ours: left alone and reported.
    """

    model_config = ConfigDict(extra="allow")

    manifest_hash: str
    custom_ids: list[str]
    model: str
    series: str = ""
    request_count: int
    window_start: str
    window_end: str | None = None
    state: IntentState = "pending"
    batch_id: str | None = None
    create_attempts: int = 0
    output_dir: str = ""
    parent_batch_id: str | None = None
    attempt: int = 1
    history: list[dict[str, Any]] = Field(default_factory=list)
    late_possible: int = 0
    watch_until: str | None = None
    duplicate_batch_ids: list[str] = Field(default_factory=list)
    nonce: str = ""
    provisional: bool = False
    released_batch_ids: list[str] = Field(default_factory=list)
    unproven_batch_ids: list[str] = Field(default_factory=list)

    def claimed_batch_ids(self) -> set[str]:
        """Batches this intent has settled: current, earlier, duplicates and released ones.

        Reconciliation never adopts (and never cancels) any of them again.
        """
        ids = {str(h.get("batch_id")) for h in self.history if h.get("batch_id")}
        ids.update(self.duplicate_batch_ids)
        ids.update(self.released_batch_ids)
        if self.batch_id:
            ids.add(self.batch_id)
        return ids


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
        params_hash = hashlib.sha256(_canonical(req.body.get("params", {})).encode()).hexdigest()
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
