"""Message Batches on disk, shared by every process that points at one state directory.

Why it works this way: docs/architecture.md, "The local backend".
"""

import json
import logging
import os
import random
import re
import shutil
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from fantasy_kg.domain.errors import UserError
from fantasy_kg.domain.paths import atomic_write_text, confined
from fantasy_kg.local_api.engine import BatchCache
from fantasy_kg.local_api.locks import file_lock
from fantasy_kg.local_api.protocol import (
    ApiError,
    Clock,
    error_body,
    invalid_request,
    new_id,
    not_found,
    parse_rfc3339,
    rfc3339,
    utc_now,
)

log = logging.getLogger(__name__)

EXPIRY = timedelta(hours=24)
RETENTION = timedelta(days=29)
MAX_REQUESTS = 100_000
CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_BATCH_ID_RE = re.compile(r"^msgbatch_[A-Za-z0-9]{1,64}$")
_TYPE_RE = re.compile(rb'"result": \{"type": "(\w+)"')
_OFFSET = struct.Struct("<q")
_STALE_SECONDS = 300
#: Upper bound of the default queue time (see :func:`default_queue_seconds`): long enough for a
#: client to find and cancel a batch it created by accident (the exactly-once tests), short
#: enough not to slow tests that wait for results.
MAX_QUEUE_SECONDS = 2.0

Processor = Callable[[dict[str, Any], dict[str, Any], BatchCache], dict[str, Any]]
"""(batch record, request ``{custom_id, params}``, batch cache) → that request's ``result``."""


@dataclass(frozen=True)
class BatchOptions:
    """Simulation settings recorded in each batch at create time (so any process honours them).

    Attributes:
        min_processing_seconds: The batch does not end before ``created_at`` + this.
        queue_seconds: No request of the batch runs before ``created_at`` + this.
        per_request_seconds: Real-time sleep per processed request (to keep requests unprocessed
            long enough for cancel/expiry tests).
    """

    min_processing_seconds: float = 0.0
    per_request_seconds: float = 0.0
    queue_seconds: float = 0.0


def default_queue_seconds(min_processing_seconds: float, *, wall_clock: bool) -> float:
    """How long a new batch waits before its first request runs, unless a server says otherwise.

    A real batch runs for minutes, so a duplicate canceled soon after create bills nothing; an
    emulator that answers every request within milliseconds of create could never show that. So a
    batch held ``in_progress`` for a while queues for the first half of it (at most
    :data:`MAX_QUEUE_SECONDS`). Not without a minimum processing time (the production local
    backend answers at once), and not with an injected clock: time then stands still until the
    test moves it by hours, and a queue would only pile every batch's work onto that moment.
    """
    if not wall_clock:
        return 0.0
    return min(max(0.0, min_processing_seconds) / 2, MAX_QUEUE_SECONDS)


def validate_create_body(body: Any, max_requests: int = MAX_REQUESTS) -> list[dict[str, Any]]:
    """Envelope checks the real API makes synchronously on ``POST /v1/messages/batches``.

    Only the envelope: the ``params`` of each request are validated later, while processing.

    Raises:
        ApiError: 400 with pydantic-style messages (``requests.3.custom_id: ...``).
    """
    if not isinstance(body, dict):
        raise invalid_request("body: Input should be a valid dictionary")
    extra = sorted(set(body) - {"requests"})
    if extra:
        raise invalid_request(f"{extra[0]}: Extra inputs are not permitted")
    requests = body.get("requests")
    if not isinstance(requests, list):
        raise invalid_request("requests: Field required")
    if not requests:
        raise invalid_request("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > max_requests:
        raise invalid_request(
            f"requests: List should have at most {max_requests} items after validation, "
            f"not {len(requests)}"
        )
    first_use: dict[str, int] = {}
    for i, request in enumerate(requests):
        if not isinstance(request, dict):
            raise invalid_request(f"requests.{i}: Input should be a valid dictionary")
        extra = sorted(set(request) - {"custom_id", "params"})
        if extra:
            raise invalid_request(f"requests.{i}.{extra[0]}: Extra inputs are not permitted")
        cid = request.get("custom_id")
        if not isinstance(cid, str):
            raise invalid_request(f"requests.{i}.custom_id: Field required")
        if not cid:
            raise invalid_request(
                f"requests.{i}.custom_id: String should have at least 1 character"
            )
        if len(cid) > 64:
            raise invalid_request(
                f"requests.{i}.custom_id: String should have at most 64 characters"
            )
        if not CUSTOM_ID_RE.match(cid):
            raise invalid_request(
                f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )
        if cid in first_use:
            raise invalid_request(
                f"requests.{i}.custom_id: duplicate custom_id {cid!r} (also requests."
                f"{first_use[cid]}.custom_id); custom_id must be unique within a batch"
            )
        first_use[cid] = i
        if not isinstance(request.get("params"), dict):
            raise invalid_request(f"requests.{i}.params: Field required")
    return requests


class BatchStore:
    """All batches under one state directory.

    Args:
        root: The state directory (created if missing).
        clock: Current time; inject one to test 24-hour expiry and 29-day archiving.
    """

    def __init__(self, root: Path, clock: Clock = utc_now) -> None:
        self.root = root
        self.clock = clock
        self.batches_dir = root / "batches"
        self.active_dir = root / "active"
        self.index_file = root / "index.jsonl"
        self.batches_dir.mkdir(parents=True, exist_ok=True)
        self.active_dir.mkdir(parents=True, exist_ok=True)
        self._cursors: dict[str, tuple[int, int]] = {}
        self._cursor_lock = threading.Lock()

    # ---- paths and records ------------------------------------------------------------------

    def batch_dir(self, batch_id: str) -> Path:
        """Folder of a batch; ids that cannot be ours are a 404 (they come from URLs)."""
        if not _BATCH_ID_RE.match(batch_id):
            raise not_found(f"message batch {batch_id!r} not found")
        try:
            return confined(self.batches_dir, batch_id)
        except UserError:
            raise not_found(f"message batch {batch_id!r} not found") from None

    def load(self, batch_id: str) -> dict[str, Any]:
        """The stored record of a batch.

        Raises:
            ApiError: 404 when no such batch exists (or it was deleted).
        """
        path = self.batch_dir(batch_id) / "batch.json"
        try:
            record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            raise not_found(f"message batch {batch_id!r} not found") from None
        return record

    def _save(self, record: dict[str, Any]) -> None:
        atomic_write_text(self.batch_dir(record["id"]) / "batch.json", json.dumps(record, indent=1))

    def public(self, record: dict[str, Any], base_url: str) -> dict[str, Any]:
        """The API's MessageBatch object for a record, as seen now from ``base_url``."""
        now = self.clock()
        created = parse_rfc3339(record["created_at"])
        ended = record["processing_status"] == "ended"
        counts = (
            dict(record["request_counts"])
            if ended
            else {
                "processing": record["request_count"],
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            }
        )
        archived = created + RETENTION
        return {
            "id": record["id"],
            "type": "message_batch",
            "processing_status": record["processing_status"],
            "request_counts": counts,
            "ended_at": record.get("ended_at"),
            "created_at": record["created_at"],
            "expires_at": record["expires_at"],
            "cancel_initiated_at": record.get("cancel_initiated_at"),
            "archived_at": rfc3339(archived) if now >= archived else None,
            "results_url": f"{base_url}/v1/messages/batches/{record['id']}/results"
            if ended
            else None,
        }

    # ---- create -------------------------------------------------------------------------------

    def create(
        self,
        requests: list[dict[str, Any]],
        *,
        api_version: str,
        betas: tuple[str, ...] = (),
        options: BatchOptions | None = None,
        overrides: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Persist a new, validated batch and mark it active; return its record."""
        opts = options or BatchOptions()
        batch_id = new_id("msgbatch_")
        now = self.clock()
        tmp = self.batches_dir / f".tmp-{batch_id}"
        tmp.mkdir(parents=True)
        try:
            offsets = [0]
            with open(tmp / "requests.jsonl", "wb") as fh:
                for request in requests:
                    fh.write(
                        json.dumps(
                            {"custom_id": request["custom_id"], "params": request["params"]},
                            separators=(",", ":"),
                        ).encode()
                        + b"\n"
                    )
                    offsets.append(fh.tell())
                fh.flush()
                os.fsync(fh.fileno())
            (tmp / "requests.idx").write_bytes(b"".join(_OFFSET.pack(o) for o in offsets))
            record: dict[str, Any] = {
                "id": batch_id,
                "type": "message_batch",
                "backend": "local",
                "seq": 0,
                "processing_status": "in_progress",
                "request_count": len(requests),
                "request_counts": None,
                "created_at": rfc3339(now),
                "expires_at": rfc3339(now + EXPIRY),
                "ended_at": None,
                "cancel_initiated_at": None,
                "api_version": api_version,
                "betas": list(betas),
                "not_before": rfc3339(now + timedelta(seconds=opts.min_processing_seconds)),
                "start_after": rfc3339(now + timedelta(seconds=opts.queue_seconds)),
                "per_request_seconds": opts.per_request_seconds,
                "overrides": overrides or {},
            }
            with file_lock(self.root / "store.lock"):
                record["seq"] = self._next_seq()
                atomic_write_text(tmp / "batch.json", json.dumps(record, indent=1))
                with open(self.index_file, "a", encoding="utf-8") as fh:
                    fh.write(f"{record['seq']} {batch_id}\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.rename(tmp, self.batches_dir / batch_id)
                (self.active_dir / batch_id).touch()
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("local batch %s created with %d requests", batch_id, len(requests))
        return record

    def _next_seq(self) -> int:
        if not self.index_file.exists():
            return 1
        with open(self.index_file, "rb") as fh:
            return sum(1 for _ in fh) + 1

    # ---- list ---------------------------------------------------------------------------------

    def _ordered_ids(self) -> list[str]:
        """Every batch id ever created here, newest first (deleted ones included)."""
        if not self.index_file.exists():
            return []
        pairs: list[tuple[int, str]] = []
        for line in self.index_file.read_text(encoding="utf-8").splitlines():
            seq, _, batch_id = line.partition(" ")
            if seq.isdigit() and batch_id:
                pairs.append((int(seq), batch_id))
        pairs.sort(reverse=True)
        return [batch_id for _, batch_id in pairs]

    def list_page(
        self, *, after_id: str | None, before_id: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of records, newest first, with the API's cursor semantics.

        ``after_id`` returns the batches just older than that one, ``before_id`` those just newer.

        Raises:
            ApiError: 400 for an unknown cursor id.
        """
        ordered = self._ordered_ids()
        position = {batch_id: i for i, batch_id in enumerate(ordered)}
        if after_id:
            if after_id not in position:
                raise invalid_request(f"after_id: unknown message batch id {after_id!r}")
            candidates = ordered[position[after_id] + 1 :]
            forward = True
        elif before_id:
            if before_id not in position:
                raise invalid_request(f"before_id: unknown message batch id {before_id!r}")
            candidates = ordered[: position[before_id]]
            forward = False
        else:
            candidates = ordered
            forward = True
        records: list[dict[str, Any]] = []
        walk = candidates if forward else list(reversed(candidates))
        has_more = False
        for batch_id in walk:
            try:
                record = self.load(batch_id)
            except ApiError:
                continue  # deleted
            if len(records) == limit:
                has_more = True
                break
            records.append(record)
        if not forward:
            records.reverse()
        return records, has_more

    # ---- cancel / delete --------------------------------------------------------------------

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """Start cancellation: ``in_progress`` → ``canceling`` (a worker then ends the batch).

        Raises:
            ApiError: 404 for an unknown batch; 400 when the batch has already ended (an
                assumption: the real API does not document this case).
        """
        folder = self.batch_dir(batch_id)
        if not folder.exists():
            raise not_found(f"message batch {batch_id!r} not found")
        with file_lock(folder / "state.lock"):
            record = self.load(batch_id)
            status = record["processing_status"]
            if status == "ended":
                raise invalid_request(
                    f"message batch {batch_id} has already ended; only in_progress batches "
                    "can be canceled"
                )
            if status == "in_progress":
                record["processing_status"] = "canceling"
                record["cancel_initiated_at"] = rfc3339(self.clock())
                self._save(record)
        return record

    def delete(self, batch_id: str) -> None:
        """Delete an ended batch and everything stored for it.

        Raises:
            ApiError: 404 for an unknown batch; 400 while it is still processing.
        """
        folder = self.batch_dir(batch_id)
        if not folder.exists():
            raise not_found(f"message batch {batch_id!r} not found")
        with file_lock(folder / "state.lock"):
            record = self.load(batch_id)
            if record["processing_status"] != "ended":
                raise invalid_request(
                    f"message batch {batch_id} is {record['processing_status']}: Message Batches "
                    "can only be deleted once they've finished processing; cancel it first"
                )
            trash = self.batches_dir / f".deleted-{batch_id}-{os.getpid()}"
            os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
        (self.active_dir / batch_id).unlink(missing_ok=True)
        with self._cursor_lock:
            self._cursors.pop(batch_id, None)

    # ---- results ------------------------------------------------------------------------------

    def result_lines(self, batch_id: str) -> list[bytes]:
        """The results JSONL lines of an ended batch, in a deterministic shuffled order.

        Raises:
            ApiError: 404 unknown batch or archived results; 400 before the batch has ended.
        """
        record = self.load(batch_id)
        if record["processing_status"] != "ended":
            raise invalid_request(
                f"message batch {batch_id} is {record['processing_status']}: results are "
                "available once processing_status is 'ended'"
            )
        archived = parse_rfc3339(record["created_at"]) + RETENTION
        if self.clock() >= archived:
            raise not_found(
                f"results of message batch {batch_id} are no longer available: batch results "
                f"are kept for 29 days after creation (archived at {rfc3339(archived)}); "
                "resubmit the requests to get them again"
            )
        data = (self.batch_dir(batch_id) / "results.jsonl").read_bytes()
        lines = [line + b"\n" for line in data.split(b"\n") if line.strip()]
        # Results are not in request order on the real API either; clients must join on custom_id.
        random.Random(batch_id).shuffle(lines)
        return lines

    # ---- processing ---------------------------------------------------------------------------

    def active_ids(self) -> list[str]:
        """Batches whose marker says they may still need work (oldest marker first)."""
        try:
            entries = sorted(os.scandir(self.active_dir), key=lambda e: e.stat().st_mtime)
        except FileNotFoundError:
            return []
        return [e.name for e in entries if _BATCH_ID_RE.match(e.name)]

    def rescan(self) -> None:
        """Re-mark unfinished batches whose marker was lost; sweep leftovers of killed writers."""
        for entry in os.scandir(self.batches_dir):
            if entry.name.startswith((".tmp-", ".deleted-")):
                # Left by a process killed mid-create or mid-delete; never visible to clients.
                if time.time() - entry.stat().st_mtime > _STALE_SECONDS:
                    shutil.rmtree(entry.path, ignore_errors=True)
                continue
            if not _BATCH_ID_RE.match(entry.name):
                continue
            try:
                record = self.load(entry.name)
            except (ApiError, json.JSONDecodeError):
                continue
            if record["processing_status"] != "ended":
                (self.active_dir / entry.name).touch()

    def advance(
        self,
        batch_id: str,
        processor: Processor,
        *,
        budget_seconds: float,
        process_requests: bool = True,
        should_stop: Callable[[], bool] | None = None,
    ) -> bool:
        """Move a batch forward if no one else is: process requests, then end it when due.

        Args:
            batch_id: The batch.
            processor: Computes one request's result.
            budget_seconds: Stop processing requests after about this long.
            process_requests: False to only end batches (cancel, expiry, done) without answering.
            should_stop: Checked after every request; True hands the batch back at once (server
                shutdown), leaving the rest for the next claimant.

        Returns:
            True when something changed (requests processed or the batch ended).
        """
        try:
            folder = self.batch_dir(batch_id)
        except ApiError:
            return False
        if not folder.is_dir():
            (self.active_dir / batch_id).unlink(missing_ok=True)
            return False
        with file_lock(folder / "work.lock", blocking=False) as claimed:
            if not claimed:
                return False
            try:
                return self._advance_claimed(
                    batch_id, folder, processor, budget_seconds, process_requests, should_stop
                )
            except (FileNotFoundError, ApiError):
                return False  # deleted under our feet

    def _advance_claimed(
        self,
        batch_id: str,
        folder: Path,
        processor: Processor,
        budget_seconds: float,
        process_requests: bool,
        should_stop: Callable[[], bool] | None,
    ) -> bool:
        record = self.load(batch_id)
        if record["processing_status"] == "ended":
            (self.active_dir / batch_id).unlink(missing_ok=True)
            return False
        if record["processing_status"] == "canceling":
            self._finalize(batch_id, folder, "canceled")
            return True
        if self.clock() >= parse_rfc3339(record["expires_at"]):
            self._finalize(batch_id, folder, "expired")
            return True
        total = int(record["request_count"])
        cursor = self._cursor(batch_id, folder)
        progressed = False
        queued = self.clock() < parse_rfc3339(record.get("start_after") or record["created_at"])
        if cursor < total and process_requests and not queued:
            cursor, progressed, stop = self._process(
                record, folder, processor, cursor, budget_seconds, should_stop
            )
            if stop:
                self._finalize(batch_id, folder, stop)
                return True
        if cursor >= total and self.clock() >= parse_rfc3339(record["not_before"]):
            self._finalize(batch_id, folder, None)
            return True
        return progressed

    def _cursor(self, batch_id: str, folder: Path) -> int:
        """Complete result lines so far; truncates a partial last line left by a killed writer."""
        path = folder / "results.jsonl"
        size = path.stat().st_size if path.exists() else 0
        with self._cursor_lock:
            cached = self._cursors.get(batch_id)
        if cached is not None and cached[0] == size:
            return cached[1]
        data = path.read_bytes() if size else b""
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):
            with open(path, "r+b") as fh:
                fh.truncate(len(complete))
            log.warning(
                "batch %s: dropped a partial result line left by a killed process", batch_id
            )
        count = complete.count(b"\n")
        with self._cursor_lock:
            self._cursors[batch_id] = (len(complete), count)
        return count

    def _process(
        self,
        record: dict[str, Any],
        folder: Path,
        processor: Processor,
        cursor: int,
        budget_seconds: float,
        should_stop: Callable[[], bool] | None,
    ) -> tuple[int, bool, str | None]:
        """Answer requests from ``cursor`` on; returns (cursor, progressed, stop reason)."""
        batch_id = record["id"]
        deadline = time.monotonic() + budget_seconds
        next_status_check = time.monotonic() + 0.2
        expires_at = parse_rfc3339(record["expires_at"])
        delay = float(record.get("per_request_seconds") or 0.0)
        keys_file = folder / "cache_keys.txt"
        seen = set(keys_file.read_text(encoding="utf-8").split()) if keys_file.exists() else set()
        cache = BatchCache(seen)
        progressed = False
        stop: str | None = None
        with open(folder / "requests.idx", "rb") as idx:
            idx.seek(cursor * _OFFSET.size)
            (offset,) = _OFFSET.unpack(idx.read(_OFFSET.size))
        with (
            open(folder / "requests.jsonl", "rb") as requests,
            open(folder / "results.jsonl", "ab") as results,
        ):
            requests.seek(offset)
            for raw in requests:
                if delay:
                    time.sleep(delay)
                request = json.loads(raw)
                before = set(cache.seen)
                try:
                    result = processor(record, request, cache)
                except Exception:  # a bug must not stall the batch forever
                    log.exception(
                        "batch %s: processing %s failed", batch_id, request.get("custom_id")
                    )
                    result = {
                        "type": "errored",
                        "error": error_body("api_error", "Internal server error", None),
                    }
                new_keys = cache.seen - before
                if new_keys:
                    with open(keys_file, "a", encoding="utf-8") as fh:
                        fh.write("".join(k + "\n" for k in new_keys))
                line = json.dumps({"custom_id": request["custom_id"], "result": result})
                results.write(line.encode() + b"\n")
                results.flush()
                cursor += 1
                progressed = True
                with self._cursor_lock:
                    self._cursors[batch_id] = (results.tell(), cursor)
                now_mono = time.monotonic()
                if self.clock() >= expires_at:
                    stop = "expired"
                    break
                if now_mono >= next_status_check:
                    next_status_check = now_mono + 0.2
                    if self.load(batch_id)["processing_status"] == "canceling":
                        stop = "canceled"
                        break
                if now_mono >= deadline or (should_stop is not None and should_stop()):
                    break
            os.fsync(results.fileno())
        return cursor, progressed, stop

    def _finalize(self, batch_id: str, folder: Path, fill: str | None) -> None:
        """End a batch (caller holds its work lock): fill unprocessed requests, set counts."""
        cursor = self._cursor(batch_id, folder)
        record = self.load(batch_id)
        total = int(record["request_count"])
        results_path = folder / "results.jsonl"
        if cursor < total:
            kind = fill or "expired"
            with open(folder / "requests.idx", "rb") as idx:
                idx.seek(cursor * _OFFSET.size)
                (offset,) = _OFFSET.unpack(idx.read(_OFFSET.size))
            with (
                open(folder / "requests.jsonl", "rb") as requests,
                open(results_path, "ab") as results,
            ):
                requests.seek(offset)
                for raw in requests:
                    cid = json.loads(raw)["custom_id"]
                    line = json.dumps({"custom_id": cid, "result": {"type": kind}})
                    results.write(line.encode() + b"\n")
                results.flush()
                os.fsync(results.fileno())
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        data = results_path.read_bytes() if results_path.exists() else b""
        for row in data.split(b"\n"):
            if not row.strip():
                continue
            match = _TYPE_RE.search(row, 0, 200)
            kind_name = str(match.group(1).decode() if match else json.loads(row)["result"]["type"])
            counts[kind_name] = counts.get(kind_name, 0) + 1
        now = self.clock()
        with file_lock(folder / "state.lock"):
            record = self.load(batch_id)
            record["processing_status"] = "ended"
            expires_at = parse_rfc3339(record["expires_at"])
            record["ended_at"] = rfc3339(min(now, expires_at) if fill == "expired" else now)
            record["request_counts"] = counts
            self._save(record)
        (self.active_dir / batch_id).unlink(missing_ok=True)
        with self._cursor_lock:
            self._cursors.pop(batch_id, None)
        log.info("local batch %s ended: %s", batch_id, counts)
