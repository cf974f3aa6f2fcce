"""Every result handled: turn one answer into a result file or a recorded failure.

Shared by batch and real-time mode, so both write byte-for-byte the same kind of files:

Why it works this way: docs/architecture.md, "Results and provenance".
"""

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from fantasy_kg.domain import paths
from fantasy_kg.domain.catalog import ModelInfo
from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.domain.pricing import Cost, TokenUsage, price_usage
from fantasy_kg.domain.schemas import (
    Confidence,
    EntityInstance,
    ExtractionResult,
    RejectedItem,
    RelationshipInstance,
    SchemaUpdateProposal,
    parse_extraction,
)
from fantasy_kg.llm.jobs import FailureRecord, JobStore, utcnow
from fantasy_kg.llm.requests import MAX_CUSTOM_ID, RequestMeta

logger = logging.getLogger(__name__)

FAILURES_DIR = "_failures"
PROVENANCE_DIR = "_provenance"
PARTS_DIR = "_parts"
RESULT_SUFFIX = "_extracted.json"

TRUNCATION_STOP_REASONS = frozenset({"max_tokens", "model_context_window_exceeded"})


# ------------------------------------------------------------------------------------------
# Reading a message
# ------------------------------------------------------------------------------------------


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def text_of(message: Any) -> str | None:
    """The answer's text: the first content block of type ``text`` (thinking may come first)."""
    for block in _get(message, "content", None) or []:
        if _get(block, "type") == "text":
            text = _get(block, "text")
            return str(text) if text is not None else None
    return None


def usage_of(message: Any) -> TokenUsage:
    """Token usage of a message from its real usage fields.

    Cache writes are split by TTL from ``usage.cache_creation`` (1-hour writes cost 2x input,
    5-minute writes 1.25x); a bare ``cache_creation_input_tokens`` without the breakdown is
    priced as 5-minute writes, as the API documents.
    """
    usage = _get(message, "usage")
    if usage is None:
        return TokenUsage()
    creation = _get(usage, "cache_creation")
    w5 = int(_get(creation, "ephemeral_5m_input_tokens", 0) or 0) if creation is not None else 0
    w1 = int(_get(creation, "ephemeral_1h_input_tokens", 0) or 0) if creation is not None else 0
    total_writes = int(_get(usage, "cache_creation_input_tokens", 0) or 0)
    if creation is None or (w5 + w1 == 0 and total_writes):
        w5, w1 = total_writes, 0
    return TokenUsage(
        input_tokens=int(_get(usage, "input_tokens", 0) or 0),
        output_tokens=int(_get(usage, "output_tokens", 0) or 0),
        cache_creation_5m_input_tokens=w5,
        cache_creation_1h_input_tokens=w1,
        cache_read_input_tokens=int(_get(usage, "cache_read_input_tokens", 0) or 0),
        thinking_tokens=int(_get(_get(usage, "output_tokens_details"), "thinking_tokens", 0) or 0),
    )


@dataclass
class Outcome:
    """What one answer became.

    Exactly one of ``result`` (usable), ``failure`` (recorded) or ``truncated`` (to be split)
    describes it.
    """

    custom_id: str
    result: BaseModel | None = None
    rejected: list[RejectedItem] = field(default_factory=list)
    failure: FailureRecord | None = None
    truncated: bool = False
    stop_reason: str = ""
    usage: TokenUsage | None = None


def interpret_message(
    message: Any,
    meta: RequestMeta,
    *,
    schema: type[BaseModel] = ExtractionResult,
    batch_id: str,
    attempt: int = 1,
) -> Outcome:
    """Decide what a succeeded answer is worth: a result, a truncation or a failure.

    A succeeded line can still be unusable: ``refusal`` is recorded (not retried: the same
    input gets the same refusal), ``max_tokens`` / ``model_context_window_exceeded`` mark the
    request for splitting, invalid JSON and schema mismatches are recorded with the error.
    """
    cid = meta.custom_id
    stop = str(_get(message, "stop_reason", "") or "")
    usage = usage_of(message)

    def fail(kind: str, msg: str, retryable: bool = False) -> Outcome:
        rec = request_failure(
            meta,
            kind,
            msg,
            batch_id=batch_id,
            attempt=attempt,
            retryable=retryable,
            stop_reason=stop,
        )
        return Outcome(custom_id=cid, failure=rec, stop_reason=stop, usage=usage)

    if stop == "refusal":
        details = _get(message, "stop_details")
        why = _get(details, "explanation") or _get(details, "category") or "no explanation"
        return fail("refusal", f"the model refused: {why}")
    if stop in TRUNCATION_STOP_REASONS:
        return Outcome(custom_id=cid, truncated=True, stop_reason=stop, usage=usage)
    text = text_of(message)
    if text is None:
        return fail("no_text_block", f"answer has no text block (stop_reason {stop or 'none'})")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        return fail("invalid_json", f"answer is not valid JSON: {exc.msg} at char {exc.pos}")
    except RecursionError:
        return fail("invalid_json", "answer is nested too deeply to decode")
    if schema is ExtractionResult:
        try:
            parsed = parse_extraction(payload, file_name=meta.file_name, chunk_id=meta.chunk_id)
        except ValueError as exc:
            return fail("schema_mismatch", f"answer does not match the schema: {exc}")
        return Outcome(
            custom_id=cid,
            result=parsed.result,
            rejected=list(parsed.rejected),
            stop_reason=stop,
            usage=usage,
        )
    try:
        result = schema.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        return fail("schema_mismatch", f"answer does not match the schema: {loc}: {err['msg']}")
    return Outcome(custom_id=cid, result=result, stop_reason=stop, usage=usage)


def interpret_error(error: Any, meta: RequestMeta, *, batch_id: str, attempt: int) -> FailureRecord:
    """Record an ``errored`` result: ``invalid_request_error`` must be fixed, others retried.

    ``error`` is the line's ``ErrorResponse`` (``{"type": "error", "error": {...}}``) or the inner
    error object.
    """
    inner = _get(error, "error", error)
    etype = str(_get(inner, "type", "") or "unknown_error")
    message = str(_get(inner, "message", "") or "")
    return request_failure(
        meta,
        "errored",
        message,
        batch_id=batch_id,
        attempt=attempt,
        retryable=etype != "invalid_request_error",
        error_type=etype,
    )


def request_failure(
    meta: RequestMeta,
    kind: str,
    message: str,
    *,
    batch_id: str,
    attempt: int,
    retryable: bool,
    error_type: str = "",
    stop_reason: str = "",
) -> FailureRecord:
    """The failure record of ``meta``'s request, whatever went wrong and in either mode.

    Batch lines, real-time calls, unusable answers and cut answers are all recorded through
    here, so their records agree field for field (the message is cut to 2,000 characters: an
    API message can quote a whole request).
    """
    return FailureRecord(
        custom_id=meta.custom_id,
        batch_id=batch_id,
        type=kind,
        error_type=error_type,
        message=message[:2000],
        retryable=retryable,
        attempt=attempt,
        file_name=meta.file_name,
        series=meta.series,
        stop_reason=stop_reason,
    )


def not_run_failure(
    kind: str, meta: RequestMeta, *, batch_id: str, attempt: int, message: str = ""
) -> FailureRecord:
    """Record an ``expired``/``canceled``/missing result: never sent to the model, retryable."""
    default = {
        "expired": "the batch reached its 24-hour expiry before this request ran",
        "canceled": "the batch was canceled before this request ran",
        "missing_result": "the batch ended but its results held no line for this custom_id",
    }.get(kind, kind)
    return request_failure(
        meta, kind, message or default, batch_id=batch_id, attempt=attempt, retryable=True
    )


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------


def result_path(output_dir: Path, custom_id: str) -> Path:
    """``<output_dir>/<custom_id>_extracted.json`` (confined: custom_ids can be hostile)."""
    return paths.confined(output_dir, f"{custom_id}{RESULT_SUFFIX}")


def part_path(output_dir: Path, custom_id: str) -> Path:
    """``<output_dir>/_parts/<custom_id>_extracted.json`` for halves of split sections."""
    return paths.confined(output_dir, PARTS_DIR, f"{custom_id}{RESULT_SUFFIX}")


def failure_path(output_dir: Path, custom_id: str) -> Path:
    """``<output_dir>/_failures/<custom_id>.json``."""
    return paths.confined(output_dir, FAILURES_DIR, f"{custom_id}.json")


def provenance_path(output_dir: Path, custom_id: str) -> Path:
    """``<output_dir>/_provenance/<custom_id>.json``."""
    return paths.confined(output_dir, PROVENANCE_DIR, f"{custom_id}.json")


class Provenance(BaseModel):
    """Where a result file came from; one per ``_extracted.json``."""

    custom_id: str
    file_name: str
    chunk_id: str
    series: str = ""
    section_path: str = ""
    sha256: str = ""
    prompt_version: str = ""
    model: str = ""
    batch_id: str = ""
    batch_ids: list[str] = []
    backend: str = ""
    mode: str = "batch"
    written_at: str = ""
    usage: TokenUsage = TokenUsage()
    cost: Cost = Cost(batch_usd=0.0, realtime_usd=0.0)
    rejected: list[RejectedItem] = []
    merged_from: list[str] = []
    effort: str = ""
    max_tokens: int = 0

    @classmethod
    def of_request(
        cls,
        meta: RequestMeta,
        *,
        model: str,
        batch_id: str,
        backend: str,
        mode: str,
        usage: TokenUsage,
        cost: Cost,
        rejected: list[RejectedItem],
        custom_id: str = "",
        series: str = "",
        batch_ids: list[str] | None = None,
        merged_from: list[str] | None = None,
    ) -> "Provenance":
        """The provenance of ``meta``'s result, written now.

        The section fields come from the request in one place for every writer (batch, real
        time, merge), so a field added to both is copied everywhere. ``custom_id`` and
        ``series`` replace the request's when given (a merged root, a job's series).
        """
        return cls(
            custom_id=custom_id or meta.custom_id,
            file_name=meta.file_name,
            chunk_id=meta.chunk_id,
            series=series or meta.series,
            section_path=meta.section_path,
            sha256=meta.sha256,
            prompt_version=meta.prompt_version,
            model=model,
            batch_id=batch_id,
            batch_ids=batch_ids or [],
            backend=backend,
            mode=mode,
            written_at=utcnow().isoformat(),
            usage=usage,
            cost=cost,
            rejected=rejected,
            merged_from=merged_from or [],
        )

    def settings(self) -> str:
        """What made the result besides text and prompt: ``backend/model effort=… max_tokens=…``."""
        return describe_settings(self.backend, self.model, self.effort, self.max_tokens)


def describe_settings(backend: str, model: str, effort: str, max_tokens: int) -> str:
    """One readable token for a result's identity beyond text and prompt (for messages)."""
    return f"{backend or '?'}/{model or '?'} effort={effort or '-'} max_tokens={max_tokens or '?'}"


def write_result(
    output_dir: Path,
    meta: RequestMeta,
    result: BaseModel,
    provenance: Provenance,
    *,
    as_part: bool = False,
) -> Path:
    """Write a result (or a part of a split section) and its provenance, then clear failures.

    The request's effort and ``max_tokens`` (part of a result's identity, invariant 10) are
    stamped on the provenance here, so every writer (batch, real time, merge) records them.
    """
    if meta.max_tokens and not provenance.max_tokens:
        provenance = provenance.model_copy(
            update={"effort": meta.effort, "max_tokens": meta.max_tokens}
        )
    path = (
        part_path(output_dir, meta.custom_id)
        if as_part
        else result_path(output_dir, meta.custom_id)
    )
    paths.atomic_write_text(path, result.model_dump_json(indent=2) + "\n")
    prov_path = (
        paths.confined(output_dir, PARTS_DIR, f"{meta.custom_id}.provenance.json")
        if as_part
        else provenance_path(output_dir, meta.custom_id)
    )
    paths.atomic_write_text(prov_path, provenance.model_dump_json(indent=2) + "\n")
    clear_failure(output_dir, meta.custom_id)
    return path


def write_failure(output_dir: Path, record: FailureRecord) -> Path:
    """Record a failure where the warehouse and Dagster can read it."""
    path = failure_path(output_dir, record.custom_id)
    paths.atomic_write_text(path, record.model_dump_json(indent=2) + "\n")
    return path


def clear_failure(output_dir: Path, custom_id: str) -> None:
    """Drop the failure record of a custom_id that now has a result."""
    path = failure_path(output_dir, custom_id)
    if path.is_file():
        path.unlink()


def load_provenance(output_dir: Path | str, custom_id: str) -> Provenance | None:
    """The provenance of one result file, or ``None`` when there is none (or it is unreadable)."""
    path = provenance_path(Path(output_dir), custom_id)
    try:
        return Provenance.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError):
        return None


def series_record_files(
    folder: Path, series: str, custom_ids: Iterable[str] = (), suffix: str = ".json"
) -> list[Path]:
    """Record files ``<custom_id><suffix>`` in ``folder`` that can belong to ``series``, by name.

    Results, provenance and failures of every series share one folder (the guide's layout), and
    a custom_id starts with its series slug (``<slug>_section_NN``; a slug too long for a
    custom_id keeps its first characters). So one series' records are found from the folder's
    *names*, without parsing the other series' files: a backfill of S series reads O(S) files,
    not O(S^2). The match is by prefix, so callers still check the record's own ``series``.

    Args:
        folder: ``_provenance/``, ``_failures/`` or the results folder.
        series: Series slug.
        custom_ids: Section custom_ids of the series that may not start with the slug
            (pre-sectioned input); their split halves (``<id>_a``...) are included too.
        suffix: File name ending after the custom_id.
    """
    if not folder.is_dir():
        return []
    prefix = f"{series}_"[: MAX_CUSTOM_ID - 13]
    extra = tuple(c for c in custom_ids if not c.startswith(prefix))
    out = []
    for entry in os.scandir(folder):
        name = entry.name
        if not name.endswith(suffix):
            continue
        if name.startswith(prefix) or (extra and name.startswith(extra)):
            out.append(folder / name)
    out.sort()
    return out


def load_all_provenance(output_dir: Path | str, series: str | None = None) -> list[Provenance]:
    """Provenance of every result in ``output_dir`` (sorted by custom_id).

    Args:
        output_dir: Results folder.
        series: Only this series (its files are found by name, see :func:`series_record_files`).
    """
    return _read_records(Path(output_dir) / PROVENANCE_DIR, series, Provenance, "provenance file")


_Record = TypeVar("_Record", Provenance, FailureRecord)


def _read_records(
    folder: Path, series: str | None, kind: type[_Record], what: str
) -> list[_Record]:
    """The records in a ``_provenance/`` or ``_failures/`` folder, in file-name order.

    One reader for both folders, so they skip unreadable files (with a warning naming ``what``)
    and find one series' files by name (:func:`series_record_files`) the same way.
    """
    out: list[_Record] = []
    if not folder.is_dir():
        return out
    files = sorted(folder.glob("*.json")) if series is None else series_record_files(folder, series)
    for path in files:
        try:
            rec = kind.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValidationError, ValueError):
            logger.warning("unreadable %s %s", what, path)
            continue
        if series is None or rec.series == series:
            out.append(rec)
    return out


@dataclass(frozen=True)
class ResultIdentity:
    """What made a result beyond its text and prompt version (invariant 10).

    A result is reused only when all of these match what the run would send now: the same text
    with the same prompt from the local baseline and from Claude, or at another effort or
    ``max_tokens``, are different results.
    """

    backend: str
    model: str
    effort: str
    max_tokens: int

    def describe(self) -> str:
        """``anthropic/claude-sonnet-5-5 effort=low max_tokens=32000``."""
        return describe_settings(self.backend, self.model, self.effort, self.max_tokens)

    def mismatch(self, prov: Provenance) -> str | None:
        """Why ``prov`` was made differently (``None``: the same way)."""
        diffs = []
        if prov.backend != self.backend:
            diffs.append(f"backend {prov.backend or '?'} (now {self.backend})")
        if prov.model != self.model:
            diffs.append(f"model {prov.model or '?'} (now {self.model})")
        if prov.effort != self.effort:
            diffs.append(f"effort {prov.effort or '-'} (now {self.effort or '-'})")
        if prov.max_tokens != self.max_tokens:
            diffs.append(f"max_tokens {prov.max_tokens or '?'} (now {self.max_tokens})")
        return ", ".join(diffs) or None


@dataclass(frozen=True)
class ResultCheck:
    """Whether a section's result file can be reused.

    Attributes:
        valid: A result exists for exactly this text, prompt version and identity.
        other_settings: A valid result for this text and prompt exists but was made by another
            backend, model, effort or ``max_tokens`` (what differs), or ``None``.
    """

    valid: bool
    other_settings: str | None = None


def check_result(
    output_dir: Path,
    custom_id: str,
    sha256: str,
    prompt_version: str,
    identity: ResultIdentity | None = None,
) -> ResultCheck:
    """Whether ``custom_id`` already has a result for this text, prompt version and identity.

    Idempotency (invariant 3) and identity (invariant 10): such sections are not sent again. The
    result file must exist and validate; the provenance must carry the same text hash and prompt
    version (which includes the model) and, when ``identity`` is given, the same backend, model,
    effort and ``max_tokens``.
    """
    try:
        path = result_path(output_dir, custom_id)
    except InputFileError:
        return ResultCheck(valid=False)
    if not path.is_file():
        return ResultCheck(valid=False)
    prov = load_provenance(output_dir, custom_id)
    if prov is None or prov.sha256 != sha256 or prov.prompt_version != prompt_version:
        return ResultCheck(valid=False)
    try:
        ExtractionResult.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError):
        return ResultCheck(valid=False)
    if identity is not None:
        why = identity.mismatch(prov)
        if why is not None:
            return ResultCheck(valid=False, other_settings=why)
    return ResultCheck(valid=True)


def has_valid_result(
    output_dir: Path,
    custom_id: str,
    sha256: str,
    prompt_version: str,
    identity: ResultIdentity | None = None,
) -> bool:
    """:func:`check_result`'s verdict alone."""
    return check_result(output_dir, custom_id, sha256, prompt_version, identity).valid


def load_failures(location: Path | str, series: str | None = None) -> list[FailureRecord]:
    """Failures that still stand, from an output folder or from a jobs folder.

    Args:
        location: An output folder (reads ``_failures/*.json``: exactly the custom_ids that have
            no result file yet) or a jobs folder (reads every job file; for each custom_id the
            record of its latest attempt, dropped when a later attempt wrote a result).
        series: Only this series slug.

    Returns:
        Failure records sorted by custom_id.
    """
    root = Path(location)
    folder = root / FAILURES_DIR
    out: dict[str, FailureRecord] = {}
    if folder.is_dir():
        for rec in _read_records(folder, series, FailureRecord, "failure record"):
            out[rec.custom_id] = rec
        return sorted(out.values(), key=lambda r: r.custom_id)
    store = JobStore(root)
    out_dirs: dict[str, Path] = {}
    for job in store.all_jobs(series):
        for cid, rec in job.failures.items():
            prev = out.get(cid)
            if prev is None or rec.attempt >= prev.attempt:
                out[cid] = rec
                out_dirs[cid] = Path(job.output_dir)
    return sorted(
        (r for cid, r in out.items() if not _superseded(out_dirs[cid], r)),
        key=lambda r: r.custom_id,
    )


def _superseded(output_dir: Path, record: FailureRecord) -> bool:
    """Whether a result (or split part) was written for the custom_id after the failure."""
    cid = record.custom_id
    for prov_file in (
        output_dir / PROVENANCE_DIR / f"{cid}.json",
        output_dir / PARTS_DIR / f"{cid}.provenance.json",
    ):
        try:
            prov = Provenance.model_validate_json(prov_file.read_text(encoding="utf-8"))
        except (OSError, ValidationError, ValueError):
            continue
        if prov.written_at >= record.recorded_at:
            return True
    return False


# ------------------------------------------------------------------------------------------
# Split sections: parts and merging
# ------------------------------------------------------------------------------------------


class SplitTree(BaseModel):
    """The halves a truncated section was split into, in text order (leaves only)."""

    root: str
    leaves: list[str]
    split_nodes: list[str] = []


def split_tree_path(output_dir: Path, root: str) -> Path:
    """``<output_dir>/_parts/<root>.split.json``."""
    return paths.confined(output_dir, PARTS_DIR, f"{root}.split.json")


def record_split(output_dir: Path, root: str, parent: str, halves: tuple[str, str]) -> None:
    """Replace leaf ``parent`` (or the root itself) of ``root``'s tree by its two halves."""
    path = split_tree_path(output_dir, root)
    if path.is_file():
        tree = SplitTree.model_validate_json(path.read_text(encoding="utf-8"))
    else:
        tree = SplitTree(root=root, leaves=[root])
    if parent not in tree.split_nodes:
        tree.split_nodes.append(parent)
    if parent in tree.leaves:
        i = tree.leaves.index(parent)
        tree.leaves[i : i + 1] = list(halves)
    elif not set(halves) <= set(tree.leaves):
        tree.leaves.extend(halves)
    paths.atomic_write_text(path, tree.model_dump_json(indent=2) + "\n")


def merge_results(results: list[ExtractionResult]) -> ExtractionResult:
    """Merge the results of a section's halves into one result for the whole section.

    Entities with the same id become one (aliases, mentions and attributes united, the higher
    confidence kept); relationships with the same (source, type, target) become one with all
    evidence; schema proposals are deduplicated by (type, name).
    """
    entities: dict[str, EntityInstance] = {}
    for res in results:
        for ent in res.entities:
            cur = entities.get(ent.id)
            if cur is None:
                entities[ent.id] = ent.model_copy(deep=True)
                continue
            cur.aliases = list(dict.fromkeys([*cur.aliases, *ent.aliases]))
            seen = {(m.file_name, m.chunk_id, m.text) for m in cur.mentions}
            cur.mentions.extend(
                m for m in ent.mentions if (m.file_name, m.chunk_id, m.text) not in seen
            )
            cur.attributes = {**ent.attributes, **cur.attributes}
            cur.confidence = Confidence(score=max(cur.confidence.score, ent.confidence.score))
    rels: dict[tuple[str, str, str], RelationshipInstance] = {}
    for res in results:
        for rel in res.relationships:
            key = (rel.source, rel.type, rel.target)
            cur_rel = rels.get(key)
            if cur_rel is None:
                rels[key] = rel.model_copy(deep=True)
                continue
            quotes = {e.quote for e in cur_rel.evidence}
            cur_rel.evidence.extend(e for e in rel.evidence if e.quote not in quotes)
            cur_rel.confidence = Confidence(
                score=max(cur_rel.confidence.score, rel.confidence.score)
            )
    proposals: dict[tuple[str, str], SchemaUpdateProposal] = {}
    for res in results:
        for prop in res.schema_proposals:
            proposals.setdefault((prop.proposal_type, prop.name), prop)
    return ExtractionResult(
        entities=list(entities.values()),
        relationships=list(rels.values()),
        schema_proposals=list(proposals.values()),
    )


def try_merge(output_dir: Path, root: str, root_meta: RequestMeta) -> Path | None:
    """Merge a split section once every leaf has a part; return the result path if written."""
    path = split_tree_path(output_dir, root)
    if not path.is_file():
        return None
    tree = SplitTree.model_validate_json(path.read_text(encoding="utf-8"))
    parts: list[ExtractionResult] = []
    provs: list[Provenance] = []
    for leaf in tree.leaves:
        ppath = part_path(output_dir, leaf)
        if not ppath.is_file():
            return None
        parts.append(ExtractionResult.model_validate_json(ppath.read_text(encoding="utf-8")))
        prov_file = paths.confined(output_dir, PARTS_DIR, f"{leaf}.provenance.json")
        if prov_file.is_file():
            provs.append(Provenance.model_validate_json(prov_file.read_text(encoding="utf-8")))
    merged = merge_results(parts)
    usage = TokenUsage()
    batch = realtime = 0.0
    rejected: list[RejectedItem] = []
    batch_ids: list[str] = []
    for p in provs:
        usage = usage + p.usage
        batch += p.cost.batch_usd
        realtime += p.cost.realtime_usd
        rejected.extend(p.rejected)
        batch_ids.extend(b for b in [p.batch_id, *p.batch_ids] if b and b not in batch_ids)
    first = provs[0] if provs else None
    prov = Provenance.of_request(
        root_meta,
        custom_id=root,
        model=first.model if first else "",
        batch_id=first.batch_id if first else "",
        batch_ids=batch_ids,
        backend=first.backend if first else "",
        mode=first.mode if first else "batch",
        usage=usage,
        cost=Cost(batch_usd=batch, realtime_usd=realtime),
        rejected=rejected,
        merged_from=list(tree.leaves),
    )
    out = write_result(output_dir, root_meta, merged, prov)
    for node in [*tree.leaves, *tree.split_nodes]:
        clear_failure(output_dir, node)
    return out


def cost_of(model: ModelInfo, usage: TokenUsage) -> Cost:
    """Price one request's usage (batch rate and real-time equivalent)."""
    return price_usage(model, usage)
