"""Quality floors of the local backend on the sample series, measured end to end.

The end-to-end run is what a newcomer without an API key gets: sections are cut, submitted as a
Message Batch to the embedded local API server through the official SDK, polled, and the result
files are scored against ``data/gold/ashen_crown.json``. The floors are conservative on purpose
(the measured numbers are in the README); a drop below them means a regression.
"""

import json
from pathlib import Path
from typing import Any

import pytest

from fantasy_kg.domain.baseline.quality import (
    SectionOutput,
    format_table,
    load_gold,
    normalize_name,
    score,
)
from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.domain.schemas import (
    EntityInstance,
    Evidence,
    ExtractionResult,
    RelationshipInstance,
)
from fantasy_kg.pipeline.baseline_quality import measure

SERIES = "ashen_crown"


def _assert_floors(
    report_dict: dict[str, Any], *, char_recall: float, char_precision: float
) -> None:
    chars = report_dict["entities"]["by_type"]["Character"]
    assert chars["recall"] >= char_recall, report_dict["missed_entities"]
    assert chars["precision"] >= char_precision, report_dict["spurious_entities"]
    rels = report_dict["relationships"]["overall"]
    assert rels["recall"] >= 0.5, report_dict["missed_relationships"]
    evidence = report_dict["evidence"]
    assert evidence["quotes"] > 0
    assert evidence["verbatim"] == evidence["quotes"]


def test_end_to_end_on_the_sample_series_holds_the_floors(sample_data_dir: Path) -> None:
    report = measure(SERIES, data_dir=sample_data_dir, mode="end_to_end", ontology="series")
    assert report.sections >= 1
    _assert_floors(report.to_dict(), char_recall=0.8, char_precision=0.7)
    assert report.relationships_overall.precision >= 0.7
    table = format_table(report)
    assert "Character" in table and "evidence quotes found verbatim" in table


def test_rules_alone_hold_the_floors_on_small_sections(sample_data_dir: Path) -> None:
    # No gazetteer (generic ontology) and many small sections: names must be found, typed and
    # resolved by the rules themselves, section by section.
    report = measure(
        SERIES,
        data_dir=sample_data_dir,
        mode="direct",
        ontology="default",
        max_section_tokens=1500,
    )
    assert report.sections > 3
    _assert_floors(report.to_dict(), char_recall=0.8, char_precision=0.7)


def _result(entities: list[tuple[str, str, str, list[str]]], rels: list[tuple[str, str, str, str]]):
    return ExtractionResult(
        entities=[EntityInstance(id=i, type=t, name=n, aliases=a) for i, t, n, a in entities],
        relationships=[
            RelationshipInstance(source=s, type=k, target=o, evidence=[Evidence(quote=q)])
            for s, k, o, q in rels
        ],
    )


def test_scoring_matches_through_aliases_direction_and_type(tmp_path: Path) -> None:
    gold_path = tmp_path / "gold.json"
    gold_path.write_text(
        json.dumps(
            {
                "series": "t",
                "entities": [
                    {
                        "id": "mira",
                        "type": "Character",
                        "name": "Mira Thorne",
                        "aliases": ["the Lantern Maid"],
                    },
                    {"id": "corin", "type": "Character", "name": "Corin Thorne", "aliases": []},
                    {"id": "dunmere", "type": "Location", "name": "Dunmere", "aliases": []},
                ],
                "relationships": [
                    {"source": "corin", "type": "SIBLING_OF", "target": "mira"},
                    {"source": "mira", "type": "LIVES_IN", "target": "dunmere"},
                ],
            }
        )
    )
    gold = load_gold(gold_path)
    text = "Mira was the sister of Corin Thorne. Mira lived in Dunmere."
    out = SectionOutput(
        text=text,
        result=_result(
            [
                ("lantern_maid", "Character", "Lantern Maid", ["Mira"]),  # matched via alias
                ("corin", "Character", "Corin Thorne", []),
                ("dunmere", "Character", "Dunmere", []),  # wrong type: no match
                ("ghost", "Character", "Nobody Here", []),
            ],
            [
                ("lantern_maid", "SIBLING_OF", "corin", "Mira was the sister of Corin Thorne."),
                ("lantern_maid", "LIVES_IN", "dunmere", "not in the text"),
            ],
        ),
    )
    report = score([out], gold, undirected=["SIBLING_OF"])
    chars = report.entities_by_type["Character"]
    assert (chars.extracted, chars.extracted_correct, chars.gold, chars.gold_found) == (4, 2, 2, 2)
    assert report.entities_by_type["Location"].recall == 0.0
    assert report.missed_entities == ["Location:dunmere"]
    assert sorted(report.spurious_entities) == ["Character:dunmere", "Character:ghost"]
    # Mira → Corin SIBLING_OF matches the gold Corin → Mira because the type is undirected.
    assert report.relationships_by_type["SIBLING_OF"].precision == 1.0
    # LIVES_IN points at an entity of the wrong type, so it matches nothing.
    assert report.relationships_overall.recall == 0.5
    assert (report.evidence_quotes, report.evidence_verbatim) == (2, 1)
    assert normalize_name("  The  Lantern\nMaid ") == "lantern maid"


def test_missing_gold_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="gold file not found"):
        load_gold(tmp_path / "nope.json")
