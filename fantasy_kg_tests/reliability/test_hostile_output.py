"""Hostile model output: the model's JSON is untrusted input (design invariants 6 and 2).

The parser-level scenarios here complement ``fantasy_kg_tests/test_schemas.py`` (which covers
the basic reject-with-reason cases and arbitrary JSON items): they add lone surrogates, deep
nesting, and a property test whose items are wire-valid but carry hostile strings, checking that
whatever is accepted can be written as UTF-8 JSON and read back unchanged. The end-to-end
scenarios push the same answers through the local server's per-custom_id overrides, the real
batch client, the result files and DuckDB.
"""

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fantasy_kg.domain.schemas import (
    MAX_ID_CHARS,
    MAX_LIST_ITEMS,
    ExtractionResult,
    ParsedExtraction,
    WireExtractionResult,
    parse_extraction,
    result_to_wire,
)
from fantasy_kg.local_api import FaultPlan, ResultOverride
from fantasy_kg.warehouse.migrations import TABLES
from fantasy_kg_tests.reliability import hostile
from fantasy_kg_tests.reliability.rig import SERIES, Rig, open_rig

SCENARIO_CATEGORY = "Hostile model output"

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def assert_sound(parsed: ParsedExtraction, n_entities: int, n_relationships: int) -> None:
    """What every parse must guarantee, whatever the input."""
    result = parsed.result
    rejected_entities = [r for r in parsed.rejected if r.kind == "entity"]
    rejected_rels = [r for r in parsed.rejected if r.kind == "relationship"]
    # Nothing lost: every item is either kept or rejected with a reason.
    assert len(result.entities) + len(rejected_entities) == n_entities
    assert len(result.relationships) + len(rejected_rels) == n_relationships
    assert all(r.reason.strip() for r in parsed.rejected)
    ids = [e.id for e in result.entities]
    assert len(ids) == len(set(ids)), "duplicate entity ids survived"
    for ent in result.entities:
        for label in (ent.id, ent.type, ent.name):
            assert label == label.strip() and label
            assert not _CONTROL.search(label)
        assert len(ent.id) <= MAX_ID_CHARS
        assert 0.0 <= ent.confidence.score <= 1.0
    for rel in result.relationships:
        assert rel.source != rel.target
        assert 0.0 <= rel.confidence.score <= 1.0
    # Whatever was accepted can be written as a UTF-8 result file and read back unchanged.
    blob = result.model_dump_json().encode("utf-8")
    assert ExtractionResult.model_validate_json(blob) == result
    json.dumps(result_to_wire(result), ensure_ascii=False).encode("utf-8")
    for item in parsed.rejected:
        item.model_dump_json().encode("utf-8")


@pytest.mark.scenario(
    id="output-parser-hostile-mix",
    injected="one answer with every hostile string (../, /, NUL, quotes, SQL, 10,000 chars, "
    "emoji, RTL, lone surrogate) as id/name/alias/attribute/evidence, duplicate ids, confidence "
    "1.5/-0.25/7.0, a self-relationship",
    checked="valid items kept verbatim; each bad item rejected with its reason; accepted part "
    "serializes to UTF-8 JSON and round-trips",
)
def test_parser_keeps_valid_parts_of_a_hostile_answer() -> None:
    doc = hostile.hostile_answer()
    parsed = parse_extraction(hostile.dumps(doc), file_name="s_section_01.txt", chunk_id="01")
    assert_sound(parsed, len(doc["entities"]), len(doc["relationships"]))
    ids = {e.id for e in parsed.result.entities}
    assert {"safe_entity", "aldous", hostile.HOSTILE_STRINGS["sql"]} <= ids
    assert hostile.HOSTILE_STRINGS["traversal"] in ids  # data, never a path
    reasons = " | ".join(r.reason for r in parsed.rejected)
    for expected in ("duplicate entity id", "control characters", "outside [0, 1]", "to itself"):
        assert expected in reasons
    # The first of the duplicate ids wins, the self-loop and the 7.0 confidence are gone.
    safe = next(e for e in parsed.result.entities if e.id == "safe_entity")
    assert safe.name == "Mira Thorne"
    kept = [(r.source, r.target, r.confidence.score) for r in parsed.result.relationships]
    assert ("aldous", "safe_entity", 0.8) in kept
    assert all(src != dst for src, dst, _ in kept)


@pytest.mark.scenario(
    id="output-parser-lone-surrogate",
    injected='answer whose id, name, alias, attribute and evidence hold a JSON "\\ud800" escape '
    "(valid JSON, not encodable as UTF-8)",
    checked="parse never yields a result that cannot be written as a UTF-8 file",
)
def test_parser_output_with_lone_surrogates_is_writable() -> None:
    bad = hostile.HOSTILE_STRINGS["surrogate"]
    doc = hostile.answer(
        [
            hostile.entity("ok", "Fine"),
            hostile.entity(bad, "Surrogate id"),
            hostile.entity(
                "attr",
                "Attr",
                aliases=[bad],
                mentions=[bad],
                attributes=[{"name": "title", "value": bad}],
            ),
        ],
        [hostile.relationship("ok", "attr", evidence=[bad], description=bad)],
    )
    parsed = parse_extraction(hostile.dumps(doc), file_name="f.txt", chunk_id="01")
    assert_sound(parsed, 3, 1)
    assert "ok" in {e.id for e in parsed.result.entities}


@pytest.mark.scenario(
    id="output-parser-deep-nesting",
    injected="answer with an array nested 100,000 levels deep (valid JSON that overflows a "
    "recursive decoder)",
    checked="a ValueError with a reason (recorded as a failed request), never RecursionError",
)
def test_parser_rejects_deep_nesting_with_a_reason() -> None:
    with pytest.raises(ValueError, match=r"(?i)nest|deep"):
        parse_extraction(hostile.deeply_nested_text(), file_name="f.txt", chunk_id="01")
    # Moderately nested junk inside a valid answer is an item-level rejection, not a failure.
    doc = hostile.answer([hostile.entity("ok", "Fine"), {"id": [[[[[[["x"]]]]]]]}])
    parsed = parse_extraction(doc, file_name="f.txt", chunk_id="01")
    assert_sound(parsed, 2, 0)


_hostile_text = st.one_of(
    st.sampled_from(list(hostile.HOSTILE_STRINGS.values())),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.builds(
        lambda a, b: a + b,
        st.sampled_from(list(hostile.HOSTILE_STRINGS.values())),
        st.text(max_size=5),
    ),
)
_confidence = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1.0, -0.0, 1.0000001])
)


@st.composite
def _wire_answers(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(_hostile_text, max_size=8))
    ents = [
        hostile.entity(
            eid,
            draw(_hostile_text),
            aliases=draw(st.lists(_hostile_text, max_size=3)),
            mentions=draw(st.lists(_hostile_text, max_size=3)),
            attributes=[
                {"name": n, "value": v}
                for n, v in draw(st.lists(st.tuples(_hostile_text, _hostile_text), max_size=2))
            ],
            confidence=draw(_confidence),
        )
        for eid in ids
    ]
    pool = ids or ["a"]
    rels = [
        hostile.relationship(
            draw(st.sampled_from(pool)),
            draw(st.sampled_from(pool)),
            type=draw(_hostile_text),
            description=draw(_hostile_text),
            evidence=draw(st.lists(_hostile_text, max_size=2)),
            confidence=draw(_confidence),
        )
        for _ in range(draw(st.integers(0, 6)))
    ]
    return hostile.answer(ents, rels)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_wire_answers())
def _property_parser(doc: dict[str, Any]) -> None:
    text = json.dumps(doc)  # ASCII escapes: NaN/Infinity and surrogates travel as the model's would
    parsed = parse_extraction(text, file_name="s_section_01.txt", chunk_id="01")
    assert_sound(parsed, len(doc["entities"]), len(doc["relationships"]))
    WireExtractionResult.model_validate(result_to_wire(parsed.result))


@pytest.mark.scenario(
    id="output-parser-property",
    injected="hypothesis: 200 wire-shaped answers with ids, names, types, aliases, attributes, "
    "evidence drawn from hostile strings and arbitrary Unicode; NaN/inf/out-of-range confidences",
    checked="never raises; kept + rejected = input; ids unique, bounded, no control chars; "
    "confidence in [0,1]; no self-loops; result round-trips through UTF-8 JSON and wire shape",
)
def test_parser_property_over_hostile_wire_answers() -> None:
    _property_parser()


# ------------------------------------------------------------------------------------------
# End to end: hostile answers through the server, the batch client, result files and DuckDB
# ------------------------------------------------------------------------------------------

_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def _enormous_answer() -> dict[str, Any]:
    """Huge arrays that still fit one answer's max_tokens (the server cuts longer answers, as
    a real model stops at max_tokens): 1,000 aliases, 700 mentions, 800 evidence quotes."""
    big = hostile.entity(
        "hydra",
        "The Hydra",
        aliases=[f"h{i}" for i in range(1_000)],
        mentions=[f"m{i}" for i in range(700)],
    )
    rel = hostile.relationship("hydra", "mira", evidence=[f"q{i}" for i in range(800)])
    return hostile.answer([big, hostile.entity("mira", "Mira Thorne")], [rel])


@pytest.fixture
def hostile_rig(data_dir: Path, tmp_path: Path) -> Iterator[Rig]:
    """Five sections; the server answers four of them with hostile documents."""
    ids = [f"{SERIES}_section_0{i}" for i in range(1, 6)]
    plan = FaultPlan(
        results={
            ids[0]: ResultOverride("text", text=hostile.dumps(hostile.hostile_answer())),
            ids[1]: ResultOverride("text", text=hostile.deeply_nested_text(5_000)),
            ids[2]: ResultOverride(
                "text",
                text=hostile.dumps(
                    hostile.answer([hostile.entity(hostile.HOSTILE_STRINGS["surrogate"], "S")])
                ),
            ),
            ids[3]: ResultOverride("text", text=hostile.dumps(_enormous_answer())),
        }
    )
    with open_rig(data_dir, tmp_path / "api", plan) as rig:
        assert rig.custom_ids == ids
        yield rig


@pytest.mark.scenario(
    id="output-end-to-end-through-batch-and-duckdb",
    injected="the server answers real batch requests with: the hostile mix; a 5,000-deep "
    "nested array; a lone-surrogate id; an entity with 1,000 aliases and 700 mentions and a "
    "relationship with 800 quotes (caps: 500); one section gets the normal baseline answer",
    checked="nothing written outside the data dir and every file name there is plain ASCII; the "
    "nested answer is a recorded failure with its reason; rejected items are kept with reasons "
    "in provenance; `fantasy-kg load` succeeds, every table survives, SQL-fragment names are "
    "stored verbatim and found with bound parameters; valid entities survive",
)
def test_hostile_answers_end_to_end(
    hostile_rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = hostile_rig
    full = rig.cli_here(monkeypatch, "extract-batch", "--mode", "full", "--poll-interval", "0.2")
    assert full.exit_code == 1, full.stderr[-3000:]  # one section failed: reported, not hidden
    doc = full.json()
    assert doc["written"] == 4 and doc["failed"] == 1
    (failure,) = doc["failures"]
    assert failure["custom_id"] == rig.custom_ids[1]
    assert "nested too deeply" in failure["message"]
    # Nothing outside the data dir (the server's own state dir aside), only plain names inside.
    for path in tmp_path.rglob("*"):
        rel = path.relative_to(tmp_path)
        assert rel.parts[0] in ("data", "api"), rel
    for path in rig.data_dir.rglob("*"):
        if "books" not in path.relative_to(rig.data_dir).parts:
            assert _SAFE_NAME.match(path.name), path
    prov = json.loads((rig.out / "_provenance" / f"{rig.custom_ids[0]}.json").read_text())
    reasons = " | ".join(r["reason"] for r in prov["rejected"])
    for expected in ("duplicate entity id", "control characters", "outside [0, 1]", "to itself"):
        assert expected in reasons
    big = json.loads((rig.out / f"{rig.custom_ids[3]}_extracted.json").read_text())
    hydra = next(e for e in big["entities"] if e["id"] == "hydra")
    assert len(hydra["aliases"]) == MAX_LIST_ITEMS  # capped, not exploded
    assert len(big["relationships"][0]["evidence"]) == MAX_LIST_ITEMS

    load = rig.cli_here(monkeypatch, "load")
    assert load.exit_code == 0, load.stderr[-3000:]
    db = rig.data_dir / "fantasy_kg.duckdb"
    with duckdb.connect(str(db), read_only=True) as conn:
        present = {
            r[0]
            for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()
        }
        assert set(TABLES) <= present
        names = {
            r[0]
            for r in conn.execute("SELECT name FROM entities WHERE series = ?", [SERIES]).fetchall()
        }
        for value in (hostile.HOSTILE_STRINGS["sql"], hostile.HOSTILE_STRINGS["sql_union"]):
            assert value in names
            found = conn.execute("SELECT count(*) FROM entities WHERE name = ?", [value])
            assert found.fetchone() == (1,)
        assert "Mira Thorne" in names
        assert "The Hydra" in names
        failed = conn.execute(
            "SELECT message FROM extraction_failures WHERE custom_id = ?", [rig.custom_ids[1]]
        ).fetchall()
        assert failed and "nested too deeply" in failed[0][0]
    sql = rig.cli_here(
        monkeypatch,
        "sql",
        "SELECT count(*) AS n FROM entities WHERE name = ?",
        "--param",
        hostile.HOSTILE_STRINGS["sql"],
        "--format",
        "json",
    )
    assert sql.exit_code == 0, sql.stderr
    assert json.loads(sql.stdout)[0]["n"] == 1
