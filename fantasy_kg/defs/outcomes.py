"""Read-only views over the files of one series that assets, checks and the sensor share.

Nothing here decides anything the pipeline decides: it reads section files, result files,
failure records and job files with the pipeline's own functions, and says for each section where
it stands (design invariant 2: a result, a recorded failure, or a batch still working on it).
"""

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fantasy_kg.defs.resources import LOCAL_BACKEND_NOTE, AnthropicBatchResource
from fantasy_kg.domain.prompts import prompt_version
from fantasy_kg.domain.sections import read_sections, text_sha256
from fantasy_kg.llm.jobs import FailureRecord, JobRecord, JobStore
from fantasy_kg.llm.requests import make_custom_id
from fantasy_kg.llm.results import (
    FAILURES_DIR,
    has_valid_result,
    load_all_provenance,
    load_failures,
)
from fantasy_kg.pipeline.extraction import find_series_ontology


@dataclass
class SectionOutcomes:
    """Where every section of a series stands right now.

    ``sections == with_result + failed + pending + missing``; ``missing`` must be empty.
    """

    series: str
    prompt_version: str
    sections: int = 0
    with_result: int = 0
    failed: list[FailureRecord] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def failure_types(self) -> dict[str, int]:
        """Recorded failures by type (errored, expired, refusal, max_tokens, invalid_json, ...)."""
        return dict(sorted(Counter(f.type for f in self.failed).items()))


def owed_jobs(store: JobStore, series: str) -> list[JobRecord]:
    """Jobs of a series that still owe something: results not processed or a follow-up to send."""
    return store.owed_jobs(series)


STUCK_AFTER = timedelta(hours=6)
"""An ended batch whose results are still unprocessed (or whose follow-up is still pending) this
long after it ended is stuck: results runs take minutes."""

EXPIRY_GRACE = timedelta(hours=1)
"""A batch still in progress this long after its ``expires_at`` is stuck: the API expires the
rest of a batch at 24 h."""


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        out = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return out if out.tzinfo is not None else out.replace(tzinfo=UTC)


def stuck_reason(job: JobRecord, now: datetime) -> str | None:
    """Why a batch that still owes results is stuck, from its job file alone; ``None`` if not.

    Used by the sensor (which also knows about exhausted results runs and failing polls) and by
    the ``batches_not_stuck`` asset check.
    """
    if not job.is_ended:
        expires = _when(job.expires_at)
        if expires is not None and now > expires + EXPIRY_GRACE:
            hours = (now - expires).total_seconds() / 3600
            return f"still {job.processing_status} {hours:.1f} h after it expired"
        return None
    if job.results_processed_at is None:
        ended = _when(job.ended_at)
        if ended is not None and now - ended > STUCK_AFTER:
            hours = (now - ended).total_seconds() / 3600
            return f"ended {hours:.1f} h ago and its results are not processed"
        return None
    if job.followup_state == "pending":
        since = _when(job.results_processed_at)
        if since is not None and now - since > STUCK_AFTER:
            hours = (now - since).total_seconds() / 3600
            return f"its follow-up batch has been pending for {hours:.1f} h"
    return None


def section_outcomes(res: AnthropicBatchResource, series: str) -> SectionOutcomes:
    """Classify every section of ``series`` by its current text and prompt version.

    A result made from an older text or prompt version does not count: the section is pending if a
    batch is working on it, and missing otherwise.
    """
    sections = read_sections(res.sections_path, series)
    pv = prompt_version(find_series_ontology(res.sections_path, series), res.model_id)
    out = SectionOutcomes(series=series, prompt_version=pv, sections=len(sections))
    # load_failures reads a jobs folder when the results folder has no _failures/ sub-folder, so
    # only ask it when there is one (no failure was ever recorded otherwise).
    failures = (
        {f.custom_id: f for f in load_failures(res.extracted_path, series)}
        if (res.extracted_path / FAILURES_DIR).is_dir()
        else {}
    )
    in_flight = {
        ref.split_root or cid
        for job in owed_jobs(res.job_store(), series)
        for cid, ref in job.inputs.items()
    }
    used: set[str] = set()
    identity = res.identity
    for sec in sections:
        cid = make_custom_id(sec.stem, used)
        sha = sec.meta.sha256 or text_sha256(sec.text)
        if has_valid_result(res.extracted_path, cid, sha, pv, identity):
            out.with_result += 1
        elif cid in in_flight:
            out.pending.append(cid)
        elif cid in failures:
            out.failed.append(failures[cid])
        else:
            out.missing.append(cid)
    return out


def _digest(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def sections_version(res: AnthropicBatchResource, series: str) -> str:
    """Data version of a series' sections: the text hash of each, in order.

    Re-sectioning unchanged books gives the same version, so Dagster does not mark anything
    downstream as stale.
    """
    sections = read_sections(res.sections_path, series)
    return _digest(f"{s.file_name}:{s.meta.sha256 or text_sha256(s.text)}" for s in sections)


def results_version(res: AnthropicBatchResource, series: str) -> str:
    """Data version of a series' results: which text, prompt and batch each result came from.

    Recorded failures count too (a section that failed is a different outcome than one that
    succeeded), so the version changes exactly when a result or a failure changes.
    """
    provenance = load_all_provenance(res.extracted_path, series)
    failures = (
        load_failures(res.extracted_path, series)
        if (res.extracted_path / FAILURES_DIR).is_dir()
        else []
    )
    return _digest(
        [f"{p.custom_id}:{p.sha256}:{p.prompt_version}:{p.batch_id}" for p in provenance]
        + [f"failed:{f.custom_id}:{f.type}:{f.batch_id}" for f in failures]
    )


def backend_label(name: str) -> str:
    """How metadata names a backend; the local one is announced as what it is."""
    return f"local ({LOCAL_BACKEND_NOTE})" if name == "local" else name


def jobs_table(jobs: Iterable[JobRecord]) -> str:
    """A Markdown table of batches: status and request counts by result type."""
    lines = [
        "| batch | attempt | status | requests | succeeded | errored | canceled | expired "
        "| processing |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for job in jobs:
        c = job.request_counts
        lines.append(
            f"| `{job.id}` | {job.attempt} | {job.processing_status} | {len(job.inputs)} "
            f"| {c.succeeded} | {c.errored} | {c.canceled} | {c.expired} | {c.processing} |"
        )
    return "\n".join(lines)
