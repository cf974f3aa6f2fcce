"""The baseline extractor (the local backend's "model"): patterns, resolution, wire contract.

Each test feeds text written for the test (not the sample series) so that the patterns are shown
to be general, and checks the answer through the same wire model and parser the pipeline uses.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from fantasy_kg.domain.baseline import BASELINE_NOTICE, extract, respond
from fantasy_kg.domain.prompts import build_prompt
from fantasy_kg.domain.schemas import (
    CanonicalRule,
    DoNotMergeRule,
    Ontology,
    RelationshipTypeDef,
    WireExtractionResult,
    default_ontology,
    parse_extraction,
    wire_json_schema,
)


def _rels(result: WireExtractionResult) -> set[tuple[str, str, str]]:
    return {(r.source, r.type, r.target) for r in result.relationships}


def _entity(result: WireExtractionResult, name: str) -> Any:
    found = [e for e in result.entities if e.name == name]
    assert len(found) == 1, [e.name for e in result.entities]
    return found[0]


def _request(text: str, ontology: Ontology, *, blocks: bool = False) -> dict[str, Any]:
    parts = build_prompt(
        series_name="Test Saga",
        ontology=ontology,
        book_names=["Book One"],
        section_id="01",
        text=text,
    )
    system: Any = parts.prefix
    user: Any = parts.section
    if blocks:
        system = [{"type": "text", "text": parts.prefix, "cache_control": {"type": "ephemeral"}}]
        user = [{"type": "text", "text": parts.section}]
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": system,
        "messages": [{"role": "user", "content": user}],
        "output_config": {"format": {"type": "json_schema", "schema": wire_json_schema()}},
    }


KIN = (
    "Brannoc Vey lived in the town of Harrowgate. Ysolde was the daughter of Brannoc Vey. "
    "Garrick Vey was the father of Ennis Vey. Ennis Vey was the brother of Ysolde. "
    "Ysolde's mother, Maren Vey, kept the mill. Maren Vey was the wife of Brannoc Vey."
)


def test_kinship_direction_follows_the_phrase() -> None:
    result = extract(KIN, default_ontology())
    ids = {e.name: e.id for e in result.entities}
    rels = _rels(result)
    # "Y was the daughter of X" is X PARENT_OF Y; "X was the father of Y" is X PARENT_OF Y.
    assert (ids["Brannoc Vey"], "PARENT_OF", ids["Ysolde"]) in rels
    assert (ids["Garrick Vey"], "PARENT_OF", ids["Ennis Vey"]) in rels
    assert (ids["Maren Vey"], "PARENT_OF", ids["Ysolde"]) in rels
    assert (ids["Ysolde"], "PARENT_OF", ids["Brannoc Vey"]) not in rels
    siblings = {frozenset((s, t)) for s, k, t in rels if k == "SIBLING_OF"}
    assert frozenset((ids["Ennis Vey"], ids["Ysolde"])) in siblings
    spouses = {frozenset((s, t)) for s, k, t in rels if k == "SPOUSE_OF"}
    assert frozenset((ids["Maren Vey"], ids["Brannoc Vey"])) in spouses
    assert (ids["Brannoc Vey"], "LIVES_IN", ids["Harrowgate"]) in rels
    assert _entity(result, "Harrowgate").type == "Location"


def _named_rels(result: WireExtractionResult) -> set[tuple[str, str, str]]:
    names = {e.id: e.name for e in result.entities}
    return {(names[r.source], r.type, names[r.target]) for r in result.relationships}


def test_negated_statements_give_no_relationship() -> None:
    text = (
        "Corla Penn lived in the town of Wexmoor. Dain Holt and Brisa Holt sailed to Ostrand. "
        "Nor does the king of Ostrand rule Wexmoor. Dain Holt did not live in Wexmoor. "
        "It is not true that Dain Holt married Brisa Holt. "
        "Corla Penn married Tobin Ashe, and Tobin Ashe smiled."
    )
    rels = _named_rels(extract(text, default_ontology()))
    # The controls: the same cues, stated.
    assert ("Corla Penn", "LIVES_IN", "Wexmoor") in rels
    assert ("Corla Penn", "SPOUSE_OF", "Tobin Ashe") in rels
    assert not any(k == "LEADS" for _, k, _ in rels)
    assert not any("Dain Holt" in (s, t) for s, _, t in rels)


def test_figurative_kinship_needs_a_person_as_its_object() -> None:
    text = (
        "Ilsa Marrow was a true daughter of Vantor, the red planet. Vantor shone that night. "
        "Ilsa Marrow was the daughter of Lord Aubrey Marrow."
    )
    rels = _named_rels(extract(text, default_ontology()))
    parents = {(s, t) for s, k, t in rels if k == "PARENT_OF"}
    assert parents == {("Aubrey Marrow", "Ilsa Marrow")}  # a titled person is a real parent


def test_each_kin_noun_attaches_to_its_own_argument_in_a_possessive_chain() -> None:
    text = (
        "Queen Neva Orrin, the great-granddaughter of Halric Orrin, daughter of Tessaly Orrin, "
        "ruled the land. Halric Orrin and Tessaly Orrin were long dead. "
        "The friend of Perrin Dask, the son of Ada Dask, came too. "
        "Perrin Dask was the son of Ada Dask."
    )
    result = extract(text, default_ontology())
    parents = {(s, t) for s, k, t in _named_rels(result) if k == "PARENT_OF"}
    # "great-granddaughter of A, daughter of B" does not make B a parent of A, and "the friend
    # of A, the son of B" is about the friend: only the last sentence states a parent.
    assert parents == {("Ada Dask", "Perrin Dask")}
    rel = next(r for r in result.relationships if r.type == "PARENT_OF")
    assert rel.evidence == ["Perrin Dask was the son of Ada Dask."]


def test_evidence_is_verbatim_and_endpoints_exist() -> None:
    text = (
        "The fortress of Kelmarch lay in the province of\nDrossway, far from the sea.\n\n"
        "Aric Fenn, whom the sailors called the Salt Wolf, was a member of the Tide Guild. "
        "Aric Fenn fought at the Siege of Kelmarch. Aric Fenn carried the Tide Horn."
    )
    result = extract(text, default_ontology())
    ids = {e.id for e in result.entities}
    assert result.relationships
    for rel in result.relationships:
        assert rel.source in ids and rel.target in ids
        assert rel.evidence
        for quote in rel.evidence:
            assert quote in text
    types = {r.type for r in result.relationships}
    assert {"LOCATED_IN", "MEMBER_OF", "PARTICIPATED_IN", "POSSESSES"} <= types
    assert _entity(result, "Siege of Kelmarch").type == "Event"
    assert _entity(result, "Tide Horn").type == "Artifact"
    assert _entity(result, "Tide Guild").type == "Organization"


def test_alias_introductions_merge_into_one_entity() -> None:
    text = (
        "Aric Fenn, whom the sailors called the Salt Wolf, came ashore at dusk. "
        "The Salt Wolf said nothing. Longshank, as Dace Morrow was called, tied up the boat. "
        "Longshank laughed. Later Aric spoke with Dace Morrow."
    )
    result = extract(text, default_ontology())
    aric = _entity(result, "Aric Fenn")
    assert "the Salt Wolf" in aric.aliases
    assert "Aric" in aric.aliases
    dace = _entity(result, "Dace Morrow")
    assert "Longshank" in dace.aliases
    assert not [e for e in result.entities if e.name in ("Salt Wolf", "Longshank", "Aric")]


def test_title_and_surname_resolve_to_the_full_name_and_keep_the_title() -> None:
    text = (
        "Orrin Thale, the ferryman, poled across the river. Captain Thale had once served "
        "Queen Maelis. Thale was loyal to Queen Maelis."
    )
    result = extract(text, default_ontology())
    orrin = _entity(result, "Orrin Thale")
    attrs = {a.name: a.value for a in orrin.attributes}
    assert attrs["title"] == "Captain"
    assert attrs["occupation"] == "ferryman"
    maelis = _entity(result, "Maelis")
    assert (orrin.id, "LOYAL_TO", maelis.id) in _rels(result)


SHARED = (
    "Tomas Reed kept the ferry. Tomas Reed lived in the village of Brackwater. "
    "Tomas walked to the landing. "
    "Tomas Vell carried the Red Banner. Tomas held it high. "
    "Tomas Vell was the sworn enemy of Tomas Reed."
)


def test_shared_first_name_stays_apart_without_ontology() -> None:
    result = extract(SHARED, default_ontology())
    reed = _entity(result, "Tomas Reed")
    vell = _entity(result, "Tomas Vell")
    assert reed.id != vell.id
    assert not [e for e in result.entities if e.name == "Tomas"]
    rels = _rels(result)
    assert (vell.id, "POSSESSES", _entity(result, "Red Banner").id) in rels
    enemies = {frozenset((s, t)) for s, k, t in rels if k == "ENEMY_OF"}
    assert frozenset((reed.id, vell.id)) in enemies


def test_shared_first_name_stays_apart_with_do_not_merge_rules() -> None:
    onto = default_ontology().model_copy(
        update={
            "canonical_rules": [
                CanonicalRule(
                    canonical_id="tomas_reed",
                    canonical_name="Tomas Reed",
                    entity_type="Character",
                    aliases=["Tomas", "Reed"],
                ),
                CanonicalRule(
                    canonical_id="tomas_vell",
                    canonical_name="Tomas Vell",
                    entity_type="Character",
                    aliases=["Tomas", "Vell"],
                ),
            ],
            "do_not_merge": [DoNotMergeRule(ids=["tomas_reed", "tomas_vell"])],
        }
    )
    result = extract(SHARED, onto)
    by_id = {e.id: e for e in result.entities}
    assert {"tomas_reed", "tomas_vell"} <= set(by_id)
    # Each bare "Tomas" goes to the Tomas named just before it.
    assert "Tomas" in by_id["tomas_reed"].mentions
    assert "Tomas" in by_id["tomas_vell"].mentions
    assert ("tomas_vell", "POSSESSES", "red_banner") in _rels(result)


def test_gazetteer_epithets_and_types_come_from_the_ontology() -> None:
    onto = default_ontology().model_copy(
        update={
            "canonical_rules": [
                CanonicalRule(
                    canonical_id="varn_the_grey",
                    canonical_name="Varn Ashby",
                    entity_type="Character",
                    aliases=["the Grey Hand"],
                ),
                CanonicalRule(
                    canonical_id="kelmarch",
                    canonical_name="Kelmarch",
                    entity_type="Location",
                    aliases=[],
                ),
            ]
        }
    )
    text = "The Grey Hand ruled Kelmarch. Everyone feared the Grey Hand."
    result = extract(text, onto)
    varn = next(e for e in result.entities if e.id == "varn_the_grey")
    assert varn.name == "Varn Ashby"
    assert varn.confidence >= 0.9
    assert ("varn_the_grey", "LEADS", "kelmarch") in _rels(result)


def test_types_follow_the_ontology() -> None:
    narrow = Ontology(
        entity_types=default_ontology().entity_types,
        relationship_types=[
            RelationshipTypeDef(
                name="PARENT_OF", source_types=["Character"], target_types=["Character"]
            ),
        ],
    )
    text = "Ysolde was the daughter of Brannoc Vey. Brannoc Vey lived in the town of Harrowgate."
    result = extract(text, narrow)
    assert {r.type for r in result.relationships} == {"PARENT_OF"}


def test_missing_relationship_type_becomes_a_proposal_with_quotes() -> None:
    text = "Mira Holt was the apprentice of Hesper Quell. Hesper Quell trained Mira Holt well."
    result = extract(text, default_ontology())
    proposals = {p.name: p for p in result.schema_proposals}
    assert "MENTOR_OF" in proposals
    mentor = proposals["MENTOR_OF"]
    assert mentor.proposal_type == "new_relationship_type"
    assert mentor.examples and all(q in text for q in mentor.examples)
    assert mentor.source_types == ["Character"]
    # With the type in the ontology, the same text yields edges instead of a proposal.
    onto = default_ontology().model_copy(
        update={
            "relationship_types": [
                *default_ontology().relationship_types,
                RelationshipTypeDef(
                    name="MENTOR_OF", source_types=["Character"], target_types=["Character"]
                ),
            ]
        }
    )
    result = extract(text, onto)
    ids = {e.name: e.id for e in result.entities}
    assert (ids["Hesper Quell"], "MENTOR_OF", ids["Mira Holt"]) in _rels(result)
    assert "MENTOR_OF" not in {p.name for p in result.schema_proposals}


def test_sentence_initial_words_and_headings_are_not_names() -> None:
    text = (
        "Contents\n\n   1.  The Road Through the Marsh\n   2.  How Dorrin Found the Key\n\n"
        "Out on the water the ferry turned. Behind him Dorrin waited. Instantly the lights "
        "went out. When Dorrin spoke, nobody answered. Dorrin said nothing more."
    )
    names = {e.name for e in extract(text, default_ontology()).entities}
    assert "Dorrin" in names
    assert not names & {"Out", "Behind", "Instantly", "When", "Road Through the Marsh", "Key"}


def test_respond_answers_extraction_requests_with_valid_wire_json() -> None:
    for blocks in (False, True):
        answer = respond(_request(KIN, default_ontology(), blocks=blocks))
        assert answer["stop_reason"] == "end_turn"
        data = json.loads(answer["text"])
        wire = WireExtractionResult.model_validate(data)
        assert wire.entities and wire.relationships
        parsed = parse_extraction(answer["text"], file_name="s_section_01.txt", chunk_id="01")
        assert parsed.rejected == []
        assert len(parsed.result.relationships) == len(wire.relationships)


def test_respond_is_deterministic_across_processes(tmp_path: Path) -> None:
    request = _request(SHARED + " " + KIN, default_ontology())
    (tmp_path / "req.json").write_text(json.dumps(request))
    script = (
        "import json,sys; from fantasy_kg.domain.baseline import respond; "
        "print(respond(json.load(open(sys.argv[1])))['text'])"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "req.json")],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        outputs.add(run.stdout)
    outputs.add(respond(request)["text"] + "\n")
    assert len(outputs) == 1


def test_unrelated_prompt_gets_plain_text() -> None:
    answer = respond(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "Write a haiku about ferries."}],
        }
    )
    assert answer == {"text": BASELINE_NOTICE, "stop_reason": "end_turn"}
    # A schema that is not the extraction schema does not get an extraction either.
    other = respond(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "Summarize."}],
            "output_config": {
                "format": {
                    "type": "json_schema",
                    "schema": {"type": "object", "properties": {"summary": {"type": "string"}}},
                }
            },
        }
    )
    assert other["text"] == BASELINE_NOTICE


def test_oz_book_gives_sensible_output(oz_dir: Path) -> None:
    text = (oz_dir / "01_the_wonderful_wizard_of_oz.txt").read_text(encoding="utf-8")
    result = extract(text, default_ontology("oz"), file_name="oz_section_01.txt", section_id="01")
    by_name = {e.name: e for e in result.entities}
    for name in ("Dorothy", "Toto", "Scarecrow", "Tin Woodman", "Cowardly Lion", "Glinda"):
        assert name in by_name or any(name in e.aliases for e in result.entities), name
    assert by_name["Kansas"].type == "Location"
    assert by_name["Emerald City"].type == "Location"
    assert by_name["Golden Cap"].type == "Artifact"
    # Table-of-contents lines are not entities.
    assert "How Dorothy Saved the Scarecrow" not in by_name
    for rel in result.relationships:
        assert all(q in text for q in rel.evidence)
    assert "SPOKE_TO" in {p.name for p in result.schema_proposals}


def test_answer_is_never_shortened_to_fit_max_tokens() -> None:
    """Issue 11: the baseline writes its whole answer; the server cuts it like Claude would."""
    from fantasy_kg.domain.text.tokens import estimate_tokens

    crowd = " ".join(
        f"Zorvan{chr(97 + i)}{chr(97 + j)} Quell nodded." for i in range(8) for j in range(8)
    )
    request = _request(KIN + " " + crowd, default_ontology())
    full = respond(request)["text"]
    request["max_tokens"] = 1200
    answer = respond(request)
    assert estimate_tokens(full) > 1200
    assert answer == {"text": full, "stop_reason": "end_turn"}
    names = {e.name for e in WireExtractionResult.model_validate_json(answer["text"]).entities}
    assert {f"Zorvan{chr(97 + i)}{chr(97 + j)} Quell" for i in range(8) for j in range(8)} <= names


def test_forms_of_address_are_not_characters() -> None:
    from fantasy_kg.domain.baseline.tagging import TaggedSpan

    text = (
        '"Your Majesty is kind," said Curdie. His Majesty nodded. "Yes, Your Grace," said '
        "Irene. Curdie ran. Irene smiled. Grace Poole came in, and Grace laughed."
    )

    class Tagger:
        """Tags every capitalized run the test names, as a learned tagger might."""

        def tag(self, t: str) -> list[TaggedSpan]:
            out = []
            for name in ("Your Majesty", "His Majesty", "Your Grace", "Curdie", "Irene"):
                pos = t.find(name)
                while pos >= 0:
                    out.append(TaggedSpan(pos, pos + len(name), "PER"))
                    pos = t.find(name, pos + 1)
            return sorted(out, key=lambda s: s.start)

    names = {e.name for e in extract(text, default_ontology(), tagger=Tagger()).entities}
    assert {"Curdie", "Irene"} <= names
    assert not names & {"Your Majesty", "His Majesty", "Majesty", "Your Grace"}
