"""Series partitions: one partition per folder under ``<data_dir>/books/``.

The partition key is the slug of the folder name (``Ashen Crown`` → ``ashen_crown``), the same
slug that names the section files, the batch jobs and the ``series`` column in DuckDB.

Why it works this way: docs/architecture.md, "Dagster definitions".
"""

from pathlib import Path

import dagster as dg

from fantasy_kg.domain.errors import UserError
from fantasy_kg.domain.paths import slugify
from fantasy_kg.domain.text.ingest import list_book_files


def discover_series(books_dir: Path) -> list[str]:
    """Slugs of the folders under ``books_dir`` that hold books (``.txt``/``.epub``), sorted.

    Hidden folders, empty folders and names with no letter or digit are ignored rather than
    failing the whole code location. Two folders that slugify to the same key share one
    partition; materializing it then fails with the sectioning step's message asking to rename
    one of them.
    """
    if not books_dir.is_dir():
        return []
    slugs: set[str] = set()
    for child in books_dir.iterdir():
        if not child.is_dir() or child.name.startswith(".") or not list_book_files(child):
            continue
        try:
            slugs.add(slugify(child.name))
        except UserError:
            continue
    return sorted(slugs)


def series_partitions_def(books_dir: Path) -> dg.StaticPartitionsDefinition:
    """One partition per series folder found under ``books_dir`` right now."""
    return dg.StaticPartitionsDefinition(discover_series(books_dir))
