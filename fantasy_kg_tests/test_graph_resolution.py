"""Series-wide entity resolution: aliases merge across books, namesakes stay apart."""

from pathlib import Path

import pytest

from fantasy_kg.domain.graph.build import ResultInput, build_graph
from fantasy_kg.domain.graph.models import KnowledgeGraph
from fantasy_kg.domain.graph.names import name_keys
from fantasy_kg.domain.graph.resolution import EntityRecord, resolve_entities
from fantasy_kg.domain.schemas import DoNotMergeRule, ExtractionResult, default_ontology
from fantasy_kg_tests.graph_fixtures import (
    crafted_ontology,
    crafted_results,
    entity,
    relation,
    write_series_sections,
)


def _entity_of(graph: KnowledgeGraph, custom_id: str, raw_id: str) -> str:
    return next(
        m.entity_id
        for m in graph.mentions
        if m.custom_id == custom_id and m.raw_entity_id == raw_id
    )


@pytest.mark.parametrize("rules", [True, False], ids=["with_rules", "names_only"])
def test_aliases_merge_across_books_and_two_tomases_stay_apart(tmp_path: Path, rules: bool):
    sections = write_series_sections(tmp_path / "sections")
    graph = build_graph(sections, crafted_results(), crafted_ontology(rules=rules))
    c1, c2, c3 = (f"river_tales_section_0{i}" for i in (1, 2, 3))

    reed = _entity_of(graph, c1, "tomas_reed")
    vell = _entity_of(graph, c2, "tomas_vell")
    assert reed != vell
    # Book 1 "Longpole" alias and the book 2 entity "longpole" are one man.
    assert _entity_of(graph, c2, "longpole") == reed
    # "Tomas" in a section where only Tomas Reed appears is Tomas Reed.
    assert _entity_of(graph, c1, "tomas") == reed
    # "Vell" belongs to the only full name it is part of.
    assert _entity_of(graph, c3, "vell") == vell
    # Mira / Mira Thorne in book 1 and book 2 are one woman.
    mira = _entity_of(graph, c1, "mira_thorne")
    assert _entity_of(graph, c1, "mira") == mira == _entity_of(graph, c2, "mira_thorne")
    # "Tomas" where both Tomases appear stays apart, flagged ambiguous.
    lone = _entity_of(graph, c3, "tomas")
    assert lone not in (reed, vell)
    row = next(e for e in graph.entities if e.entity_id == lone)
    assert row.ambiguous_with == sorted([reed, vell])

    # The alias table keeps counts and first appearance.
    aliases = {(a.entity_id, a.alias): a for a in graph.aliases}
    longpole = aliases[(reed, "Longpole")]
    assert longpole.instance_count == 2
    assert (longpole.first_book_no, longpole.first_section) == (1, "01")
    assert aliases[(reed, "Tomas Reed")].section_count == 3
    assert (reed, "Tomas") in aliases  # the alias the model listed is kept on the alias table


def test_every_merge_is_explained(tmp_path: Path):
    sections = write_series_sections(tmp_path / "sections")
    graph = build_graph(sections, crafted_results(), crafted_ontology())
    merged = [m for m in graph.merges if m.decision == "merged"]
    # Every instance that was joined to another one appears in a merge row of its entity.
    instances: dict[str, set[str]] = {}
    for row in graph.mentions:
        instances.setdefault(row.entity_id, set()).add(f"{row.raw_entity_id}@{row.section_id}")
    for entity_id, members in instances.items():
        if len(members) < 2:
            continue
        explained = set()
        for m in merged:
            if m.entity_id == entity_id:
                explained |= {m.left_instance, m.right_instance}
                assert m.rule and m.key
        assert members <= explained, (entity_id, members - explained)
    rules = {m.rule for m in merged}
    assert {"canonical_rule", "same_id", "shared_alias"} <= rules
    assert any(r.startswith("partial_name") for r in rules)


def test_do_not_merge_rule_keeps_instances_apart_even_with_a_shared_alias():
    ontology = default_ontology("x").model_copy(
        update={"do_not_merge": [DoNotMergeRule(ids=["tomas_reed", "tomas_vell"])]}
    )
    records = [
        EntityRecord(0, 0, "01", "c1", "tomas_reed", "Character", "Tomas Reed", ("the Ferryman",)),
        EntityRecord(1, 1, "02", "c2", "tomas_vell", "Character", "Tomas Vell", ("the Ferryman",)),
    ]
    res = resolve_entities(records, ontology)
    assert res.entity_id_of(0) != res.entity_id_of(1)
    refused = [d for d in res.decisions if d.decision == "kept_apart"]
    assert [d.rule for d in refused] == ["do_not_merge"]
    assert refused[0].key == "ferryman"


def test_type_conflict_keeps_same_name_apart_and_is_recorded():
    records = [
        EntityRecord(0, 0, "01", "c1", "greywatch", "Location", "Greywatch"),
        EntityRecord(1, 1, "02", "c2", "greywatch", "Organization", "Greywatch"),
        EntityRecord(2, 2, "03", "c3", "greywatch", "Location", "Greywatch"),
    ]
    res = resolve_entities(records, default_ontology("x"))
    assert res.entity_id_of(0) == res.entity_id_of(2) == "greywatch"
    assert res.entity_id_of(1) == "greywatch__organization"
    conflicts = [d for d in res.decisions if d.rule == "type_conflict"]
    assert len(conflicts) == 1 and conflicts[0].decision == "kept_apart"


def test_contradicting_relation_keeps_namesakes_apart():
    # The model related "Old Tom" to "Tom" in one section: they cannot be the same person,
    # even though both reduce to the name key "tom".
    records = [
        EntityRecord(0, 0, "01", "c1", "old_tom", "Character", "Old Tom"),
        EntityRecord(1, 0, "01", "c1", "tom", "Character", "Tom"),
    ]
    res = resolve_entities(records, default_ontology("x"), related_pairs=[(0, 1)])
    assert res.entity_id_of(0) != res.entity_id_of(1)
    assert [d.rule for d in res.decisions if d.decision == "kept_apart"] == [
        "contradicting_relation"
    ]
    merged = resolve_entities(records, default_ontology("x"))
    assert merged.entity_id_of(0) == merged.entity_id_of(1)


def test_name_normalization_folds_case_possessives_titles_and_quotes():
    assert name_keys("Captain Sable", person=True).core == "sable"
    assert name_keys("Mira\u2019s", person=True).full == "mira"
    assert name_keys("the Cinder Hound", person=True).full == "cinder hound"
    assert name_keys("LADY  Seren", person=True).core == "seren"
    assert name_keys("King's Landing", person=False).full == "kings landing"
    assert name_keys("the Captain", person=True).only_titles
    assert not name_keys("the old man", person=True).proper


def test_common_noun_aliases_never_glue_people_together(tmp_path: Path):
    sections = write_series_sections(tmp_path / "sections")
    f1, f3 = "river_tales_section_01.txt", "river_tales_section_03.txt"
    results = [
        ResultInput(
            "river_tales_section_01",
            ExtractionResult(
                entities=[entity(f1, "tomas_reed", "Tomas Reed", aliases=("the ferryman",))]
            ),
        ),
        ResultInput(
            "river_tales_section_03",
            ExtractionResult(
                entities=[entity(f3, "tomas_vell", "Tomas Vell", aliases=("the ferryman",))],
                relationships=[],
            ),
        ),
    ]
    graph = build_graph(sections, results, default_ontology("river_tales"))
    assert {e.entity_id for e in graph.entities} == {"tomas_reed", "tomas_vell"}


def test_attributes_are_merged_with_provenance(tmp_path: Path):
    sections = write_series_sections(tmp_path / "sections")
    f1, f3 = "river_tales_section_01.txt", "river_tales_section_03.txt"
    results = [
        ResultInput(
            "river_tales_section_01",
            ExtractionResult(
                entities=[
                    entity(f1, "tomas_reed", "Tomas Reed", attributes={"occupation": "ferryman"})
                ]
            ),
        ),
        ResultInput(
            "river_tales_section_03",
            ExtractionResult(
                entities=[
                    entity(
                        f3,
                        "tomas_reed",
                        "Tomas Reed",
                        attributes={"occupation": "ferryman", "title": "Longpole"},
                    ),
                    entity(f3, "prince_edric", "Prince Edric"),
                ],
                relationships=[
                    relation(f3, "tomas_reed", "LOYAL_TO", "prince_edric", "Tomas Reed.")
                ],
            ),
        ),
    ]
    graph = build_graph(sections, results, default_ontology("river_tales"))
    attrs = {(a.entity_id, a.name, a.value): a for a in graph.attributes}
    occ = attrs[("tomas_reed", "occupation", "ferryman")]
    assert occ.instance_count == 2 and occ.sections == ["01", "03"] and occ.first_section == "01"
    reed = next(e for e in graph.entities if e.entity_id == "tomas_reed")
    assert '"occupation": "ferryman"' in reed.attributes_json
    # Two grounded instances: confidence aggregates above either one (noisy-or).
    assert reed.confidence > reed.confidence_max


def test_an_alias_that_both_only_list_cannot_merge_two_full_names():
    # One section wrongly gives Corin the alias "Warden Thorne" that belongs to his father.
    records = [
        EntityRecord(
            0, 0, "01", "c1", "aldous_thorne", "Character", "Aldous Thorne", ("Warden Thorne",)
        ),
        EntityRecord(
            1, 1, "02", "c2", "corin_thorne", "Character", "Corin Thorne", ("Warden Thorne",)
        ),
        EntityRecord(2, 2, "03", "c3", "warden_thorne", "Character", "Warden Thorne"),
    ]
    res = resolve_entities(records, default_ontology("x"))
    assert res.entity_id_of(0) != res.entity_id_of(1)
    kept = [d for d in res.decisions if d.decision == "kept_apart"]
    assert [d.rule for d in kept] == ["distinct_full_names"]
    # An instance actually *called* "Warden Thorne" joins the first one that lists the alias.
    assert res.entity_id_of(2) == res.entity_id_of(0)
