"""Measure the local backend against gold annotations, end to end or extractor-only.

Why it works this way: docs/architecture.md, "The local backend".
"""

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from fantasy_kg.domain.baseline.extractor import extract
from fantasy_kg.domain.baseline.quality import (
    QualityReport,
    SectionOutput,
    load_gold,
    score,
)
from fantasy_kg.domain.catalog import default_model
from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.domain.paths import DATA_DIR_ENV, confined
from fantasy_kg.domain.schemas import (
    ExtractionResult,
    Ontology,
    default_ontology,
    load_ontology,
    parse_extraction,
)
from fantasy_kg.domain.sections import read_sections
from fantasy_kg.nlp.tagger import shared_tagger
from fantasy_kg.pipeline.extraction import run_full
from fantasy_kg.pipeline.sections import build_sections

Mode = Literal["end_to_end", "direct"]
OntologyChoice = Literal["series", "default"]


@contextmanager
def _data_dir_env(path: Path) -> Iterator[None]:
    """Point ``FANTASY_KG_DATA_DIR`` at ``path`` for the duration (the local server's state)."""
    old = os.environ.get(DATA_DIR_ENV)
    os.environ[DATA_DIR_ENV] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(DATA_DIR_ENV, None)
        else:
            os.environ[DATA_DIR_ENV] = old


def _ontology(data_dir: Path, series: str, choice: OntologyChoice) -> Ontology:
    if choice == "default":
        return default_ontology(series)
    path = confined(data_dir, "schemas", f"{series}_schema.json")
    return load_ontology(path) if path.is_file() else default_ontology(series)


def measure(
    series: str,
    *,
    data_dir: Path,
    mode: Mode = "end_to_end",
    ontology: OntologyChoice = "series",
    model: str | None = None,
    max_section_tokens: int | None = None,
    work_dir: Path | None = None,
) -> QualityReport:
    """Run the local backend on a series and score it against its gold file.

    Args:
        series: Series slug (``data/books/<series>``, ``data/gold/<series>.json``).
        data_dir: The data directory holding ``books/``, ``schemas/`` and ``gold/``; only read.
        mode: ``end_to_end`` (sections → local API batch → result files) or ``direct``.
        ontology: ``series`` (the series ontology) or ``default`` (generic, no gazetteer).
        model: Model id sent in the requests; the catalog default when ``None``.
        max_section_tokens: Cap on section size, to measure on many small sections (names
            introduced in one section and used bare in the next); the model's budget by default.
        work_dir: Where sections, jobs, results and the local server's state go; a temporary
            directory (removed afterwards) when ``None``.

    Raises:
        InputFileError: missing books folder or gold file.
    """
    books = confined(data_dir, "books", series)
    if not books.is_dir():
        raise InputFileError(f"books folder not found: {books} (check --series and --data-dir)")
    gold = load_gold(confined(data_dir, "gold", f"{series}.json"))
    onto = _ontology(data_dir, series, ontology)
    model = model or default_model()
    with tempfile.TemporaryDirectory(prefix="fkg-quality-") as tmp:
        work = work_dir or Path(tmp)
        outputs = _run(series, books, work, onto, model, mode, max_section_tokens)
    undirected = [r.name for r in onto.relationship_types if not r.directed]
    return score(outputs, gold, undirected=undirected)


def _run(
    series: str,
    books: Path,
    work: Path,
    onto: Ontology,
    model: str,
    mode: Mode,
    max_section_tokens: int | None,
) -> list[SectionOutput]:
    schemas = work / "schemas"
    schemas.mkdir(parents=True, exist_ok=True)
    ontology_file = schemas / f"{series}_schema.json"
    ontology_file.write_text(json.dumps(onto.model_dump(mode="json"), indent=1), encoding="utf-8")
    sections_dir = work / "sections"
    with _data_dir_env(work):
        build_sections(
            books,
            sections_dir,
            series=series,
            model=model,
            ontology_path=ontology_file,
            max_section_tokens=max_section_tokens,
        )
        sections = read_sections(sections_dir, series)
        if mode == "direct":
            return [
                SectionOutput(
                    text=sec.text,
                    result=parse_extraction(
                        extract(
                            sec.text,
                            onto,
                            file_name=sec.file_name,
                            section_id=sec.section_id,
                            tagger=shared_tagger(),
                        ).model_dump(mode="json"),
                        file_name=sec.file_name,
                        chunk_id=sec.section_id,
                    ).result,
                )
                for sec in sections
            ]
        out_dir = work / "extracted"
        run_full(
            sections_dir,
            out_dir,
            series,
            model,
            jobs_dir=work / "batch_jobs",
            backend="local",
            poll_interval_seconds=0.2,
            max_wait_hours=0.5,
        )
        outputs: list[SectionOutput] = []
        for sec in sections:
            path = out_dir / f"{sec.stem}_extracted.json"
            result = (
                ExtractionResult.model_validate_json(path.read_text(encoding="utf-8"))
                if path.is_file()
                else ExtractionResult()
            )
            outputs.append(SectionOutput(text=sec.text, result=result))
        return outputs
