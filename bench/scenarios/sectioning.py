"""Scenario 1, sectioning: the Oz books and a 10x library, against reading and splitting paragraphs.

Subject: ``fantasy_kg.pipeline.sections.build_sections`` with the default model and the offline
token estimate (no API key), writing section files and meta files as ``fantasy-kg sections``
does. Baseline: the least any sectioner must do, in plain Python: read every file as UTF-8 and
split it into paragraphs at blank lines. Throughput is MB of book text per second.
"""

import json
import re
import shutil
from pathlib import Path
from typing import Any

from bench import corpus
from bench.harness import MB, Case, Context, Skip, Target, Variant

NAME = "sectioning"
TITLE = "Sectioning"
TARGET = Target(metric="throughput", limit=5.0, text="≥ 5 MB/s", higher_is_better=True)
_PARA_RE = re.compile(r"\n[ \t]*\n")


def _oz() -> Path:
    oz = corpus.oz_dir()
    if oz is None:
        raise Skip(
            "shared corpus not found at <repo>/../shared/corpus/oz (set BENCH_OZ_DIR to run it)"
        )
    return oz


def prepare(ctx: Context) -> dict[str, Any]:
    """Copy Oz into the work dir (one series folder) and build the 10x renamed library."""
    oz = _oz()
    base = ctx.scenario_dir(NAME)
    series = corpus.link_series(oz, base / "books" / "oz")
    folders = corpus.make_library(oz, base / "library", copies=10)
    info = {
        "oz_bytes": corpus.folder_bytes(series),
        "oz_books": len(corpus.book_files(series)),
        "library_bytes": sum(corpus.folder_bytes(f) for f in folders),
        "library_books": sum(len(corpus.book_files(f)) for f in folders),
        "library_series": len(folders),
    }
    (base / "prepared.json").write_text(json.dumps(info), encoding="utf-8")
    return info


def cases(ctx: Context) -> list[Case]:
    """Oz, then the 10x library (both in quick mode too: the library is only 34 MB)."""
    info = json.loads((ctx.scenario_dir(NAME) / "prepared.json").read_text(encoding="utf-8"))
    common: dict[str, Any] = {
        "scenario": NAME,
        "unit": "MB",
        "targets": [TARGET],
        "subject_label": "build_sections",
        "baseline_label": "read + split paragraphs",
    }
    return [
        Case(
            name="oz",
            input_desc=f"{info['oz_books']} books, {info['oz_bytes'] / MB:.1f} MB",
            size=info["oz_bytes"] / MB,
            repeats_full=5,
            repeats_quick=2,
            params={"books": "books/oz"},
            **common,
        ),
        Case(
            name="oz ×10 library",
            input_desc=(
                f"{info['library_series']} series, {info['library_books']} books, "
                f"{info['library_bytes'] / MB:.1f} MB"
            ),
            size=info["library_bytes"] / MB,
            repeats_full=3,
            repeats_quick=1,
            params={"books": "library"},
            **common,
        ),
    ]


def _baseline(books: Path) -> dict[str, Any]:
    paragraphs = 0
    for path in sorted(books.rglob("*.txt")):
        text = path.read_text(encoding="utf-8")
        paragraphs += sum(1 for p in _PARA_RE.split(text) if p.strip())
    return {"paragraphs": paragraphs}


def variants(case: Case, ctx: Context) -> dict[str, Variant]:
    """Subject: build_sections into a fresh folder each repeat. Baseline: read and split."""
    base = ctx.scenario_dir(NAME)
    books = base / case.params["books"]
    out = base / "out" / case.params["books"].replace("/", "_")

    # Imports happen here, untimed: a user pays them once per process, not per book.
    from fantasy_kg.domain.catalog import default_model
    from fantasy_kg.pipeline.sections import build_sections

    def setup() -> None:
        shutil.rmtree(out, ignore_errors=True)

    def subject(_: None) -> dict[str, Any]:
        summary = build_sections(books, out, model=default_model())
        return {
            "model": summary.model,
            "series": len(summary.series),
            "books": summary.books,
            "sections": summary.sections,
            "input_tokens": summary.input_tokens,
        }

    return {
        "subject": Variant(run=subject, setup=setup, label=case.subject_label),
        "baseline": Variant(run=lambda _: _baseline(books), label=case.baseline_label),
    }
