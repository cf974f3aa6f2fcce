"""Contract of the extraction schemas: wire JSON in, validated stored models out, bad parts out.

Model output is untrusted; these tests feed hostile and broken answers through
``parse_extraction`` and check that valid parts survive while every rejected part has a reason.
"""

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fantasy_kg.domain.errors import InputFileError
from fantasy_kg.domain.schemas import (
    ExtractionResult,
    Ontology,
    WireExtractionResult,
    default_ontology,
    load_ontology,
    parse_extraction,
    result_to_wire,
)


def _entity(eid: str, name: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": eid,
        "type": "Character",
        "name": name,
        "aliases": [],
        "attributes": [{"name": "title", "value": "Queen"}],
        "mentions": [name],
        "confidence": 0.9,
    }
    base.update(extra)
    return base


def _rel(src: str, dst: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "source": src,
        "target": dst,
        "type": "PARENT_OF",
        "description": "",
        "evidence": ["a verbatim quote"],
        "confidence": 0.8,
    }
    base.update(extra)
    return base


def test_valid_answer_converts_attributes_mentions_and_confidence() -> None:
    answer = {
        "entities": [_entity("mira", "Mira Thorne"), _entity("aldous", "Aldous Thorne")],
        "relationships": [_rel("aldous", "mira")],
        "schema_proposals": [],
    }
    parsed = parse_extraction(json.dumps(answer), file_name="s_section_01.txt", chunk_id="01")
    assert parsed.rejected == []
    mira = parsed.result.entities[0]
    assert mira.attributes == {"title": "Queen"}
    assert mira.mentions[0].file_name == "s_section_01.txt"
    assert mira.mentions[0].chunk_id == "01"
    assert mira.confidence.score == pytest.approx(0.9)
    assert parsed.result.relationships[0].evidence[0].quote == "a verbatim quote"


def test_hostile_items_are_rejected_with_reasons_and_valid_parts_survive() -> None:
    answer = {
        "entities": [
            _entity("ok", "Good Name"),
            _entity("ok", "Duplicate Id"),
            _entity("bad\x00id", "Nul"),
            _entity("x" * 10_000, "Too long id"),
            _entity("conf", "Confident", confidence=1.7),
            _entity("'; DROP TABLE entities; --", "Robert'); --"),
            _entity("../../etc/passwd", "ﮔ‮emoji 🐉"),
        ],
        "relationships": [_rel("ok", "ok"), _rel("ok", "conf", confidence=-0.1), "not an object"],
        "schema_proposals": [{"proposal_type": "bogus"}],
    }
    parsed = parse_extraction(answer, file_name="f.txt", chunk_id="01")
    ids = [e.id for e in parsed.result.entities]
    # SQL-ish and path-ish ids are plain data here: the warehouse parameterizes and paths are
    # never built from entity ids, so they are kept verbatim.
    assert ids == ["ok", "'; DROP TABLE entities; --", "../../etc/passwd"]
    reasons = " | ".join(r.reason for r in parsed.rejected)
    assert "duplicate entity id" in reasons
    assert "control characters" in reasons
    assert "characters long" in reasons
    assert "outside [0, 1]" in reasons
    assert "to itself" in reasons
    kinds = sorted({r.kind for r in parsed.rejected})
    assert kinds == ["entity", "relationship", "schema_proposal"]
    assert parsed.result.relationships == []


def test_non_json_and_wrong_shapes_raise_value_error() -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_extraction('{"entities": [', file_name="f", chunk_id="1")
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_extraction("[1, 2]", file_name="f", chunk_id="1")
    with pytest.raises(ValueError, match="relationships"):
        parse_extraction('{"entities": []}', file_name="f", chunk_id="1")


def test_enormous_arrays_are_capped_not_exploded() -> None:
    answer = {
        "entities": [_entity(f"e{i}", f"Name {i}") for i in range(5_050)],
        "relationships": [],
        "schema_proposals": [],
    }
    parsed = parse_extraction(answer, file_name="f", chunk_id="1")
    assert len(parsed.result.entities) == 5_000
    assert any("beyond" in r.reason for r in parsed.rejected)


def test_round_trip_through_wire_shape_is_lossless_for_wire_fields() -> None:
    answer = {
        "entities": [_entity("mira", "Mira Thorne", aliases=["the Lantern Maid"])],
        "relationships": [],
        "schema_proposals": [
            {
                "proposal_type": "new_relationship_type",
                "name": "MENTOR_OF",
                "description": "teaches",
                "rationale": "apprenticeships are frequent",
                "source_types": ["Character"],
                "target_types": ["Character"],
                "examples": ["She was the apprentice of Orrin."],
            }
        ],
    }
    parsed = parse_extraction(answer, file_name="f", chunk_id="1")
    wire = result_to_wire(parsed.result)
    WireExtractionResult.model_validate(wire)
    again = parse_extraction(wire, file_name="f", chunk_id="1")
    assert again.result == parsed.result


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text())
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    entities=st.lists(json_values, max_size=6),
    relationships=st.lists(json_values, max_size=6),
)
def test_parser_never_raises_on_arbitrary_items(
    entities: list[Any], relationships: list[Any]
) -> None:
    parsed = parse_extraction(
        {"entities": entities, "relationships": relationships, "schema_proposals": []},
        file_name="f",
        chunk_id="1",
    )
    # Every item ends up either in the result or among the rejected, never both, never lost.
    assert len(parsed.result.entities) + sum(
        1 for r in parsed.rejected if r.kind == "entity"
    ) == len(entities)
    assert len(parsed.result.relationships) + sum(
        1 for r in parsed.rejected if r.kind == "relationship"
    ) == len(relationships)
    ExtractionResult.model_validate(parsed.result.model_dump())


def test_ontology_errors_name_file_and_position(tmp_path: Any) -> None:
    bad_json = tmp_path / "broken_schema.json"
    bad_json.write_text('{\n  "entity_types": [\n    {"name": "Character",}\n  ]\n}\n')
    with pytest.raises(InputFileError, match=r"broken_schema.json: line 3 column"):
        load_ontology(bad_json)

    dup = tmp_path / "dup_schema.json"
    dup.write_text(json.dumps({"entity_types": [{"name": "A"}, {"name": "A"}]}))
    with pytest.raises(InputFileError, match="defined twice"):
        load_ontology(dup)

    cyc = tmp_path / "cycle_schema.json"
    cyc.write_text(
        json.dumps({"entity_types": [{"name": "A", "parent": "B"}, {"name": "B", "parent": "A"}]})
    )
    with pytest.raises(InputFileError, match="cycle"):
        load_ontology(cyc)

    wrong_field = tmp_path / "field_schema.json"
    wrong_field.write_text(json.dumps({"entity_types": [{"name": "A", "attributes": "x"}]}))
    with pytest.raises(InputFileError, match=r"entity_types\.0\.attributes"):
        load_ontology(wrong_field)


def test_default_ontology_is_consistent() -> None:
    onto = default_ontology("demo")
    assert isinstance(onto, Ontology)
    assert onto.relationship_type("parent_of") is not None
    assert len(onto.fingerprint()) == 12
