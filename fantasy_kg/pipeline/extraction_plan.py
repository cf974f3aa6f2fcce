"""Extraction planning: which sections of a series need a request, and which are reused.

A section whose text hash and prompt version already have a valid result, or that is in a batch
still running, is not sent again (design invariants 3 and 10). Also the small helpers every
extraction step shares.
"""

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from fantasy_kg.domain import answer as answer_sizing
from fantasy_kg.domain.catalog import ModelInfo, default_model, get_model
from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.domain.paths import extracted_dir
from fantasy_kg.domain.paths import sections_dir as default_sections_dir
from fantasy_kg.domain.prompts import prompt_version
from fantasy_kg.domain.schemas import Ontology, default_ontology, load_ontology
from fantasy_kg.domain.sections import SectionFile, read_sections, text_sha256
from fantasy_kg.llm.jobs import FailureRecord, JobRecord, JobStore
from fantasy_kg.llm.requests import (
    PreflightReport,
    PreparedRequest,
    build_section_request,
    make_custom_id,
    preflight,
)
from fantasy_kg.llm.results import (
    ResultIdentity,
    check_result,
    load_failures,
)
from fantasy_kg.pipeline.sections import find_ontology

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = answer_sizing.DEFAULT_MAX_TOKENS
"""Default ``max_tokens`` (see :mod:`fantasy_kg.domain.answer`); the same as sectioning's."""

T = TypeVar("T")
P = ParamSpec("P")
StatusCallback = Callable[[JobRecord], None]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code (CLI, Dagster ops)."""
    return asyncio.run(coro)


def sync_twin(
    twin: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Make the decorated function run its ``*_async`` twin to completion.

    The public sync function keeps its own signature and docstring (what users and the docs
    read), while the work, and the forwarding of every keyword, happens once in the twin. mypy
    checks the decorated signature against the twin's, so the two cannot drift apart; the
    decorated body is never run.
    """

    def decorate(signature: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(signature)
        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            return run_sync(twin(*args, **kwargs))

        return run

    return decorate


@dataclass(frozen=True)
class SectionInputs:
    """What every extraction step reads first: resolved folders, the model and the sections."""

    sections_dir: Path
    output_dir: Path
    model: ModelInfo
    sections: list[SectionFile]

    def require_sections(self, series: str | None = None) -> None:
        """Refuse a run with nothing to extract (one line naming the folder, invariant 7).

        Raises:
            InputFileError: no section files (of ``series``, when named) in the folder.
        """
        if not self.sections:
            where = f" for series {series!r}" if series else ""
            raise InputFileError(
                f"no section files{where} in {self.sections_dir} (run `fantasy-kg sections`)"
            )


def read_section_inputs(
    sections_dir: Path | str | None,
    output_dir: Path | str | None,
    series: str | None,
    model: str | None,
) -> SectionInputs:
    """Resolve the folders (defaults under the data directory) and model, read the sections.

    Raises:
        ConfigError: unknown model (checked before any section file is read).
        InputFileError: unreadable meta files.
    """
    sec_dir = (Path(sections_dir) if sections_dir is not None else default_sections_dir()).resolve()
    out_dir = (Path(output_dir) if output_dir is not None else extracted_dir()).resolve()
    info = get_model(model or default_model())
    return SectionInputs(sec_dir, out_dir, info, read_sections(sec_dir, series))


def each_once(queue: list[str]) -> Iterator[str]:
    """Take batch ids off the front of ``queue`` until it is empty, each id only once.

    Retrieving a batch may create its follow-up, which the caller appends to ``queue`` while
    iterating; an id met again (a follow-up also listed as in flight) is skipped, so no batch
    is polled or retrieved twice in one pass.
    """
    seen: set[str] = set()
    while queue:
        batch_id = queue.pop(0)
        if batch_id not in seen:
            seen.add(batch_id)
            yield batch_id


def default_max_tokens(model: ModelInfo) -> int:
    """:data:`DEFAULT_MAX_TOKENS` capped at the model's output limit."""
    return answer_sizing.default_max_tokens(model)


def find_series_ontology(sections_dir: Path, series: str) -> Ontology:
    """The ontology a series' sections were made with: ``<slug>_schema.json`` or the default.

    Looks next to the sections folder (``../schemas``) and in the data directory's ``schemas/``.
    """
    path = find_ontology(sections_dir, series)
    return load_ontology(path) if path is not None else default_ontology(series)


def group_by_series(sections: list[SectionFile]) -> dict[str, list[SectionFile]]:
    """Sections keyed by series slug, in their given order."""
    groups: dict[str, list[SectionFile]] = {}
    for sec in sections:
        groups.setdefault(sec.meta.series, []).append(sec)
    return groups


# ------------------------------------------------------------------------------------------
# Planning: which sections need a request
# ------------------------------------------------------------------------------------------


@dataclass
class SubmissionPlan:
    """What :func:`plan_submission` decided for one series.

    Attributes:
        series: Series slug.
        requests: Requests to send (sections with no valid result and not in flight).
        done: custom_ids whose result file is valid for the current inputs.
        in_flight: Jobs still running (or awaiting their follow-up) that cover some sections.
        blocked: custom_ids with a permanent failure for the same inputs (sent again only with
            ``retry_failed``).
        report: Pre-flight report of ``requests`` (``None`` when there is nothing to send).
        identity: Backend, model, effort and ``max_tokens`` the requests run with.
        other_settings: custom_id -> why its existing result is not reused (made by another
            backend, model, effort or ``max_tokens``); those sections are in ``requests``.
        forced: custom_ids whose valid result is extracted again because of ``force``.
    """

    series: str
    requests: list[PreparedRequest] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    in_flight: list[JobRecord] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    report: PreflightReport | None = None
    series_name: str = ""
    identity: ResultIdentity | None = None
    other_settings: dict[str, str] = field(default_factory=dict)
    forced: list[str] = field(default_factory=list)

    def reuse_note(self) -> str | None:
        """One line on results not reused, or ``None`` when every result was reusable."""
        if self.other_settings:
            reasons = sorted(set(self.other_settings.values()))
            why = reasons[0] + (f" (and {len(reasons) - 1} other reasons)" if reasons[1:] else "")
            now = self.identity.describe() if self.identity else "the current settings"
            return (
                f"series {self.series}: {len(self.other_settings)} existing results were made "
                f"with {why}: extracting them again with {now}"
            )
        if self.forced:
            return (
                f"series {self.series}: --force: extracting {len(self.forced)} sections again "
                "although they have results"
            )
        return None


def _active_jobs(store: JobStore, series: str) -> list[JobRecord]:
    """Jobs of a series that still owe results: not processed, or follow-up not yet created."""
    return [j for j in store.all_jobs(series) if not j.is_settled or j.followup_state == "pending"]


def plan_submission(
    sections_dir: Path,
    output_dir: Path,
    series: str,
    sections: list[SectionFile],
    model: ModelInfo,
    *,
    store: JobStore,
    max_tokens: int,
    effort: str | None = None,
    ontology: Ontology | None = None,
    retry_failed: bool = False,
    backend: str = "local",
    output_ratio: float = answer_sizing.DEFAULT_OUTPUT_RATIO,
    force: bool = False,
) -> SubmissionPlan:
    """Decide which sections of a series must be sent (no network, nothing written).

    A section is skipped only when its result was made from the same text and prompt version
    by the same backend, model, effort and ``max_tokens`` (invariant 10); ``force`` sends every
    section that is not in flight again. ``effort`` defaults to
    :data:`~fantasy_kg.domain.answer.DEFAULT_EFFORT` on models that think.
    """
    onto = ontology or find_series_ontology(sections_dir, series)
    pv = prompt_version(onto, model.id)
    sent_effort = answer_sizing.request_effort(model, effort)
    run_effort = answer_sizing.effective_effort(model, sent_effort)
    first_extra = sections[0].meta.model_extra or {} if sections else {}
    plan = SubmissionPlan(
        series=series,
        series_name=str(first_extra.get("series_name", "") or onto.name or ""),
        identity=ResultIdentity(
            backend=backend, model=model.id, effort=run_effort or "", max_tokens=max_tokens
        ),
    )
    active = _active_jobs(store, series)
    busy: dict[tuple[str, str, str], JobRecord] = {}
    for job in active:
        for cid, ref in job.inputs.items():
            key = (ref.split_root or cid, ref.sha256, ref.prompt_version)
            busy[key] = job
    permanent: dict[str, FailureRecord] = {
        f.custom_id: f for f in load_failures(output_dir, series) if not f.retryable
    }
    used: set[str] = set()
    for sec in sections:
        cid = make_custom_id(sec.stem, used)
        sha = sec.meta.sha256 or text_sha256(sec.text)
        check = check_result(output_dir, cid, sha, pv, plan.identity)
        if check.valid and not force:
            plan.done.append(cid)
            continue
        if check.valid:
            plan.forced.append(cid)
        elif check.other_settings is not None:
            plan.other_settings[cid] = check.other_settings
        running = busy.get((cid, sha, pv))
        if running is not None:
            if running.id not in {j.id for j in plan.in_flight}:
                plan.in_flight.append(running)
            continue
        failure = permanent.get(cid)
        if failure is not None and not retry_failed and _same_inputs(store, failure, sha, pv):
            plan.blocked.append(cid)
            continue
        plan.requests.append(
            build_section_request(
                sec,
                onto,
                model.id,
                max_tokens,
                custom_id=cid,
                effort=sent_effort,
                series_name=str((sec.meta.model_extra or {}).get("series_name", "")) or None,
            )
        )
    if plan.requests:
        plan.report = preflight(plan.requests, model.id, output_ratio=output_ratio)
    return plan


def plan_series(
    inputs: SectionInputs,
    *,
    store: JobStore,
    backend: str,
    max_tokens: int | None,
    effort: str | None,
    output_ratio: float,
    force: bool,
    retry_failed: bool,
    ontology: Ontology | None = None,
) -> list[SubmissionPlan]:
    """:func:`plan_submission` for every series among ``inputs.sections``, in their order.

    ``max_tokens`` defaults to :func:`default_max_tokens` of the model, as every step's does.
    """
    return [
        plan_submission(
            inputs.sections_dir,
            inputs.output_dir,
            slug,
            secs,
            inputs.model,
            store=store,
            max_tokens=max_tokens or default_max_tokens(inputs.model),
            effort=effort,
            output_ratio=output_ratio,
            force=force,
            backend=backend,
            ontology=ontology,
            retry_failed=retry_failed,
        )
        for slug, secs in group_by_series(inputs.sections).items()
    ]


def _same_inputs(store: JobStore, failure: FailureRecord, sha: str, pv: str) -> bool:
    """Whether a recorded failure was for the same section text and prompt version."""
    if not store.exists(failure.batch_id):
        return False
    ref = store.load(failure.batch_id).inputs.get(failure.custom_id)
    return ref is not None and ref.sha256 == sha and ref.prompt_version == pv
