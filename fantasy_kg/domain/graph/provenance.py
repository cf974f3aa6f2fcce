"""Batch provenance from job files: which batch, model, backend and prompt version made a result.

Job files (``<jobs_dir>/<batch_id>.json``) are written by the batch client and evolve with it, so
they are read here as plain JSON with every field optional: an older or newer job file must never
stop a warehouse load. What is found ties each result file (by custom_id) to its batch, and
gives the per-batch usage and cost rows of the ``costs`` table.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from fantasy_kg.domain.graph.models import (
    Backend,
    BatchId,
    BatchJobRow,
    CostRow,
    Model,
    PromptVersion,
)


@dataclass(frozen=True, slots=True)
class RequestProvenance:
    """Where one request's result came from."""

    custom_id: str
    batch_id: str | None
    model: str | None
    backend: str | None
    prompt_version: str | None


class TraceColumns(TypedDict):
    """The columns that tie a fact row to the request that made it (design: every fact row)."""

    batch_id: BatchId
    prompt_version: PromptVersion
    backend: Backend
    model: Model


def trace_columns(prov: RequestProvenance | None) -> TraceColumns:
    """The trace columns of a row from ``prov`` (all ``None`` when no job file names it).

    Sections, mentions and evidence rows all carry them; filling them in one place keeps the
    four columns consistent across tables.
    """
    if prov is None:
        return {"batch_id": None, "prompt_version": None, "backend": None, "model": None}
    return {
        "batch_id": prov.batch_id,
        "prompt_version": prov.prompt_version,
        "backend": prov.backend,
        "model": prov.model,
    }


@dataclass(slots=True)
class JobFailure:
    """A request that a job file records as failed."""

    custom_id: str
    batch_id: str
    type: str
    message: str
    retryable: bool
    file_name: str
    resubmitted_in: str | None


@dataclass(slots=True)
class RequestRecord:
    """The provenance file the batch client writes next to a result (``_provenance/<id>.json``).

    More precise than a job file: it names the batch whose answer was actually written (after a
    retry, the follow-up batch), and it exists for real-time results too.
    """

    custom_id: str
    series: str
    file_name: str
    batch_id: str | None
    model: str | None
    backend: str | None
    prompt_version: str | None
    mode: str
    usage: dict[str, int]
    paid_usd: float | None
    realtime_usd: float | None
    rejected: list[tuple[str, str]]  # (kind, "reason: excerpt") of items dropped by validation


@dataclass(slots=True)
class JobInfo:
    """The parts of a job file the warehouse uses."""

    batch_id: str
    series: str
    model: str | None
    backend: str | None
    prompt_version: str | None
    processing_status: str | None
    attempt: int | None
    parent_batch_id: str | None
    created_at: str | None
    ended_at: str | None
    mode: str
    request_counts: dict[str, int]
    custom_ids: list[str]
    input_files: dict[str, str]  # custom_id -> section file name
    input_prompt_versions: dict[str, str]
    failures: list[JobFailure]
    usage: dict[str, int]
    estimated_usd: float | None
    actual_usd: float | None
    realtime_usd: float | None
    job_file: str
    effort: str | None = None
    max_tokens: int | None = None
    truncated: int = 0
    """Requests whose answer was cut at ``max_tokens`` (or the window) and split."""

    @property
    def request_total(self) -> int:
        """Requests in the batch: the API's counts, or the custom_ids when it gave none."""
        counts = self.request_counts
        return sum(counts.values()) if counts else len(self.custom_ids)


_CUT_TYPES = ("max_tokens", "model_context_window_exceeded")
_COUNT_KEYS = ("processing", "succeeded", "errored", "canceled", "expired")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    return 0


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


def _cost(value: Any, mode: str) -> tuple[float | None, float | None]:
    """``(paid, realtime)`` USD from a ``Cost``-shaped dict (or a bare number)."""
    if isinstance(value, Mapping):
        batch = _float(value.get("batch_usd"))
        realtime = _float(value.get("realtime_usd"))
        for key in ("usd", "total_usd", "actual_usd", "estimated_usd"):
            if batch is None and realtime is None:
                batch = _float(value.get(key))
        paid = realtime if mode == "realtime" else batch
        return (paid if paid is not None else batch), realtime
    number = _float(value)
    return number, None


def _usage(raw: Any) -> dict[str, int]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): _int(v) for k, v in raw.items() if isinstance(v, int | float)}


def parse_request_provenance(data: Mapping[str, Any]) -> RequestRecord | None:
    """Read one ``_provenance/<custom_id>.json``; ``None`` if it has no custom_id."""
    cid = _str(data.get("custom_id"))
    if cid is None:
        return None
    mode = "realtime" if str(data.get("mode") or "") == "realtime" else "batch"
    paid, realtime = _cost(data.get("cost"), mode)
    rejected: list[tuple[str, str]] = []
    raw_rejected = data.get("rejected")
    if isinstance(raw_rejected, list):
        for item in raw_rejected:
            if isinstance(item, Mapping):
                kind = _str(item.get("kind")) or "item"
                reason = _str(item.get("reason")) or ""
                excerpt = _str(item.get("excerpt")) or ""
                rejected.append((kind, f"{reason}: {excerpt}"[:500] if excerpt else reason))
    return RequestRecord(
        custom_id=cid,
        series=_str(data.get("series")) or "",
        file_name=_str(data.get("file_name")) or "",
        batch_id=_str(data.get("batch_id")),
        model=_str(data.get("model")),
        backend=_str(data.get("backend")),
        prompt_version=_str(data.get("prompt_version")),
        mode=mode,
        usage=_usage(data.get("usage")),
        paid_usd=paid,
        realtime_usd=realtime,
        rejected=rejected,
    )


def parse_failure(data: Mapping[str, Any], *, batch_id: str = "") -> JobFailure | None:
    """Read one failure record (a job file's ``failures`` entry or ``_failures/<id>.json``)."""
    cid = _str(data.get("custom_id"))
    if cid is None:
        return None
    return JobFailure(
        custom_id=cid,
        batch_id=_str(data.get("batch_id")) or batch_id,
        type=_str(data.get("type")) or "unknown",
        message=(_str(data.get("message")) or "")[:1000],
        retryable=bool(data.get("retryable", False)),
        file_name=_str(data.get("file_name")) or "",
        resubmitted_in=_str(data.get("resubmitted_in")),
    )


def parse_job(data: Mapping[str, Any], *, job_file: str) -> JobInfo | None:
    """Read one job file's JSON; ``None`` if it has no batch id (not a job file)."""
    batch_id = _str(data.get("id")) or _str(data.get("batch_id"))
    if batch_id is None:
        return None
    inputs_raw = data.get("inputs")
    inputs: Mapping[Any, Any] = inputs_raw if isinstance(inputs_raw, Mapping) else {}
    mapping_raw = data.get("local_request_mapping")
    mapping: Mapping[Any, Any] = mapping_raw if isinstance(mapping_raw, Mapping) else {}
    custom_ids = sorted({str(k) for k in mapping} | {str(k) for k in inputs})
    input_files: dict[str, str] = {}
    input_pv: dict[str, str] = {}
    efforts: set[str] = set()
    budgets: set[int] = set()
    series = _str(data.get("series")) or ""
    for cid, ref in inputs.items():
        if isinstance(ref, Mapping):
            if _str(ref.get("effort")):
                efforts.add(str(ref["effort"]))
            if isinstance(ref.get("max_tokens"), int) and ref["max_tokens"] > 0:
                budgets.add(int(ref["max_tokens"]))
            if _str(ref.get("file_name")):
                input_files[str(cid)] = str(ref["file_name"])
            if _str(ref.get("prompt_version")):
                input_pv[str(cid)] = str(ref["prompt_version"])
            series = series or (_str(ref.get("series")) or "")
    series = series or (_str(data.get("series_name")) or "")
    kind = str(data.get("mode") or data.get("type") or "")
    mode = "realtime" if "realtime" in kind or batch_id.startswith("realtime") else "batch"
    counts_raw = data.get("request_counts")
    counts: dict[str, int] = {}
    if isinstance(counts_raw, Mapping):
        counts = {k: _int(counts_raw.get(k)) for k in _COUNT_KEYS}
    failures: list[JobFailure] = []
    raw_failures = data.get("failures")
    items: Iterable[Any] = ()
    if isinstance(raw_failures, Mapping):
        items = raw_failures.values()
    elif isinstance(raw_failures, list):
        items = raw_failures
    for item in items:
        if isinstance(item, Mapping):
            failure = parse_failure(item, batch_id=batch_id)
            if failure is not None:
                failures.append(failure)
    usage = _usage(data.get("usage"))
    actual, realtime = _cost(data.get("cost"), mode)
    estimated, _ = _cost(data.get("estimated_cost"), mode)
    attempt = data.get("attempt")
    return JobInfo(
        batch_id=batch_id,
        series=series,
        model=_str(data.get("model")),
        backend=_str(data.get("backend")),
        prompt_version=_str(data.get("prompt_version")),
        processing_status=_str(data.get("processing_status")),
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        parent_batch_id=_str(data.get("parent_batch_id")),
        created_at=_str(data.get("created_at")) or _str(data.get("submitted_at")),
        ended_at=_str(data.get("ended_at")),
        mode=mode,
        request_counts=counts,
        custom_ids=custom_ids,
        input_files=input_files,
        input_prompt_versions=input_pv,
        failures=failures,
        usage=usage,
        estimated_usd=estimated,
        actual_usd=actual,
        realtime_usd=realtime,
        job_file=job_file,
        effort=",".join(sorted(efforts)) or None,
        max_tokens=max(budgets) if budgets else None,
        truncated=sum(1 for f in failures if f.type in _CUT_TYPES),
    )


@dataclass(slots=True)
class Provenance:
    """Job files, per-result provenance files and open failures of one series.

    A result's batch, model, backend and prompt version come from its provenance file when there
    is one, else from the job files: when a request ran in several batches (a retry after an
    error), the latest batch that did not record it as failed.
    """

    jobs: list[JobInfo] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    open_failures: list[JobFailure] = field(default_factory=list)
    _by_cid: dict[str, RequestProvenance] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.jobs.sort(key=lambda j: (j.created_at or "", j.attempt or 0, j.batch_id))
        self.requests.sort(key=lambda r: r.custom_id)
        failed = {(f.batch_id, f.custom_id) for j in self.jobs for f in j.failures}
        for job in self.jobs:
            for cid in job.custom_ids:
                prev = self._by_cid.get(cid)
                if prev is not None and (job.batch_id, cid) in failed:
                    continue  # keep the earlier batch unless it failed too
                self._by_cid[cid] = RequestProvenance(
                    custom_id=cid,
                    batch_id=job.batch_id,
                    model=job.model,
                    backend=job.backend,
                    prompt_version=job.input_prompt_versions.get(cid) or job.prompt_version,
                )
        for req in self.requests:
            base = self._by_cid.get(req.custom_id) or RequestProvenance(
                req.custom_id, None, None, None, None
            )
            self._by_cid[req.custom_id] = RequestProvenance(
                custom_id=req.custom_id,
                batch_id=req.batch_id or base.batch_id,
                model=req.model or base.model,
                backend=req.backend or base.backend,
                prompt_version=req.prompt_version or base.prompt_version,
            )

    def for_custom_id(self, custom_id: str) -> RequestProvenance | None:
        """Provenance of a request; halves (``<id>_a``/``_b``) fall back to their parent."""
        found = self._by_cid.get(custom_id)
        if found is None and custom_id[-2:] in ("_a", "_b"):
            found = self._by_cid.get(custom_id[:-2])
        return found

    def failures(self) -> list[JobFailure]:
        """Every failure recorded by a job or still open in the results folder (deduplicated)."""
        seen: set[tuple[str, str, str]] = set()
        out = []
        for f in [*(f for j in self.jobs for f in j.failures), *self.open_failures]:
            key = (f.custom_id, f.batch_id, f.type)
            if key not in seen:
                seen.add(key)
                out.append(f)
        return out

    def batch_job_rows(self, series: str) -> list[BatchJobRow]:
        """Rows of the ``batch_jobs`` table."""
        rows = []
        for job in self.jobs:
            counts = job.request_counts
            rows.append(
                BatchJobRow(
                    series=series,
                    batch_id=job.batch_id,
                    model=job.model,
                    backend=job.backend,
                    prompt_version=job.prompt_version,
                    processing_status=job.processing_status,
                    attempt=job.attempt,
                    parent_batch_id=job.parent_batch_id,
                    created_at=job.created_at,
                    ended_at=job.ended_at,
                    request_count=job.request_total,
                    succeeded=counts.get("succeeded", 0),
                    errored=counts.get("errored", 0),
                    canceled=counts.get("canceled", 0),
                    expired=counts.get("expired", 0),
                    processing=counts.get("processing", 0),
                    custom_ids=list(job.custom_ids),
                    failure_count=len(job.failures),
                    job_file=job.job_file,
                    truncated=job.truncated,
                    effort=job.effort,
                    max_tokens=job.max_tokens,
                )
            )
        return rows

    def cost_rows(self, series: str) -> list[CostRow]:
        """Rows of the ``costs`` table: estimate vs actual per batch."""
        rows = []
        for job in self.jobs:
            u = job.usage
            cache_write = (
                u.get("cache_creation_input_tokens", 0)
                + u.get("cache_creation_5m_input_tokens", 0)
                + u.get("cache_creation_1h_input_tokens", 0)
            )
            savings = (
                round(job.realtime_usd - job.actual_usd, 6)
                if job.realtime_usd is not None and job.actual_usd is not None
                else None
            )
            counts = job.request_counts
            rows.append(
                CostRow(
                    series=series,
                    batch_id=job.batch_id,
                    model=job.model,
                    backend=job.backend,
                    mode=job.mode,
                    requests=job.request_total,
                    succeeded=counts.get("succeeded", 0),
                    input_tokens=u.get("input_tokens", 0),
                    output_tokens=u.get("output_tokens", 0),
                    cache_creation_input_tokens=cache_write,
                    cache_read_input_tokens=u.get("cache_read_input_tokens", 0),
                    estimated_usd=job.estimated_usd,
                    actual_usd=job.actual_usd,
                    realtime_equivalent_usd=job.realtime_usd,
                    savings_usd=savings,
                    thinking_tokens=u.get("thinking_tokens", 0),
                    truncated=job.truncated,
                    attempt=job.attempt,
                )
            )
        rows.extend(self._uncovered_cost_rows(series))
        return rows

    def _uncovered_cost_rows(self, series: str) -> list[CostRow]:
        """Costs of results no job file accounts for (real-time runs), one row per model."""
        known = {j.batch_id for j in self.jobs}
        groups: dict[str, list[RequestRecord]] = {}
        for req in self.requests:
            if req.batch_id and req.batch_id in known:
                continue
            key = req.batch_id or f"{req.mode}:{req.model or 'unknown'}"
            groups.setdefault(key, []).append(req)
        rows = []
        for key, reqs in sorted(groups.items()):
            usage: dict[str, int] = {}
            for r in reqs:
                for k, v in r.usage.items():
                    usage[k] = usage.get(k, 0) + v
            paid = [r.paid_usd for r in reqs if r.paid_usd is not None]
            realtime = [r.realtime_usd for r in reqs if r.realtime_usd is not None]
            paid_sum = round(sum(paid), 6) if paid else None
            realtime_sum = round(sum(realtime), 6) if realtime else None
            cache_write = (
                usage.get("cache_creation_input_tokens", 0)
                + usage.get("cache_creation_5m_input_tokens", 0)
                + usage.get("cache_creation_1h_input_tokens", 0)
            )
            rows.append(
                CostRow(
                    series=series,
                    batch_id=key,
                    model=reqs[0].model,
                    backend=reqs[0].backend,
                    mode=reqs[0].mode,
                    requests=len(reqs),
                    succeeded=len(reqs),
                    input_tokens=usage.get("input_tokens", 0),
                    output_tokens=usage.get("output_tokens", 0),
                    cache_creation_input_tokens=cache_write,
                    cache_read_input_tokens=usage.get("cache_read_input_tokens", 0),
                    estimated_usd=None,
                    actual_usd=paid_sum,
                    realtime_equivalent_usd=realtime_sum,
                    savings_usd=(
                        round(realtime_sum - paid_sum, 6)
                        if paid_sum is not None and realtime_sum is not None
                        else None
                    ),
                    thinking_tokens=usage.get("thinking_tokens", 0),
                    truncated=0,
                    attempt=None,
                )
            )
        return rows
