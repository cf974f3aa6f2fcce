"""Building the graph: relationships, orphans, proposals, provenance, failures, determinism."""

import json
import random
from dataclasses import astuple
from pathlib import Path

import pytest

from fantasy_kg.domain.errors import UserError
from fantasy_kg.domain.graph.build import InputFailure, build_graph
from fantasy_kg.domain.graph.models import KnowledgeGraph
from fantasy_kg.domain.graph.proposals import accept_proposals, bump_version
from fantasy_kg.domain.graph.provenance import Provenance, parse_job
from fantasy_kg_tests.graph_fixtures import (
    SERIES,
    crafted_ontology,
    crafted_results,
    write_job_file,
    write_series_sections,
)


@pytest.fixture
def graph(tmp_path: Path) -> KnowledgeGraph:
    sections = write_series_sections(tmp_path / "sections")
    return build_graph(sections, crafted_results(), crafted_ontology())


def _rel(graph: KnowledgeGraph, source: str, rtype: str, target: str):
    return next(
        r
        for r in graph.relationships
        if (r.source_id, r.type, r.target_id) == (source, rtype, target)
    )


def test_relationship_to_an_entity_never_extracted_is_kept_and_flagged_orphan(graph):
    rel = _rel(graph, "aldous_thorne", "PARENT_OF", "mira_thorne")
    assert rel.orphan and rel.orphan_endpoints == ["aldous_thorne"]
    assert rel.grounded and rel.evidence_count == 1
    assert "aldous_thorne" not in {e.entity_id for e in graph.entities}
    assert graph.stats.orphan_relationships == 1


def test_ungrounded_relationship_is_kept_and_flagged(graph):
    rel = _rel(graph, "mira_thorne", "ENEMY_OF", "tomas_reed")  # undirected: sorted endpoints
    assert not rel.grounded and rel.grounded_evidence_count == 0 and rel.evidence_count == 1
    ev = next(e for e in graph.evidence if e.relationship_id == rel.relationship_id)
    assert ev.status == "not_found" and ev.char_start is None
    assert ev.book_no == 1 and ev.section_id == "01"  # still traceable to where it was claimed


def test_undirected_relationships_dedupe_and_keep_all_evidence(graph):
    rows = [
        r
        for r in graph.relationships
        if r.type == "ENEMY_OF" and "tomas_vell" in r.relationship_id + r.source_id + r.target_id
    ]
    assert len(rows) == 1
    rel = rows[0]
    assert (rel.source_id, rel.target_id) == ("tomas_reed", "tomas_vell")
    assert not rel.directed and rel.instance_count == 2 and rel.evidence_count == 2
    raw = {
        (e.raw_source, e.raw_target)
        for e in graph.evidence
        if e.relationship_id == rel.relationship_id
    }
    assert raw == {("tomas_vell", "tomas_reed"), ("tomas_reed", "tomas_vell")}


def test_endpoints_map_to_canonical_entities(graph):
    rel = _rel(graph, "mira_thorne", "LIVES_IN", "dunmere")  # the model wrote "mira"
    assert rel.evidence_count == 1 and rel.grounded
    assert _rel(graph, "tomas_vell", "LOYAL_TO", "prince_edric").grounded  # the model wrote "vell"
    assert all(r.first_section <= r.last_section for r in graph.relationships)


def test_types_outside_the_ontology_are_kept_and_proposed(graph):
    rel = _rel(graph, "tomas_vell", "BEARS_BANNER_OF", "greywatch")
    assert not rel.in_ontology
    prop = next(p for p in graph.proposals if p.name == "BEARS_BANNER_OF")
    assert prop.proposal_type == "new_relationship_type"
    assert prop.origin == "model+observed" and prop.status == "pending"
    assert prop.instance_count == 2 and prop.sections == ["02"]
    assert prop.examples == ["Tomas Vell rode into Greywatch with the prince's banner."]
    assert prop.source_types == ["Character"] and prop.target_types == ["Location"]


def test_accept_proposals_bumps_the_version_and_adds_the_type(graph):
    onto = crafted_ontology()
    new = accept_proposals(onto, ["bears banner of"], graph.proposals)
    assert (onto.version, new.version) == ("0.0.0", "0.1.0")
    added = new.relationship_type("BEARS_BANNER_OF")
    assert added is not None and added.source_types == ["Character"]
    assert onto.relationship_type("BEARS_BANNER_OF") is None
    with pytest.raises(UserError, match="no schema proposal named"):
        accept_proposals(onto, ["NOT_PROPOSED"], graph.proposals)
    assert bump_version("2.9.1") == "2.10.0" and bump_version("draft") == "draft.1"


def test_build_is_independent_of_result_order(tmp_path: Path):
    sections = write_series_sections(tmp_path / "sections")
    first = build_graph(sections, crafted_results(), crafted_ontology())
    shuffled = crafted_results()
    random.Random(7).shuffle(shuffled)
    second = build_graph(sections, shuffled, crafted_ontology())
    for table, rows in first.tables().items():
        assert [astuple(r) for r in rows] == [astuple(r) for r in second.tables()[table]], table


def test_provenance_ties_rows_to_batch_and_prompt_version(tmp_path: Path):
    sections = write_series_sections(tmp_path / "sections")
    results = crafted_results()
    job = write_job_file(tmp_path / "jobs", "msgbatch_01", SERIES, [r.custom_id for r in results])
    info = parse_job(json.loads(job.read_text()), job_file=str(job))
    assert info is not None
    graph = build_graph(
        sections,
        results,
        crafted_ontology(),
        Provenance(jobs=[info]),
        input_failures=[
            InputFailure("river_tales_section_02_b", "result_file", "invalid_json", "bad")
        ],
    )
    assert {m.batch_id for m in graph.mentions} == {"msgbatch_01"}
    assert {e.prompt_version for e in graph.evidence} == {"extract-v1-abc"}
    assert {s.backend for s in graph.sections} == {"local"}
    assert all(e.batch_ids == ["msgbatch_01"] for e in graph.entities)
    (cost,) = graph.costs
    assert (cost.estimated_usd, cost.actual_usd, cost.savings_usd) == (0.5, 0.4, 0.4)
    assert cost.input_tokens == 1000 and cost.cache_read_input_tokens == 50
    (job_row,) = graph.batch_jobs
    assert job_row.succeeded == 3 and job_row.errored == 1 and job_row.failure_count == 1
    stages = {(f.custom_id, f.stage): f for f in graph.failures}
    batch_failure = stages[("river_tales_section_09", "batch")]
    assert batch_failure.retryable and not batch_failure.resolved
    bad_file = stages[("river_tales_section_02_b", "result_file")]
    assert bad_file.section_id == "02" and bad_file.resolved  # section 02 has a result


def test_sections_without_results_are_reported_missing(tmp_path: Path):
    sections = write_series_sections(tmp_path / "sections")
    graph = build_graph(sections, crafted_results()[:2], crafted_ontology())
    missing = [f for f in graph.failures if f.stage == "missing"]
    assert [(f.section_id, f.custom_id) for f in missing] == [("03", "river_tales_section_03")]
    assert [s.status for s in graph.sections] == ["extracted", "extracted", "missing"]


def test_job_files_are_read_defensively():
    assert parse_job({"no": "id"}, job_file="x") is None
    info = parse_job(
        {"id": "b1", "request_counts": "garbage", "failures": [1, {"custom_id": "c"}], "cost": 3},
        job_file="x",
    )
    assert info is not None
    assert info.request_counts == {} and [f.custom_id for f in info.failures] == ["c"]
    assert info.actual_usd == 3.0 and info.mode == "batch"
