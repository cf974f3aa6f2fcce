"""Series-wide naming rules that the embedded extractor's per-section answers rely on.

Each section names its entities on its own, so the series graph sees "Ozma" in fifty sections,
"Royal Ozma" in two and "Ruler of the Dominion of Rinkitink" once. These tests feed resolution
records written for the test (not from any book) and check the general rules: the display name
is an established proper name, a dominant lone name is one entity, and a person/place type
conflict goes to the clear majority.
"""

from fantasy_kg.domain.graph.naming import choose_name
from fantasy_kg.domain.graph.resolution import EntityRecord, resolve_entities
from fantasy_kg.domain.schemas import default_ontology


def _records(*names: tuple[str, str, int]) -> list[EntityRecord]:
    """Records for (name, type, how many sections), one section each, in story order."""
    out: list[EntityRecord] = []
    for name, etype, n in names:
        for _ in range(n):
            i = len(out)
            rid = name.lower().replace(" ", "_").replace("-", "_")
            out.append(EntityRecord(i, i, f"{i:02d}", f"c{i}", rid, etype, name))
    return out


def test_the_display_name_is_an_established_name_not_a_glued_word_or_a_role_phrase() -> None:
    recs = _records(
        ("Ozma", "Character", 9),
        ("Royal Ozma", "Character", 2),
        ("Ozma Two-Step", "Character", 1),
    )
    assert choose_name(recs, list(range(len(recs))), True)[1] == "Ozma"
    recs = _records(
        ("Rinkitink", "Character", 3), ("Ruler of the Dominion of Rinkitink", "Character", 3)
    )
    assert choose_name(recs, list(range(len(recs))), True)[1] == "Rinkitink"
    # A full name used often enough still wins over the bare first name.
    recs = _records(("Mira", "Character", 5), ("Mira Thorne", "Character", 3))
    assert choose_name(recs, list(range(len(recs))), True)[1] == "Mira Thorne"
    # Places keep their most complete name ("Land of Oz" is a name, not a role phrase).
    recs = _records(("Oz", "Location", 5), ("Land of Oz", "Location", 2))
    assert choose_name(recs, list(range(len(recs))), False)[1] == "Land of Oz"


def test_a_dominant_lone_name_is_one_entity_with_the_full_name_that_leads() -> None:
    recs = _records(
        ("Dorothy", "Character", 9),
        ("Dorothy Gale", "Character", 2),
        ("Dorothy Tries", "Character", 1),
        ("Scarecrow", "Character", 10),
        ("Friend Scarecrow", "Character", 1),
        ("Scarecrow King", "Character", 1),
    )
    res = resolve_entities(recs, default_ontology("x"))
    ids: dict[str, set[str]] = {r.name: set() for r in recs}
    for r in recs:
        ids[r.name].add(res.entity_id_of(r.index))
    assert len(ids["Dorothy"]) == 1 and ids["Dorothy"] == ids["Dorothy Gale"]
    assert ids["Dorothy Tries"] != ids["Dorothy"]
    # No long name leads the Scarecrow's and all are strays: they stay apart, the lone name is
    # one entity.
    assert len(ids["Scarecrow"]) == 1
    assert ids["Friend Scarecrow"] != ids["Scarecrow"] != ids["Scarecrow King"]
    rules = {d.rule for d in res.decisions if d.decision == "merged"}
    assert {"dominant_name", "dominant_name_full"} <= rules


def test_two_full_names_sharing_a_dominant_first_name_stay_apart() -> None:
    recs = _records(
        ("Tomas", "Character", 8), ("Tomas Reed", "Character", 1), ("Tomas Vell", "Character", 1)
    )
    res = resolve_entities(recs, default_ontology("x"))
    assert res.entity_id_of(8) != res.entity_id_of(9)
    # Neither full name leads and neither is a stray: no lone-name gathering, each lone
    # "Tomas" is left to the per-section choice.
    assert not any(d.rule.startswith("dominant_name") for d in res.decisions)


def test_a_name_typed_person_and_place_takes_the_majority_type() -> None:
    recs = _records(("Oz", "Location", 4), ("Oz", "Character", 2), ("Kansas", "Location", 1))
    res = resolve_entities(recs, default_ontology("x"))
    assert len({res.entity_id_of(i) for i in range(6)}) == 1
    assert res.clusters[res.cluster_of[0]].type == "Location"
    retyped = [d for d in res.decisions if d.rule == "majority_type"]
    assert len(retyped) == 2 and all("4 of 6" in d.detail for d in retyped)
    # A close call (3 against 3) is left apart and reported as a type conflict.
    close = _records(("Ev", "Location", 3), ("Ev", "Character", 3))
    res = resolve_entities(close, default_ontology("x"))
    assert res.entity_id_of(0) != res.entity_id_of(5)
    assert any(d.rule == "type_conflict" for d in res.decisions)


def test_role_phrases_of_different_people_do_not_share_a_key() -> None:
    # Without its title, "King of Ev" and "Queen of Ev" both reduce to "of ev".
    recs = _records(
        ("King of Ev", "Character", 2), ("Queen of Ev", "Character", 2), ("Ev", "Location", 2)
    )
    res = resolve_entities(recs, default_ontology("x"))
    assert res.entity_id_of(0) == res.entity_id_of(1) != res.entity_id_of(2)
    assert res.entity_id_of(2) != res.entity_id_of(4)
