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
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anthropic
import dagster as dg

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
) -> tuple[int, dg.DagsterRun | None]:
    """Highest attempt among the instance's runs for ``batch_id``, and the newest such run."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags={BATCH_ID_TAG: batch_id}))
    highest = 0
    for run in runs:
        try:
            highest = max(highest, int(run.tags.get(ATTEMPT_TAG, "0")))
        except ValueError:
            continue
    return highest, (runs[0] if runs else None)


def _partition_busy(instance: dg.DagsterInstance, series: str) -> dg.DagsterRun | None:
    """A run of this series partition that is queued or running, if any."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(tags={"dagster/partition": series}, statuses=_ACTIVE_RUN_STATUSES),
        limit=1,
    )
    return runs[0] if runs else None


def build_completion_sensor(
    *,
    minimum_interval_seconds: int = 60,
    max_attempts: int = 3,
    max_polls_per_tick: int = 50,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    partition_keys: Sequence[str] | None = None,
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
            if requested and (last_run is None or not last_run.is_finished):
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
            busy = _partition_busy(context.instance, job.series)
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
