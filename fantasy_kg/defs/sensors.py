"""The completion sensor: when a Message Batch ends, materialize what depends on it.

Why it works this way: docs/architecture.md, "Dagster definitions".
"""

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anthropic
import dagster as dg
import psutil

from fantasy_kg.defs.keys import (
    ATTEMPT_TAG,
    BATCH_ID_TAG,
    DOWNSTREAM_OF_BATCH,
    EXTRACTION_BATCH,
    STUCK_CHECK,
)
from fantasy_kg.defs.outcomes import stuck_reason
from fantasy_kg.defs.resources import AnthropicBatchResource, ProviderSession
from fantasy_kg.domain.errors import UserError
from fantasy_kg.llm.jobs import JobRecord, JobStore
from fantasy_kg.llm.polling import needs_own_poll, refresh_by_listing
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


#: A batch whose status could not be fetched this many ticks in a row counts as stuck.
FAILING_TICKS_STUCK = 3


@dataclass
class _Cursor:
    """Sensor state, per batch that still owes results (forgotten once it settles).

    Attributes:
        requested: Results-run attempt requested.
        seen: Last status seen (observations are emitted on change only).
        polled: When its status was last asked for (epoch seconds): the round robin's order.
        failing: Ticks in a row its status could not be fetched.
        stuck: Per series, the stuck report last sent to the asset check ("" = passed).
    """

    requested: dict[str, int] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)
    polled: dict[str, float] = field(default_factory=dict)
    failing: dict[str, int] = field(default_factory=dict)
    stuck: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> "_Cursor":
        if not raw:
            return cls()
        data: dict[str, Any] = json.loads(raw)
        return cls(
            requested=dict(data.get("requested", {})),
            seen=dict(data.get("seen", {})),
            polled=dict(data.get("polled", {})),
            failing=dict(data.get("failing", {})),
            stuck=dict(data.get("stuck", {})),
        )

    def keep_only(self, batch_ids: set[str]) -> None:
        """Forget batches that no longer owe anything (the cursor stays small)."""
        for name in ("requested", "seen", "polled", "failing"):
            current: dict[str, Any] = getattr(self, name)
            setattr(self, name, {k: v for k, v in current.items() if k in batch_ids})

    def dump(self) -> str:
        return json.dumps(
            {
                "requested": self.requested,
                "seen": self.seen,
                "polled": self.polled,
                "failing": self.failing,
                "stuck": self.stuck,
            },
            sort_keys=True,
        )


def _progress(job: JobRecord) -> str:
    c = job.request_counts
    return f"{c.total - c.processing}/{c.total}"


def _poll(res: AnthropicBatchResource, session: ProviderSession, job: JobRecord) -> JobRecord:
    """The server's current view of a batch (saved into its job file)."""
    if job.backend == res.backend_name:
        return session.run(lambda p: batch_status_async(job.id, res.jobs_path, provider=p))
    # A batch submitted through the other backend (the key was added or removed since): the
    # pipeline builds a client for the backend recorded in its job file.
    return batch_status(job.id, res.jobs_path)


@dataclass
class _PollReport:
    """The API calls of one tick."""

    list_calls: int = 0
    retrieves: int = 0
    refreshed: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return self.list_calls + self.retrieves


def _refresh_statuses(
    context: dg.SensorEvaluationContext,
    res: AnthropicBatchResource,
    store: JobStore,
    pending: list[JobRecord],
    cursor: _Cursor,
    *,
    max_calls: int,
    max_list_pages: int,
) -> tuple[dict[str, JobRecord], _PollReport]:
    """Bring the job files of in-progress batches up to date within ``max_calls`` API calls."""
    report = _PollReport()
    fresh: dict[str, JobRecord] = {}
    if not pending:
        return fresh, report
    now = time.time()
    with res.session() as session:
        listable = [
            j for j in pending if j.backend == res.backend_name and not needs_own_poll(store, j)
        ]
        pages = min(max_list_pages, max_calls)
        if listable and pages > 0:
            try:
                listing = session.run(
                    lambda p: refresh_by_listing(p.client, store, listable, max_pages=pages)
                )
                report.list_calls = listing.pages
                fresh.update(listing.refreshed)
            except (anthropic.APIError, UserError, OSError) as exc:
                report.list_calls = 1
                context.log.warning(f"could not list batches ({exc}); polling one by one")
        # The rest one by one: never polled first, then the one polled longest ago.
        rest = [j for j in pending if j.id not in fresh]
        rest.sort(key=lambda j: (j.id in cursor.polled, cursor.polled.get(j.id, 0.0)))
        for job in rest:
            if report.calls >= max_calls:
                break
            report.retrieves += 1
            cursor.polled[job.id] = now
            try:
                fresh[job.id] = _poll(res, session, job)
                cursor.failing.pop(job.id, None)
            except (anthropic.APIError, UserError, OSError) as exc:
                # One batch's API trouble must not stop the tick for the others; its job file
                # is unchanged, so a later tick simply asks again.
                cursor.failing[job.id] = cursor.failing.get(job.id, 0) + 1
                report.errors.append(f"{job.series} {job.id}: {type(exc).__name__}")
                context.log.warning(f"could not poll batch {job.id}: {exc}")
    for batch_id in fresh:
        cursor.polled[batch_id] = now
        cursor.failing.pop(batch_id, None)
    report.refreshed = set(fresh)
    return fresh, report


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

    A SIGKILLed or OOM-killed run can stay STARTED forever (see the module docstring): on a
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
    max_list_pages: int = 5,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    partition_keys: Sequence[str] | None = None,
    stale_run_seconds: float = DEFAULT_STALE_RUN_SECONDS,
) -> dg.SensorDefinition:
    """The sensor that requests the downstream assets of a batch once the batch has ended.

    Args:
        minimum_interval_seconds: Seconds between ticks (a batch takes minutes to 24 hours).
        max_attempts: Results runs requested per batch before the sensor gives up on it.
        max_polls_per_tick: API calls (list pages and retrieves) per tick, so a tick stays well
            inside Dagster's 60-second sensor timeout; batches not reached wait for the next
            tick, the longest-waiting first.
        max_list_pages: ``batches.list`` pages (100 batches each, newest first) walked per tick
            before falling back to one retrieve per batch; 0 turns listing off.
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
        store = res.job_store()
        cursor = _Cursor.parse(context.cursor)
        # Settled jobs are not even parsed (the job index): tick time does not grow with them.
        owed = [j for j in store.owed_jobs() if known is None or j.series in known]
        cursor.keep_only({j.id for j in owed})

        fresh, report = _refresh_statuses(
            context,
            res,
            store,
            [j for j in owed if not j.is_ended],
            cursor,
            max_calls=max_polls_per_tick,
            max_list_pages=max_list_pages,
        )
        if report.calls:
            context.log.info(
                f"{len(report.refreshed)} batch status(es) refreshed with one client: "
                f"{report.list_calls} list call(s), {report.retrieves} retrieve(s); "
                f"{len(owed)} batch(es) owe results"
            )

        in_progress: list[JobRecord] = []
        waiting: list[str] = []
        requests: list[dg.RunRequest] = []
        events: list[dg.AssetObservation | dg.AssetCheckEvaluation] = []
        errors = report.errors
        stuck: dict[str, list[str]] = {}
        now = datetime.now(UTC)
        for job in owed:
            job = fresh.get(job.id, job)
            reason = stuck_reason(job, now)
            if cursor.failing.get(job.id, 0) >= FAILING_TICKS_STUCK:
                reason = f"status could not be fetched in {cursor.failing[job.id]} ticks in a row"
            if reason:
                stuck.setdefault(job.series, []).append(f"{job.id}: {reason}")
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
                stuck.setdefault(job.series, []).append(
                    f"{job.id}: {requested} results runs did not settle it"
                )
                waiting.append(
                    f"{job.series} {job.id}: {requested} results runs did not settle it; run "
                    f"`dg launch --assets 'extraction_results*' --partition {job.series}`"
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

        events.extend(_stuck_events(context, cursor, stuck, {j.series for j in owed}))
        skip: str | None = None
        if not requests:
            parts: list[str] = []
            if in_progress:
                listed = _some(f"{j.series} {j.id} {_progress(j)}" for j in in_progress)
                parts.append(f"{len(in_progress)} batch(es) in progress: {listed}")
            if waiting:
                parts.append(f"{len(waiting)} ended, waiting on: {_some(waiting, '; ')}")
            if errors:
                parts.append(f"could not poll {len(errors)}: {'; '.join(errors)}")
            if stuck:
                parts.append(f"stuck: {_some((r for rs in stuck.values() for r in rs), '; ')}")
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


def _some(items: Iterable[str], sep: str = ", ", limit: int = 20) -> str:
    """The first ``limit`` items joined, and how many more: a skip reason stays readable."""
    listed = list(items)
    more = f"{sep}... {len(listed) - limit} more" if len(listed) > limit else ""
    return sep.join(listed[:limit]) + more


def _stuck_events(
    context: dg.SensorEvaluationContext,
    cursor: _Cursor,
    stuck: dict[str, list[str]],
    owing: set[str],
) -> list[dg.AssetCheckEvaluation]:
    """Log stuck batches every tick; tell the asset check when a series' report changes."""
    events: list[dg.AssetCheckEvaluation] = []
    if stuck:
        listed = "; ".join(f"{series} {r}" for series, rs in sorted(stuck.items()) for r in rs)
        context.log.warning(f"{sum(map(len, stuck.values()))} stuck batch(es): {listed}")
    for series in sorted(set(stuck) | set(cursor.stuck)):
        text = "; ".join(stuck.get(series, []))
        if cursor.stuck.get(series, "") == text:
            continue
        events.append(
            dg.AssetCheckEvaluation(
                asset_key=EXTRACTION_BATCH,
                check_name=STUCK_CHECK,
                partition=series,
                passed=not text,
                description=f"stuck: {text}" if text else "no stuck batch",
                metadata={"stuck_batches": len(stuck.get(series, []))},
            )
        )
        if text:
            cursor.stuck[series] = text
        else:
            cursor.stuck.pop(series, None)
    # Series that no longer owe anything and were reported clean need no entry.
    cursor.stuck = {k: v for k, v in cursor.stuck.items() if k in owing or v}
    return events
