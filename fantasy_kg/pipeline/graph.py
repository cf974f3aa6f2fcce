"""Pipeline step ``load``: section files + result files (+ job files) -> graph -> DuckDB.

Shared by ``fantasy-kg load`` and the Dagster ``knowledge_graph`` asset. Files are read here
(the domain only sees parsed objects): sections with :func:`read_sections`, result files one at a
time in section order (so a large series is never fully in memory as pydantic objects), job files
as plain JSON. :func:`load_series_from_files` then builds the graph and replaces the series' rows
in one transaction. :func:`run_sql` is the read side used by ``fantasy-kg sql``.
"""

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fantasy_kg.domain import paths
from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.domain.graph.build import (
    GraphConfig,
    InputFailure,
    ResultInput,
    build_graph,
)
from fantasy_kg.domain.graph.models import KnowledgeGraph
from fantasy_kg.domain.graph.provenance import (
    JobFailure,
    JobInfo,
    Provenance,
    RequestRecord,
    parse_failure,
    parse_job,
    parse_request_provenance,
)
from fantasy_kg.domain.schemas import ExtractionResult, Ontology, default_ontology, load_ontology
from fantasy_kg.domain.sections import SectionFile, read_sections
from fantasy_kg.domain.story import ChapterRow, chapter_rows
from fantasy_kg.llm.jobs import JobStore
from fantasy_kg.llm.results import series_record_files
from fantasy_kg.warehouse.load import (
    LockWaitReport,
    Progress,
    WarehouseError,
    connect,
    load_series,
    row_counts,
    run_query,
    writer,
)

log = logging.getLogger(__name__)

RESULT_SUFFIX = "_extracted.json"
PROVENANCE_DIR = "_provenance"  # written by fantasy_kg.llm.results next to each result
FAILURES_DIR = "_failures"
_CUSTOM_ID_RE = re.compile(r"^(?P<slug>[A-Za-z0-9_-]+?)_section_(?P<num>\d+)(?:_[ab])*$")


class NoResultsError(InputFileError):
    """A series has sections but no result files yet (extraction not run or not retrieved)."""


PhaseProgress = Callable[[str, int, int], None]
"""Progress callback ``(phase, done, total)``; phases ``read`` (result files), ``load`` (tables)."""


@dataclass(frozen=True)
class LoadSummary:
    """What a load did, for the CLI's JSON output and Dagster metadata."""

    series: str
    db_path: str
    ontology_version: str
    sections: int
    result_files: int
    entities: int
    relationships: int
    mentions: int
    evidence: int
    grounding_rate: float
    mention_grounding_rate: float
    evidence_grounding_rate: float
    orphan_relationships: int
    ungrounded_relationships: int
    out_of_ontology_relationships: int
    pending_proposals: int
    unresolved_failures: int
    merges: int
    kept_apart: int
    row_counts: dict[str, int] = field(default_factory=dict)
    run_id: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


def list_series(input_dir: Path) -> list[str]:
    """Series slugs that have section files in ``input_dir``, sorted."""
    sections = read_sections(input_dir, load_text=False)
    return sorted({s.meta.series for s in sections})


def resolve_ontology(series: str, ontology_path: Path | None = None) -> Ontology:
    """The explicit ontology file, else ``<data>/schemas/<series>_schema.json``, else the default.

    Raises:
        InputFileError: an explicit or found ontology file is missing or malformed.
    """
    if ontology_path is not None:
        return load_ontology(ontology_path)
    candidate = paths.confined(paths.ontology_dir(), f"{series}_schema.json")
    if candidate.is_file():
        return load_ontology(candidate)
    return default_ontology(series)


def _json_files(files: Iterable[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every JSON object among ``files``; unreadable files are skipped with a debug log.

    Job and provenance files are written by the batch client and evolve with it: a file from a
    newer (or older) version must never block a load.
    """
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            log.debug("skipping unreadable file %s", path)
            continue
        if isinstance(data, dict):
            yield path, data


def read_provenance(
    jobs_dir: Path | None,
    series: str,
    custom_ids: set[str],
    extracted_dir: Path | None = None,
) -> Provenance:
    """Job files, per-result provenance files and open failures of ``series``.

    Args:
        jobs_dir: Job files (default ``<data>/batch_jobs``); a job belongs to the series by its
            ``series`` field or by the custom_ids it contains.
        series: Series slug.
        custom_ids: The series' section stems (default custom_ids).
        extracted_dir: Results folder whose ``_provenance/`` and ``_failures/`` the batch client
            writes (batch, model, prompt version and usage per result; still-missing requests).
            Default ``<data>/extracted``, so that every caller (the graph load, the cost summary)
            sees the same real-time costs, which exist in no job file.
    """
    folder = jobs_dir if jobs_dir is not None else paths.jobs_dir()
    jobs: list[JobInfo] = []
    # Only this series' files are opened: job files through the job index, records by name.
    for path, data in _json_files(JobStore(folder).job_files(series)):
        if data.get("ownership") == "released":
            continue  # someone else's batch, adopted by mistake and let go: never counted
        job = parse_job(data, job_file=str(path))
        if job is not None and (
            job.series == series or any(c in custom_ids for c in job.custom_ids)
        ):
            jobs.append(job)

    def ours(cid: str, record_series: str) -> bool:
        base = cid[:-2] if cid[-2:] in ("_a", "_b") else cid
        return record_series == series or cid in custom_ids or base in custom_ids

    requests: list[RequestRecord] = []
    open_failures: list[JobFailure] = []
    results = extracted_dir if extracted_dir is not None else paths.extracted_dir()
    for _, data in _json_files(series_record_files(results / PROVENANCE_DIR, series, custom_ids)):
        req = parse_request_provenance(data)
        if req is not None and ours(req.custom_id, req.series):
            requests.append(req)
    for _, data in _json_files(series_record_files(results / FAILURES_DIR, series, custom_ids)):
        failure = parse_failure(data)
        if failure is not None and ours(failure.custom_id, str(data.get("series") or "")):
            open_failures.append(failure)
    return Provenance(jobs=jobs, requests=requests, open_failures=open_failures)


def _result_files(extracted_dir: Path, series: str, custom_ids: set[str]) -> list[Path]:
    """The series' result files, found by name (other series' files are not even listed twice).

    Raises:
        InputFileError: the results folder does not exist.
    """
    if not extracted_dir.is_dir():
        raise InputFileError(
            f"results folder not found: {extracted_dir} (run `fantasy-kg extract-batch` first "
            "or pass --extracted-dir)"
        )
    return series_record_files(extracted_dir, series, custom_ids, suffix=RESULT_SUFFIX)


def _belongs(result: ExtractionResult, custom_id: str, files: set[str], stems: set[str]) -> bool:
    base = custom_id
    while base[-2:] in ("_a", "_b"):
        base = base[:-2]
    if custom_id in stems or base in stems:
        return True
    for ent in result.entities:
        for m in ent.mentions:
            if m.file_name in files:
                return True
    return any(ev.file_name in files for rel in result.relationships for ev in rel.evidence)


@dataclass
class ResultReader:
    """Iterates a series' result files in section order and records the unusable ones."""

    extracted_dir: Path
    series: str
    sections: Sequence[SectionFile]
    extra_custom_ids: set[str] = field(default_factory=set)
    progress: PhaseProgress | None = None
    failures: list[InputFailure] = field(default_factory=list)
    files_read: int = 0

    def _candidates(self) -> list[tuple[int, str, Path]]:
        stems = {s.stem: i for i, s in enumerate(self.sections)}
        out = []
        wanted = set(stems) | self.extra_custom_ids
        for path in _result_files(self.extracted_dir, self.series, wanted):
            cid = path.name[: -len(RESULT_SUFFIX)]
            m = _CUSTOM_ID_RE.match(cid)
            if m and m.group("slug") != self.series and cid not in self.extra_custom_ids:
                continue  # another series' result
            base = cid
            while base[-2:] in ("_a", "_b"):
                base = base[:-2]
            out.append((stems.get(base, len(stems)), cid, path))
        out.sort()
        return out

    def __iter__(self) -> Iterator[ResultInput]:
        files = {s.file_name for s in self.sections}
        stems = {s.stem for s in self.sections} | self.extra_custom_ids
        candidates = self._candidates()
        for n, (_, cid, path) in enumerate(candidates, start=1):
            result = self._parse(cid, path)
            if self.progress is not None:
                self.progress("read", n, len(candidates))
            if result is None:
                continue
            if not _belongs(result, cid, files, stems):
                continue
            self.files_read += 1
            yield ResultInput(custom_id=cid, result=result, source=str(path))

    def _parse(self, cid: str, path: Path) -> ExtractionResult | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._fail(cid, "invalid_json", f"{path.name}: {exc}")
            return None
        try:
            return ExtractionResult.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            self._fail(cid, "schema_mismatch", f"{path.name}: field {loc}: {err['msg']}")
            return None

    def _fail(self, cid: str, kind: str, message: str) -> None:
        base = cid
        while base[-2:] in ("_a", "_b"):
            base = base[:-2]
        if base in {s.stem for s in self.sections} or cid in self.extra_custom_ids:
            self.failures.append(
                InputFailure(
                    custom_id=cid, stage="result_file", failure_type=kind, message=message[:500]
                )
            )


def build_series_graph(
    input_dir: Path,
    extracted_dir: Path,
    series: str,
    *,
    jobs_dir: Path | None = None,
    ontology_path: Path | None = None,
    config: GraphConfig | None = None,
    progress: PhaseProgress | None = None,
) -> KnowledgeGraph:
    """Read a series' files and build its graph (no database involved).

    Raises:
        InputFileError: no sections of ``series`` in ``input_dir``, no results folder, or a
            malformed ontology.
    """
    sections = read_sections(input_dir, series, load_text=False)
    if not sections:
        raise InputFileError(
            f"no sections of series {series!r} in {input_dir} (run `fantasy-kg sections` or "
            "check --series)"
        )
    ontology = resolve_ontology(series, ontology_path)
    stems = {s.stem for s in sections}
    provenance = read_provenance(jobs_dir, series, stems, extracted_dir)
    job_cids = {c for j in provenance.jobs for c in j.custom_ids}
    reader = ResultReader(
        extracted_dir, series, sections, extra_custom_ids=job_cids, progress=progress
    )
    graph = build_graph(
        sections,
        reader,
        ontology,
        provenance,
        series=series,
        input_failures=reader.failures,
        config=config,
    )
    return graph


class MixedBackendsError(InputFileError):
    """A series' results come from more than one backend and mixing was not asked for."""


def series_chapters(input_dir: Path, series: str) -> list[ChapterRow]:
    """The chapter headings of a series' books, found in its section files (table ``chapters``)."""
    return chapter_rows(series, [(s.meta, s.text) for s in read_sections(input_dir, series)])


def load_series_from_files(
    input_dir: Path,
    extracted_dir: Path,
    series: str,
    db_path: Path,
    *,
    jobs_dir: Path | None = None,
    ontology_path: Path | None = None,
    config: GraphConfig | None = None,
    progress: PhaseProgress | None = None,
    allow_mixed_backends: bool = False,
    lock_wait: float | None = None,
    on_lock_wait: LockWaitReport | None = None,
) -> LoadSummary:
    """Build a series' graph from files and replace its rows in the warehouse.

    A graph merges every section's result, so results from two backends (the local baseline's
    and Claude's) would make one graph of two qualities; that load is refused unless
    ``allow_mixed_backends``. Every fact row keeps the backend and model of its result.

    Args:
        input_dir: Folder of ``<series>_section_NN.txt`` + ``.meta.json``.
        extracted_dir: Folder of ``<custom_id>_extracted.json``.
        series: Series slug.
        db_path: DuckDB file (created and migrated if needed).
        jobs_dir: Folder of batch job files (default ``<data>/batch_jobs``; optional).
        ontology_path: Ontology file (default ``<data>/schemas/<series>_schema.json``, else the
            generic default ontology).
        config: Grounding thresholds.
        progress: ``(phase, done, total)`` callback for progress bars.
        allow_mixed_backends: Load even when the results were made by different backends.
        lock_wait: Seconds to wait for another process's DuckDB lock (default 120 s or
            ``$FANTASY_KG_LOCK_WAIT_SECONDS``).
        on_lock_wait: Progress report while waiting (default: a warning line on stderr).

    Returns:
        Counts, grounding rates, orphans, pending proposals and the series' rows per table.

    Raises:
        InputFileError: missing sections or results folder, malformed ontology;
            :class:`NoResultsError` when the series has no result files at all.
        WarehouseError: the database cannot be opened (e.g. locked by another process).
    """
    graph = build_series_graph(
        input_dir,
        extracted_dir,
        series,
        jobs_dir=jobs_dir,
        ontology_path=ontology_path,
        config=config,
        progress=progress,
    )
    if graph.stats.result_files == 0 and all(f.stage == "missing" for f in graph.failures):
        raise NoResultsError(
            f"no result files of series {series!r} in {extracted_dir}: run the extraction first"
        )
    backends: dict[str, int] = {}
    for row in graph.sections:
        if row.backend:
            backends[row.backend] = backends.get(row.backend, 0) + 1
    if len(backends) > 1 and not allow_mixed_backends:
        mix = ", ".join(f"{n} sections by {b}" for b, n in sorted(backends.items()))
        raise MixedBackendsError(
            f"series {series!r} has results from more than one backend ({mix}): re-run the "
            "extraction with one backend (fantasy-kg run --series ... --force), or pass "
            "--allow-mixed-backends to load them together"
        )
    load_progress: Progress | None = None
    if progress is not None:
        phase_progress = progress

        def load_progress(table: str, done: int, total: int) -> None:
            phase_progress("load", done, total)

    with writer(db_path, series, lock_wait=lock_wait, on_wait=on_lock_wait) as conn:
        result = load_series(
            conn,
            graph,
            input_dir=input_dir,
            extracted_dir=extracted_dir,
            progress=load_progress,
            story={"chapters": series_chapters(input_dir, series)},
        )
        counts = row_counts(conn, series)
    s = graph.stats
    return LoadSummary(
        series=series,
        db_path=str(db_path),
        ontology_version=graph.ontology_version,
        sections=s.sections,
        result_files=s.result_files,
        entities=s.entities,
        relationships=s.relationships,
        mentions=s.mentions,
        evidence=s.evidence,
        grounding_rate=round(s.grounding_rate, 4),
        mention_grounding_rate=round(s.mention_grounding_rate, 4),
        evidence_grounding_rate=round(s.evidence_grounding_rate, 4),
        orphan_relationships=s.orphan_relationships,
        ungrounded_relationships=s.ungrounded_relationships,
        out_of_ontology_relationships=s.out_of_ontology_relationships,
        pending_proposals=s.proposals,
        unresolved_failures=s.failures,
        merges=s.merges,
        kept_apart=s.kept_apart,
        row_counts=counts,
        run_id=result.run_id,
        seconds=result.seconds,
    )


def run_sql(
    db_path: Path, sql: str, params: Sequence[Any] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one SQL statement against the warehouse.

    The database is opened read-only, so queries work next to other readers (a second CLI, the
    Dagster UI) and cannot change anything by accident; a statement that needs to write (a user's
    ``CREATE VIEW``) is retried on a read-write connection.

    Returns:
        Column names and rows.

    Raises:
        WarehouseError: missing database, locked file or a SQL error, in one line.
    """
    if not sql.strip():
        raise WarehouseError("empty SQL: pass a statement, e.g. fantasy-kg sql 'SELECT 1'")
    conn = connect(db_path, read_only=True)
    try:
        return run_query(conn, sql, params)
    except WarehouseError as exc:
        if "read-only" not in exc.message.lower():
            raise
    finally:
        conn.close()
    conn = connect(db_path)
    try:
        return run_query(conn, sql, params)
    finally:
        conn.close()
