"""The completion sensor: when a Message Batch ends, materialize what depends on it.

A batch can run for up to 24 hours, so ``extraction_batch`` submits and returns, and this sensor
watches. It reads the batch **job files** (``<jobs_dir>/<batch_id>.json``), not DuckDB: DuckDB
allows one read-write process per file and the sensor must never contend with a run for it. For
each batch that still owes results it asks the backend for the batch's status (which also updates
the job file, so ``fantasy-kg extract-batch --mode status`` sees the same), and once the batch has
ended it requests a run of ``extraction_results``, ``knowledge_graph`` and ``cost_summary`` for
that series partition.

Requesting exactly once, and recovering from a failed run:

* The cursor remembers which attempt was requested for each batch, so a tick never requests the
  same batch again while its run is queued or running.
* Dagster drops any ``RunRequest`` whose ``run_key`` it has seen before, forever. The run key is
  therefore ``<batch_id>:<attempt>``: when the run for attempt N has finished but the batch still
  owes results (the run failed, was canceled, or succeeded without settling the batch), the next
  tick requests attempt N+1, up to ``max_attempts``. Attempts are counted from the instance's runs
  (tag ``fantasy_kg/batch_id``) as well as from the cursor, so resetting the cursor cannot reuse
  a key. After the last attempt the sensor stops and says so; re-run by hand with
  ``dagster asset materialize -m fantasy_kg.definitions --select 'extraction_results*'
  --partition <series>``.
* A batch whose partition already has a run in progress (for example the run that submitted it
  and is waiting for it inline with the local backend) is left to that run.
* A run killed by SIGKILL or the OOM killer never reports its end: it stays STARTED in the
  instance, and nothing marks it failed (run monitoring cannot check the worker of a
  ``dagster asset materialize`` run, nor of a run of the default launcher). Trusting its status
  would leave the partition "busy" forever, so a queued-to-started run only counts while it is
  alive. On a single-host instance (SQLite or in-memory run storage: every run's process is on
  this machine) that means one of the processes its events came from (run worker, CLI process,
  step workers) still exists; elsewhere, or while a run has no such event yet, it means its last
  event is younger than ``stale_run_seconds``. A QUEUED run always counts: it has no process yet
  and the run queue will start it.
"""

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anthropic
import dagster as dg
import psutil

from fantasy_kg.defs.keys import ATTEMPT_TAG, BATCH_ID_TAG, DOWNSTREAM_OF_BATCH, EXTRACTION_BATCH
from fantasy_kg.defs.resources import AnthropicBatchResource
from fantasy_kg.domain.errors import UserError
from fantasy_kg.llm.jobs import JobRecord
from fantasy_kg.pipeline.extraction import batch_status, batch_status_async

SENSOR_NAME = "extraction_batch_ended_sensor"

_ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]

#: Seconds without any event after which a run whose processes cannot be checked counts as dead.
DEFAULT_STALE_RUN_SECONDS = 1800.0

#: Events whose ``pid`` is a process executing the run: the run worker or the CLI process that
#: runs it in-process (RUN_START) and step processes (STEP_WORKER_STARTED, STEP_START).
_PID_EVENTS = {
    dg.DagsterEventType.RUN_START,
    dg.DagsterEventType.STEP_WORKER_STARTED,
    dg.DagsterEventType.STEP_START,
}
#: Run storages that only processes on this machine write to, so their pids are ours to check.
_SINGLE_HOST_STORAGES = ("SqliteRunStorage", "InMemoryRunStorage")


@dataclass
class _Cursor:
    """Sensor state: attempt requested per batch, and the last status seen (to observe changes)."""

    requested: dict[str, int] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> "_Cursor":
        if not raw:
            return cls()
        data: dict[str, Any] = json.loads(raw)
        return cls(requested=dict(data.get("requested", {})), seen=dict(data.get("seen", {})))

    def dump(self) -> str:
        return json.dumps({"requested": self.requested, "seen": self.seen}, sort_keys=True)


def _progress(job: JobRecord) -> str:
    c = job.request_counts
    return f"{c.total - c.processing}/{c.total}"


def _poll(res: AnthropicBatchResource, job: JobRecord) -> JobRecord:
    """The server's current view of a batch (saved into its job file)."""
    if job.backend == res.backend_name:
        return res.run(lambda p: batch_status_async(job.id, res.jobs_path, provider=p))
    # A batch submitted through the other backend (the key was added or removed since): the
    # pipeline builds a client for the backend recorded in its job file.
    return batch_status(job.id, res.jobs_path)


def _attempts_so_far(
    instance: dg.DagsterInstance, batch_id: str
) -> tuple[int, dg.RunRecord | None]:
    """Highest attempt among the instance's runs for ``batch_id``, and the newest such run."""
    records = instance.get_run_records(filters=dg.RunsFilter(tags={BATCH_ID_TAG: batch_id}))
    highest = 0
    for record in records:
        try:
            highest = max(highest, int(record.dagster_run.tags.get(ATTEMPT_TAG, "0")))
        except ValueError:
            continue
    return highest, (records[0] if records else None)


def _pid_alive(pid: int, since: float) -> bool:
    """Whether process ``pid`` exists here and is the one that wrote an event at ``since``.

    A process created after the event has only inherited the number of a dead one.
    """
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return bool(proc.create_time() <= since + 1.0)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # exists, but cannot be inspected: do not call it dead


def _run_alive(instance: dg.DagsterInstance, record: dg.RunRecord, stale_after: float) -> bool:
    """Whether a run that the instance shows as queued-to-started is really still going.

    A SIGKILLed or OOM-killed run stays STARTED forever (see the module docstring): on a
    single-host instance its processes are checked, otherwise its last event must be recent.
    """
    run = record.dagster_run
    if run.status == dg.DagsterRunStatus.QUEUED:
        return True
    if type(instance.run_storage).__name__ in _SINGLE_HOST_STORAGES:
        first_seen: dict[int, float] = {}
        for entry in instance.all_logs(run.run_id, of_type=_PID_EVENTS):
            pid = entry.dagster_event.pid if entry.dagster_event is not None else None
            if pid is not None:
                first_seen.setdefault(pid, entry.timestamp)
        if first_seen:
            return any(_pid_alive(pid, ts) for pid, ts in first_seen.items())
    newest = instance.get_records_for_run(run.run_id, ascending=False, limit=1).records
    last = newest[0].event_log_entry.timestamp if newest else record.update_timestamp.timestamp()
    return time.time() - last < stale_after


def _partition_busy(
    instance: dg.DagsterInstance, series: str, stale_after: float
) -> dg.DagsterRun | None:
    """A run of this series partition that is queued or running (and alive), if any."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={"dagster/partition": series}, statuses=_ACTIVE_RUN_STATUSES),
        limit=20,
    )
    for record in records:
        if _run_alive(instance, record, stale_after):
            return record.dagster_run
    return None


def build_completion_sensor(
    *,
    minimum_interval_seconds: int = 60,
    max_attempts: int = 3,
    max_polls_per_tick: int = 50,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    partition_keys: Sequence[str] | None = None,
    stale_run_seconds: float = DEFAULT_STALE_RUN_SECONDS,
) -> dg.SensorDefinition:
    """The sensor that requests the downstream assets of a batch once the batch has ended.

    Args:
        minimum_interval_seconds: Seconds between ticks (a batch takes minutes to 24 hours).
        max_attempts: Results runs requested per batch before the sensor gives up on it.
        max_polls_per_tick: Batches polled per tick, oldest first, so a tick stays well inside
            Dagster's 60-second sensor timeout.
        default_status: RUNNING so batches are picked up without a visit to the UI.
        partition_keys: Series the code location knows; job files of other series are ignored
            (a folder that was removed), since a run for an unknown partition cannot start.
        stale_run_seconds: A queued-to-started run whose processes cannot be checked (run
            storage shared between machines, or no process recorded yet) stops counting as
            in progress after this long without an event (see the module docstring).
    """
    known = set(partition_keys) if partition_keys is not None else None

    @dg.sensor(
        name=SENSOR_NAME,
        target=list(DOWNSTREAM_OF_BATCH),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description=(
            "Polls the Message Batches that still owe results (from the job files) and, when one "
            "ends, requests extraction_results → knowledge_graph → cost_summary for its series."
        ),
    )
    def extraction_batch_ended_sensor(
        context: dg.SensorEvaluationContext, anthropic_batches: AnthropicBatchResource
    ) -> dg.SensorResult:
        res = anthropic_batches
        cursor = _Cursor.parse(context.cursor)
        owed = [
            j
            for j in res.job_store().all_jobs()
            if (not j.is_settled or j.followup_state == "pending")
            and (known is None or j.series in known)
        ]
        owed_ids = {j.id for j in owed}
        cursor.requested = {k: v for k, v in cursor.requested.items() if k in owed_ids}
        cursor.seen = {k: v for k, v in cursor.seen.items() if k in owed_ids}

        in_progress: list[JobRecord] = []
        waiting: list[str] = []
        requests: list[dg.RunRequest] = []
        events: list[dg.AssetObservation] = []
        errors: list[str] = []
        for polls, job in enumerate(owed):
            if not job.is_ended and polls < max_polls_per_tick:
                try:
                    job = _poll(res, job)
                except (anthropic.APIError, UserError, OSError) as exc:
                    # One batch's API trouble must not stop the tick for the others; its job file
                    # is unchanged, so the next tick simply asks again.
                    errors.append(f"{job.series} {job.id}: {type(exc).__name__}")
                    context.log.warning(f"could not poll batch {job.id}: {exc}")
            state = f"{job.processing_status}:{_progress(job)}"
            if cursor.seen.get(job.id) != state:
                cursor.seen[job.id] = state
                c = job.request_counts
                events.append(
                    dg.AssetObservation(
                        asset_key=EXTRACTION_BATCH,
                        partition=job.series,
                        metadata={
                            "batch_id": job.id,
                            "processing_status": job.processing_status,
                            "processing": c.processing,
                            "succeeded": c.succeeded,
                            "errored": c.errored,
                            "canceled": c.canceled,
                            "expired": c.expired,
                        },
                    )
                )
            if not job.is_ended:
                in_progress.append(job)
                continue
            highest, last_run = _attempts_so_far(context.instance, job.id)
            requested = max(highest, cursor.requested.get(job.id, 0))
            running = last_run is not None and not last_run.dagster_run.is_finished
            if running and last_run is not None:
                # A results run killed without a trace counts as finished: it settled nothing.
                running = _run_alive(context.instance, last_run, stale_run_seconds)
            if requested and (last_run is None or running):
                # Requested and not yet launched, or its run is still going: never ask twice.
                waiting.append(f"{job.series} {job.id} (results run attempt {requested})")
                continue
            if requested >= max_attempts:
                waiting.append(
                    f"{job.series} {job.id}: {requested} results runs did not settle it; run "
                    f"`dagster asset materialize -m fantasy_kg.definitions --select "
                    f"'extraction_results*' --partition {job.series}`"
                )
                continue
            busy = _partition_busy(context.instance, job.series, stale_run_seconds)
            if busy is not None:
                waiting.append(f"{job.series} {job.id} (run {busy.run_id[:8]} in progress)")
                continue
            attempt = requested + 1
            cursor.requested[job.id] = attempt
            requests.append(
                dg.RunRequest(
                    run_key=f"{job.id}:{attempt}",
                    partition_key=job.series,
                    asset_selection=list(DOWNSTREAM_OF_BATCH),
                    tags={BATCH_ID_TAG: job.id, ATTEMPT_TAG: str(attempt)},
                )
            )
            context.log.info(
                f"batch {job.id} of {job.series} ended; requesting results run attempt {attempt}"
            )

        skip: str | None = None
        if not requests:
            parts: list[str] = []
            if in_progress:
                listed = ", ".join(f"{j.series} {j.id} {_progress(j)}" for j in in_progress)
                parts.append(f"{len(in_progress)} batch(es) in progress: {listed}")
            if waiting:
                parts.append(f"{len(waiting)} ended, waiting on: {'; '.join(waiting)}")
            if errors:
                parts.append(f"could not poll {len(errors)}: {'; '.join(errors)}")
            skip = (
                "; ".join(parts)
                if parts
                else f"no batch owes results (job files in {res.jobs_path}); materialize "
                "extraction_batch to submit one"
            )
        return dg.SensorResult(
            run_requests=requests,
            skip_reason=skip,
            cursor=cursor.dump(),
            asset_events=events,
        )

    return extraction_batch_ended_sensor
