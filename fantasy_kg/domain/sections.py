"""Section files: ``<slug>_section_NN.txt`` plus ``.meta.json``, the unit of extraction.

This is the contract between sectioning and everything downstream (requests, grounding, the
warehouse, Dagster). Pre-sectioned input in this layout is accepted as it is, so ``books`` and
``input_tokens`` are the only metadata fields a hand-made meta file needs besides ``series`` and
``section``.
"""

import glob
import hashlib
import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.domain.paths import atomic_write_text, confined

SECTION_FILE_RE = re.compile(r"^(?P<slug>[A-Za-z0-9_-]+?)_section_(?P<num>\d+)\.txt$")


class BookSpan(BaseModel):
    """Where a section's text sits in one book: character offsets into the book's text."""

    model_config = ConfigDict(extra="allow")

    book: str = Field(description="Book file name, e.g. 01_the_lantern_road.txt.")
    title: str = Field(default="", description="Book title.")
    start: int = Field(ge=0, description="Offset of the first character in the book text.")
    end: int = Field(ge=0, description="Offset after the last character.")
    section_start: int = Field(default=0, ge=0, description="Offset in the section text.")
    chapters: list[str] = Field(default_factory=list, description="Chapter headings covered.")


class SectionMeta(BaseModel):
    """The ``.meta.json`` of a section."""

    model_config = ConfigDict(extra="allow")

    series: str = Field(description="Series slug (the Dagster partition key).")
    series_name: str = Field(default="", description="Human title of the series.")
    section: int = Field(ge=1, description="1-based section number within the series.")
    books: list[str] = Field(default_factory=list, description="Titles of the books covered.")
    book_files: list[str] = Field(default_factory=list, description="Book file names covered.")
    chapter_start: str = Field(default="", description="First chapter heading in the section.")
    chapter_end: str = Field(default="", description="Last chapter heading in the section.")
    spans: list[BookSpan] = Field(default_factory=list, description="Offsets in each book.")
    input_tokens: int = Field(ge=0, description="Tokens of the section text.")
    token_count_method: str = Field(default="estimate", description="count_tokens | estimate")
    sha256: str = Field(default="", description="sha256 of the section text (UTF-8).")
    chars: int = Field(default=0, ge=0)


class SectionFile(BaseModel):
    """A section loaded from disk: its meta, its text and where it came from."""

    meta: SectionMeta
    text: str
    path: Path

    @property
    def file_name(self) -> str:
        """The ``.txt`` file name: what mentions and evidence point at."""
        return self.path.name

    @property
    def section_id(self) -> str:
        """Zero-padded section number as in the file name (``01``)."""
        m = SECTION_FILE_RE.match(self.path.name)
        return m.group("num") if m else f"{self.meta.section:02d}"

    @property
    def stem(self) -> str:
        """File name without ``.txt``: the default custom_id of its request."""
        return self.path.name[: -len(".txt")]


def text_sha256(text: str) -> str:
    """Hash of a section's text, the content half of the idempotency key."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def section_file_name(slug: str, number: int) -> str:
    """``<slug>_section_NN.txt`` (two digits at least, more when a series needs them)."""
    return f"{slug}_section_{number:02d}.txt"


def write_section(output_dir: Path, slug: str, text: str, meta: SectionMeta) -> Path:
    """Write a section's text and meta atomically, confined to ``output_dir``."""
    path = confined(output_dir, section_file_name(slug, meta.section))
    atomic_write_text(path, text)
    atomic_write_text(path.with_suffix(".meta.json"), meta.model_dump_json(indent=2) + "\n")
    return path


def read_sections(
    input_dir: Path, series: str | None = None, *, load_text: bool = True
) -> list[SectionFile]:
    """Load every section of ``input_dir`` (optionally one series), ordered by series and number.

    With ``series``, only files named ``<series>_section_NN.txt`` are read.

    ``load_text=False`` reads only the meta files (``text`` is left empty; read it from ``path``
    when needed), so a series of hundreds of megabytes need not sit in memory at once.

    Raises:
        InputFileError: missing folder, a ``.txt`` without a readable meta file, or a meta file
            that does not validate; the message names the file and the field.
    """
    if not input_dir.is_dir():
        raise InputFileError(f"sections folder not found: {input_dir} (run `fantasy-kg sections`)")
    found: list[SectionFile] = []
    # A series' section files are named <slug>_section_NN.txt (the guide's layout): with a series
    # given, only its own meta files are opened, so one series costs the same however many other
    # series share the folder.
    pattern = "*_section_*.txt" if series is None else f"{glob.escape(series)}_section_*.txt"
    for path in sorted(input_dir.glob(pattern)):
        m = SECTION_FILE_RE.match(path.name)
        if not m:
            continue
        meta_path = path.with_suffix(".meta.json")
        try:
            meta = SectionMeta.model_validate(json.loads(meta_path.read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise InputFileError(f"{path}: missing meta file {meta_path.name}") from exc
        except json.JSONDecodeError as exc:
            raise InputFileError(
                f"{meta_path}: line {exc.lineno} column {exc.colno}: {exc.msg}"
            ) from exc
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise InputFileError(f"{meta_path}: field {loc}: {err['msg']}") from exc
        if series is not None and meta.series != series and m.group("slug") != series:
            continue
        text = path.read_text(encoding="utf-8") if load_text else ""
        found.append(SectionFile(meta=meta, text=text, path=path))
    found.sort(key=lambda s: (s.meta.series, s.meta.section))
    return found
