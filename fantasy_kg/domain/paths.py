"""Where data lives, and the one function that keeps every write inside it.

Series names, custom_ids, entity ids and file names can come from model output or from folder
names, so every path built from them goes through :func:`confined` (design invariant 6).
"""

import os
import re
import unicodedata
from pathlib import Path

from fantasy_kg.domain.errors import UserError

DATA_DIR_ENV = "FANTASY_KG_DATA_DIR"

_SLUG_RE = re.compile(r"[^a-z0-9]+")


def data_dir() -> Path:
    """Return the data directory: ``$FANTASY_KG_DATA_DIR`` or ``./data``, made absolute."""
    return Path(os.environ.get(DATA_DIR_ENV, "data")).expanduser().resolve()


def books_dir(root: Path | None = None) -> Path:
    """Folder of input series, one sub-folder per series partition."""
    return (root or data_dir()) / "books"


def ontology_dir(root: Path | None = None) -> Path:
    """Folder of ``<series>_schema.json`` ontology files."""
    return (root or data_dir()) / "schemas"


def gold_dir(root: Path | None = None) -> Path:
    """Folder of ``<series>.json`` gold annotations."""
    return (root or data_dir()) / "gold"


def sections_dir(root: Path | None = None) -> Path:
    """Default folder of ``<slug>_section_NN.txt`` files."""
    return (root or data_dir()) / "sections"


def extracted_dir(root: Path | None = None) -> Path:
    """Default folder of ``<custom_id>_extracted.json`` result files."""
    return (root or data_dir()) / "extracted"


def jobs_dir(root: Path | None = None) -> Path:
    """Default folder of batch job files ``<batch_id>.json``."""
    return (root or data_dir()) / "batch_jobs"


def warehouse_path(root: Path | None = None) -> Path:
    """Default DuckDB file, not named like a schema (``kg.duckdb`` would clash with ``kg``)."""
    return (root or data_dir()) / "fantasy_kg.duckdb"


def local_api_dir(root: Path | None = None) -> Path:
    """State of the embedded local Anthropic-compatible backend (batches on disk)."""
    return (root or data_dir()) / "local_api"


def slugify(name: str) -> str:
    """Turn a series or book name into ``[a-z0-9_]+`` (accents folded, everything else to ``_``).

    Raises:
        UserError: if nothing usable is left (e.g. a name made only of punctuation).
    """
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    slug = _SLUG_RE.sub("_", folded.lower()).strip("_")
    if not slug:
        raise UserError(
            f"cannot make a series slug from {name!r}: use letters or digits in the folder name"
        )
    return slug


def confined(base: Path, *parts: str) -> Path:
    """Join ``parts`` under ``base`` and refuse anything that would land outside it.

    Args:
        base: The directory every result must stay inside.
        *parts: Path components, possibly hostile (``..``, absolute paths, NUL bytes).

    Returns:
        The resolved path, guaranteed to be ``base`` or below it.

    Raises:
        UserError: if a part contains NUL, is absolute, or escapes ``base`` (also via symlinks).
    """
    root = base.resolve()
    for part in parts:
        if "\x00" in part:
            raise UserError(f"refusing path component with a NUL byte under {root}")
        if os.path.isabs(part):
            raise UserError(f"refusing absolute path {part!r}: expected a name inside {root}")
    candidate = root.joinpath(*parts).resolve()
    if candidate != root and root not in candidate.parents:
        raise UserError(f"refusing path {'/'.join(parts)!r}: it leaves {root}")
    return candidate


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file and rename, so readers never see half a file.

    The temp file sits in the same directory (rename is only atomic within one filesystem) and is
    fsynced first, so a crash leaves either the old file or the new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
