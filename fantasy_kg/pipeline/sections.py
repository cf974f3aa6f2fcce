"""Pipeline step ``sections``: books folders in, ``<slug>_section_NN.txt`` + ``.meta.json`` out.

Shared by ``fantasy-kg sections`` and the Dagster ``book_sections`` asset. Every series is read,
validated and planned before the first file is written, so a bad book, a malformed ontology or an
impossible budget leaves the output folder exactly as it was. Re-running on unchanged books writes
byte-identical files (meta files hold no timestamps) and removes section files of the series
numbered beyond the new count, so a series that shrinks leaves no stale sections behind.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fantasy_kg.domain import answer as answer_sizing
from fantasy_kg.domain.catalog import ModelInfo, get_model
from fantasy_kg.domain.errors import ConfigError, InputFileError
from fantasy_kg.domain.paths import ontology_dir, slugify
from fantasy_kg.domain.schemas import Ontology, default_ontology, load_ontology
from fantasy_kg.domain.sections import SECTION_FILE_RE, write_section
from fantasy_kg.domain.text.ingest import Book, list_book_files, read_book
from fantasy_kg.domain.text.sectioning import SeriesPlan, plan_sections
from fantasy_kg.domain.text.tokens import EstimateCounter, TokenCounter

DEFAULT_MAX_TOKENS = answer_sizing.DEFAULT_MAX_TOKENS
"""Default ``max_tokens`` for extraction requests (see :mod:`fantasy_kg.domain.answer`)."""

Progress = Callable[[str, int, int], None]
"""Progress callback ``(phase, done, total)``; phases ``read``, ``plan``, ``write``."""


@dataclass(frozen=True)
class SeriesSource:
    """A series folder found under the books folder."""

    slug: str
    folder: Path
    files: tuple[Path, ...]


@dataclass(frozen=True)
class SeriesSummary:
    """What was written for one series."""

    series: str
    series_name: str
    books: int
    sections: int
    input_tokens: int
    prefix_tokens: int
    token_count_method: str
    ontology: str
    files: tuple[Path, ...]
    removed: tuple[Path, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class SectionsSummary:
    """Result of :func:`build_sections`."""

    output_dir: Path
    model: str
    max_tokens: int
    series: tuple[SeriesSummary, ...] = field(default=())

    @property
    def books(self) -> int:
        """Books read, all series."""
        return sum(s.books for s in self.series)

    @property
    def sections(self) -> int:
        """Sections written, all series."""
        return sum(s.sections for s in self.series)

    @property
    def input_tokens(self) -> int:
        """Tokens of all section texts, all series."""
        return sum(s.input_tokens for s in self.series)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (paths as strings), for ``--json`` and Dagster metadata."""
        return {
            "output_dir": str(self.output_dir),
            "model": self.model,
            "max_tokens": self.max_tokens,
            "books": self.books,
            "sections": self.sections,
            "input_tokens": self.input_tokens,
            "series": [
                {
                    "series": s.series,
                    "series_name": s.series_name,
                    "books": s.books,
                    "sections": s.sections,
                    "input_tokens": s.input_tokens,
                    "prefix_tokens": s.prefix_tokens,
                    "token_count_method": s.token_count_method,
                    "ontology": s.ontology,
                    "files": [p.name for p in s.files],
                    "removed": [p.name for p in s.removed],
                    "warnings": list(s.warnings),
                }
                for s in self.series
            ],
        }


def default_max_tokens(model: ModelInfo) -> int:
    """:data:`DEFAULT_MAX_TOKENS`, capped at the model's output limit."""
    return answer_sizing.default_max_tokens(model)


def section_cap(
    model: ModelInfo,
    *,
    max_tokens: int,
    effort: str | None = None,
    output_ratio: float = answer_sizing.DEFAULT_OUTPUT_RATIO,
    max_section_tokens: int | None = None,
) -> int:
    """The text-token cap of each section: the user's, else the default cut to fit the answer.

    An explicit ``max_section_tokens`` is taken as given, so that a plan whose answers cannot fit
    is refused by the pre-flight with the fix, rather than silently re-cut. The default is
    :data:`~fantasy_kg.domain.answer.DEFAULT_MAX_SECTION_TOKENS`, lowered until the expected
    answer (output ratio x section + thinking for the effort, with the margin) fits ``max_tokens``.

    Raises:
        ConfigError: no section size leaves room for the answer (``max_tokens`` too small).
    """
    if max_section_tokens is not None:
        return max_section_tokens
    effort_run = answer_sizing.effective_effort(model, answer_sizing.request_effort(model, effort))
    fit = answer_sizing.max_section_tokens_for_answer(
        model, max_tokens=max_tokens, effort=effort_run, output_ratio=output_ratio
    )
    if fit < MIN_SECTION_FOR_ANSWER:
        raise ConfigError(
            f"{model.id}: max_tokens {max_tokens:,} leaves no room for an answer at effort "
            f"{effort_run or 'none'} (output ratio {output_ratio:g}); raise --max-tokens "
            "or lower --effort"
        )
    return min(answer_sizing.DEFAULT_MAX_SECTION_TOKENS, fit)


MIN_SECTION_FOR_ANSWER = 1000
"""Below this many text tokens per section, sectioning would shred the book: refuse instead."""


def discover_series(books_dir: Path, series: str | None = None) -> list[SeriesSource]:
    """Find the series under ``books_dir``: one per sub-folder holding books.

    A ``books_dir`` that directly holds ``.txt``/``.epub`` files is itself one series, named
    after the folder.

    Raises:
        InputFileError: missing folder, or no books anywhere.
        ConfigError: ``series`` matches none of the folders (the message lists them).
    """
    if not books_dir.is_dir():
        raise InputFileError(
            f"books folder not found: {books_dir} (create it with one sub-folder per series)"
        )
    direct = list_book_files(books_dir)
    if direct:
        sources = [SeriesSource(slugify(books_dir.name), books_dir, tuple(direct))]
    else:
        sources = []
        for folder in sorted(p for p in books_dir.iterdir() if p.is_dir()):
            if folder.name.startswith("."):
                continue
            files = list_book_files(folder)
            if files:
                sources.append(SeriesSource(slugify(folder.name), folder, tuple(files)))
    if not sources:
        raise InputFileError(f"no .txt or .epub books in {books_dir} or its sub-folders")
    root = books_dir.resolve()
    for src in sources:
        for path in (src.folder, *src.files):
            _check_inside(root, path)
    seen: dict[str, Path] = {}
    for src in sources:
        if src.slug in seen:
            raise ConfigError(
                f"series folders {seen[src.slug].name!r} and {src.folder.name!r} both become "
                f"slug {src.slug!r}; rename one"
            )
        seen[src.slug] = src.folder
    if series is None:
        return sources
    wanted = [s for s in sources if series in (s.slug, s.folder.name)]
    if not wanted:
        known = ", ".join(s.slug for s in sources)
        raise ConfigError(f"series {series!r} not found in {books_dir}; known series: {known}")
    return wanted


def _check_inside(root: Path, path: Path) -> None:
    """Refuse a book or series folder that is a symlink leading out of the books folder.

    A planted link must not send a file from elsewhere on the machine to the API; links that stay
    inside the books folder are fine.
    """
    target = path.resolve()
    if target != root and root not in target.parents:
        raise InputFileError(
            f"refusing symlink {path}: it points outside the books folder {root}; "
            "copy the book into the folder instead"
        )


def find_ontology(books_dir: Path, slug: str) -> Path | None:
    """The ontology file of a series, if any: ``<slug>_schema.json`` next to the books folder.

    Looks in ``books_dir/../schemas`` (the data layout), ``books_dir/../../schemas`` (when
    ``books_dir`` is one series' folder) and the data directory's ``schemas/``.
    """
    name = f"{slug}_schema.json"
    for folder in (
        books_dir.parent / "schemas",
        books_dir.parent.parent / "schemas",
        ontology_dir(),
    ):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _series_name(folder: Path, ontology: Ontology | None) -> str:
    """The ontology's series title, else the folder name in title case (``ashen_crown``)."""
    if ontology is not None and ontology.name.strip():
        return ontology.name.strip()
    return " ".join(w.capitalize() for w in folder.name.replace("_", " ").replace("-", " ").split())


def build_sections(
    books_dir: Path,
    output_dir: Path,
    *,
    series: str | None = None,
    model: str,
    max_tokens: int | None = None,
    max_section_tokens: int | None = None,
    effort: str | None = None,
    output_ratio: float = answer_sizing.DEFAULT_OUTPUT_RATIO,
    ontology_path: Path | None = None,
    counter: TokenCounter | None = None,
    progress: Progress | None = None,
) -> SectionsSummary:
    """Read, validate, plan and write the sections of one series or all of them.

    Args:
        books_dir: A folder of series folders, or one series folder.
        output_dir: Where section files go (created if needed, only once all checks pass).
        series: Slug or folder name of one series; all series when ``None``.
        model: Model id or alias; its window, output cap and tokenizer decide the budget.
        max_tokens: ``max_tokens`` of the extraction requests (:func:`default_max_tokens`).
        max_section_tokens: Cap on each section's text tokens; by default
            :data:`~fantasy_kg.domain.answer.DEFAULT_MAX_SECTION_TOKENS`, lowered so that the
            expected answer fits ``max_tokens`` (:func:`section_cap`).
        effort: ``output_config.effort`` the extraction will use (thinking needs room too).
        output_ratio: Expected answer tokens per section token.
        ontology_path: Ontology file for every selected series; by default each series uses
            ``<slug>_schema.json`` (:func:`find_ontology`) or the generic default ontology.
        counter: Token counter; the offline estimate when ``None``.
        progress: Optional ``(phase, done, total)`` callback.

    Returns:
        A summary per series (books, sections, tokens, files written and removed, warnings).

    Raises:
        UserError: any bad input (unknown model, missing folder, unreadable book, malformed
            ontology, impossible budget); nothing is written then.
    """
    info = get_model(model)
    max_tokens = default_max_tokens(info) if max_tokens is None else max_tokens
    answer_sizing.check_output_ratio(output_ratio)
    cap = section_cap(
        info,
        max_tokens=max_tokens,
        effort=effort,
        output_ratio=output_ratio,
        max_section_tokens=max_section_tokens,
    )
    counter = counter or EstimateCounter()
    sources = discover_series(books_dir, series)

    total_books = sum(len(s.files) for s in sources)
    loaded: list[tuple[SeriesSource, list[Book], Ontology, str]] = []
    done = 0
    for src in sources:
        path = ontology_path or find_ontology(books_dir, src.slug)
        ontology = load_ontology(path) if path else default_ontology(src.slug)
        books: list[Book] = []
        for file in src.files:
            books.append(read_book(file))
            done += 1
            if progress:
                progress("read", done, total_books)
        loaded.append((src, books, ontology, str(path) if path else "default"))

    plans: list[tuple[SeriesPlan, str]] = []
    for i, (src, books, ontology, onto_name) in enumerate(loaded, start=1):
        plan = plan_sections(
            books,
            slug=src.slug,
            series_name=_series_name(src.folder, None if onto_name == "default" else ontology),
            ontology=ontology,
            model=info,
            max_tokens=max_tokens,
            max_section_tokens=cap,
            counter=counter,
        )
        plans.append((plan, onto_name))
        if progress:
            progress("plan", i, len(loaded))

    total_sections = sum(len(p.sections) for p, _ in plans)
    written = 0
    summaries: list[SeriesSummary] = []
    for plan, onto_name in plans:
        files: list[Path] = []
        for section in plan.sections:
            files.append(write_section(output_dir, plan.slug, section.text, plan.meta(section)))
            written += 1
            if progress:
                progress("write", written, total_sections)
        removed = _remove_stale(output_dir, plan.slug, len(plan.sections))
        notes = tuple(w for b in plan.books for w in b.warnings)
        summaries.append(
            SeriesSummary(
                series=plan.slug,
                series_name=plan.series_name,
                books=len(plan.books),
                sections=len(plan.sections),
                input_tokens=plan.input_tokens,
                prefix_tokens=plan.prefix_tokens,
                token_count_method=plan.token_count_method,
                ontology=onto_name,
                files=tuple(files),
                removed=tuple(removed),
                warnings=notes,
            )
        )
    return SectionsSummary(
        output_dir=output_dir, model=info.id, max_tokens=max_tokens, series=tuple(summaries)
    )


def _remove_stale(output_dir: Path, slug: str, count: int) -> list[Path]:
    """Delete ``<slug>_section_NN`` files numbered above ``count`` (or not named canonically)."""
    removed: list[Path] = []
    for path in sorted(output_dir.glob(f"{slug}_section_*.txt")):
        m = SECTION_FILE_RE.match(path.name)
        if not m or m.group("slug") != slug:
            continue
        number = int(m.group("num"))
        if number <= count and m.group("num") == f"{number:02d}":
            continue
        for stale in (path, path.with_suffix(".meta.json")):
            if stale.exists():
                stale.unlink()
                removed.append(stale)
    return removed
