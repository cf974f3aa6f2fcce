"""Crafted series for the graph and warehouse tests: books, sections with spans, result files.

The texts are small but contain every case the knowledge graph must handle: aliases across books,
two men called Tomas, a relationship to someone never extracted, a quote that is not in the text,
and a quote whose typographic quotes and line breaks differ from the book.
"""

import json
from pathlib import Path

from fantasy_kg.domain.graph.build import ResultInput
from fantasy_kg.domain.schemas import (
    CanonicalRule,
    Confidence,
    DoNotMergeRule,
    EntityInstance,
    Evidence,
    ExtractionResult,
    Mention,
    Ontology,
    RelationshipInstance,
    SchemaUpdateProposal,
    default_ontology,
)
from fantasy_kg.domain.sections import (
    BookSpan,
    SectionFile,
    SectionMeta,
    read_sections,
    text_sha256,
    write_section,
)

SERIES = "river_tales"

BOOK1 = (
    "Chapter 1\n\n"
    "Tomas Reed, whom the bargemen called Longpole, poled the ferry across the Sallow. "
    "Mira Thorne watched him from the landing.\n\n"
    "\u201cTomas is late again,\u201d said Mira, and she lit the\nlanterns of Dunmere.\n\n"
    "Chapter 2\n\n"
    "Mira Thorne was the daughter of Aldous Thorne. Tomas Reed lived in Dunmere.\n"
)
BOOK2 = (
    "Chapter 1\n\n"
    "Tomas Vell rode into Greywatch with the prince's banner. Longpole waited at the landing "
    "for the herald.\n\n"
    "Vell was the herald of Prince Edric. \u201cI serve the prince,\u201d said Tomas.\n\n"
    "Chapter 2\n\n"
    "Tomas Vell was the sworn enemy of Tomas Reed.\n"
)
BOOKS = [
    ("01_the_ferry.txt", "The Ferry", BOOK1),
    ("02_the_herald.txt", "The Herald", BOOK2),
]
# Section 1: book 1 up to chapter 2; section 2: the rest of book 1 and the start of book 2
# (a section that spans two books); section 3: the rest of book 2.
_CUT1 = BOOK1.index("Chapter 2")
_CUT2 = BOOK2.index("Vell was the herald")
SECTION_PARTS = [
    [(0, 0, _CUT1)],
    [(0, _CUT1, len(BOOK1)), (1, 0, _CUT2)],
    [(1, _CUT2, len(BOOK2))],
]


def crafted_ontology(*, rules: bool = True) -> Ontology:
    """The default ontology plus (optionally) canonical rules and a do-not-merge rule."""
    onto = default_ontology(SERIES)
    if not rules:
        return onto
    return onto.model_copy(
        update={
            "canonical_rules": [
                CanonicalRule(
                    canonical_id="mira_thorne",
                    canonical_name="Mira Thorne",
                    entity_type="Character",
                    aliases=["Mira", "the Lantern Maid"],
                )
            ],
            "do_not_merge": [
                DoNotMergeRule(ids=["tomas_reed", "tomas_vell"], reason="two men named Tomas")
            ],
        }
    )


def write_books(books_dir: Path) -> None:
    """Write the two book files (for tests that check offsets against the books)."""
    folder = books_dir / SERIES
    folder.mkdir(parents=True, exist_ok=True)
    for name, _, text in BOOKS:
        (folder / name).write_text(text, encoding="utf-8")


def write_series_sections(input_dir: Path, series: str = SERIES) -> list[SectionFile]:
    """Write the crafted sections (text + meta with spans) and read them back."""
    for number, parts in enumerate(SECTION_PARTS, start=1):
        text = ""
        spans = []
        for book_index, start, end in parts:
            if text:
                text += "\n\n"
            name, title, body = BOOKS[book_index]
            spans.append(
                BookSpan(book=name, title=title, start=start, end=end, section_start=len(text))
            )
            text += body[start:end]
        meta = SectionMeta(
            series=series,
            section=number,
            books=list(dict.fromkeys(s.title for s in spans)),
            book_files=list(dict.fromkeys(s.book for s in spans)),
            spans=spans,
            input_tokens=len(text) // 4,
            sha256=text_sha256(text),
            chars=len(text),
        )
        write_section(input_dir, series, text, meta)
    return read_sections(input_dir, series)


def entity(
    file_name: str,
    entity_id: str,
    name: str,
    *surfaces: str,
    etype: str = "Character",
    aliases: tuple[str, ...] = (),
    attributes: dict[str, str] | None = None,
) -> EntityInstance:
    """An entity instance of one section with the given mention surfaces."""
    chunk = file_name.rsplit("_", 1)[-1].removesuffix(".txt")
    return EntityInstance(
        id=entity_id,
        type=etype,
        name=name,
        aliases=list(aliases),
        attributes=attributes or {},
        mentions=[
            Mention(file_name=file_name, chunk_id=chunk, text=s) for s in surfaces or (name,)
        ],
        confidence=Confidence(score=0.9),
    )


def relation(
    file_name: str, source: str, rtype: str, target: str, *quotes: str, confidence: float = 0.8
) -> RelationshipInstance:
    """A relationship instance with its evidence quotes."""
    chunk = file_name.rsplit("_", 1)[-1].removesuffix(".txt")
    return RelationshipInstance(
        source=source,
        target=target,
        type=rtype,
        description=f"{source} {rtype} {target}",
        evidence=[Evidence(quote=q, file_name=file_name, chunk_id=chunk) for q in quotes],
        confidence=Confidence(score=confidence),
    )


def crafted_results(series: str = SERIES) -> list[ResultInput]:
    """One result per section, written the way a model answers (ids per section, aliases)."""
    f1, f2, f3 = (f"{series}_section_0{i}.txt" for i in (1, 2, 3))
    r1 = ExtractionResult(
        entities=[
            entity(f1, "tomas_reed", "Tomas Reed", "Tomas Reed", aliases=("Longpole", "Tomas")),
            entity(f1, "mira", "Mira", "Mira"),
            entity(f1, "mira_thorne", "Mira Thorne", "Mira Thorne"),
            entity(f1, "tomas", "Tomas", "Tomas"),
            entity(f1, "dunmere", "Dunmere", etype="Location"),
            entity(f1, "sallow", "the Sallow", "Sallow", etype="Location"),
        ],
        relationships=[
            # Typographic quotes and a line break in the book; straight quotes and a space here.
            relation(
                f1,
                "mira",
                "LIVES_IN",
                "dunmere",
                '"Tomas is late again," said Mira, and she lit the lanterns of Dunmere.',
            ),
            # A quote that is nowhere in the text: kept, flagged not_found.
            relation(f1, "tomas_reed", "ENEMY_OF", "mira_thorne", "Tomas cursed Mira by name."),
        ],
    )
    r2 = ExtractionResult(
        entities=[
            entity(f2, "mira_thorne", "Mira Thorne", "Mira Thorne"),
            entity(f2, "tomas_reed", "Tomas Reed", "Tomas Reed"),
            entity(f2, "dunmere", "Dunmere", etype="Location"),
            entity(f2, "tomas_vell", "Tomas Vell", "Tomas Vell", aliases=("Tomas", "Vell")),
            entity(f2, "greywatch", "Greywatch", etype="Location"),
            entity(f2, "longpole", "Longpole", "Longpole"),
        ],
        relationships=[
            # aldous_thorne is never extracted anywhere: an orphan endpoint.
            relation(
                f2,
                "aldous_thorne",
                "PARENT_OF",
                "mira_thorne",
                "Mira Thorne was the daughter of Aldous Thorne.",
            ),
            relation(f2, "tomas_reed", "LIVES_IN", "dunmere", "Tomas Reed lived in Dunmere."),
            relation(
                f2,
                "tomas_vell",
                "BEARS_BANNER_OF",
                "greywatch",
                "Tomas Vell rode into Greywatch with the prince's banner.",
            ),
        ],
        schema_proposals=[
            SchemaUpdateProposal(
                proposal_type="new_relationship_type",
                name="BEARS_BANNER_OF",
                description="Source carries the banner of the target.",
                source_types=["Character"],
                target_types=["Location"],
                examples=["Tomas Vell rode into Greywatch with the prince's banner."],
            )
        ],
    )
    r3 = ExtractionResult(
        entities=[
            entity(f3, "vell", "Vell", "Vell"),
            entity(f3, "tomas", "Tomas", "Tomas"),
            entity(f3, "tomas_vell", "Tomas Vell", "Tomas Vell", attributes={"title": "herald"}),
            entity(f3, "tomas_reed", "Tomas Reed", "Tomas Reed"),
            entity(f3, "prince_edric", "Prince Edric", "Prince Edric"),
        ],
        relationships=[
            relation(
                f3, "vell", "LOYAL_TO", "prince_edric", "Vell was the herald of Prince Edric."
            ),
            # Undirected: stored once whichever way round the model wrote it.
            relation(
                f3,
                "tomas_vell",
                "ENEMY_OF",
                "tomas_reed",
                "Tomas Vell was the sworn enemy of Tomas Reed.",
            ),
            relation(
                f3,
                "tomas_reed",
                "ENEMY_OF",
                "tomas_vell",
                "Tomas Vell was the sworn enemy of Tomas Reed.",
            ),
        ],
    )
    return [
        ResultInput(custom_id=f"{series}_section_01", result=r1),
        ResultInput(custom_id=f"{series}_section_02", result=r2),
        ResultInput(custom_id=f"{series}_section_03", result=r3),
    ]


def write_results(extracted_dir: Path, results: list[ResultInput]) -> None:
    """Write ``<custom_id>_extracted.json`` files as the batch client does."""
    extracted_dir.mkdir(parents=True, exist_ok=True)
    for item in results:
        path = extracted_dir / f"{item.custom_id}_extracted.json"
        path.write_text(item.result.model_dump_json(indent=2), encoding="utf-8")


def write_job_file(jobs_dir: Path, batch_id: str, series: str, custom_ids: list[str]) -> Path:
    """A job file in the batch client's shape (only the fields the warehouse reads)."""
    jobs_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "id": batch_id,
        "processing_status": "ended",
        "request_counts": {
            "processing": 0,
            "succeeded": len(custom_ids),
            "errored": 1,
            "canceled": 0,
            "expired": 0,
        },
        "created_at": "2026-01-02T03:04:05+00:00",
        "ended_at": "2026-01-02T04:04:05+00:00",
        "local_request_mapping": {c: f"/x/{c}_extracted.json" for c in custom_ids},
        "output_dir": "/x",
        "model": "claude-sonnet-4-5",
        "series_name": "River Tales",
        "series": series,
        "backend": "local",
        "prompt_version": "extract-v1-abc",
        "inputs": {
            c: {"file_name": f"{c}.txt", "chunk_id": c[-2:], "prompt_version": "extract-v1-abc"}
            for c in custom_ids
        },
        "failures": {
            f"{series}_section_09": {
                "custom_id": f"{series}_section_09",
                "batch_id": batch_id,
                "type": "errored",
                "message": "overloaded_error",
                "retryable": True,
            }
        },
        "estimated_cost": {"batch_usd": 0.5, "realtime_usd": 1.0},
        "usage": {"input_tokens": 1000, "output_tokens": 200, "cache_read_input_tokens": 50},
        "cost": {"batch_usd": 0.4, "realtime_usd": 0.8},
    }
    path = jobs_dir / f"{batch_id}.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
