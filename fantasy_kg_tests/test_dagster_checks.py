"""Asset checks fail on seeded bad data, and a failed blocking check stops what depends on it.

The sample partition is materialized for real, then the data is damaged the way a bug would
damage it (rows written straight into DuckDB, a result file lost) and only the checks run again.
"""

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from fantasy_kg.domain import paths
from fantasy_kg_tests.dagster_support import (
    SERIES,
    checks_of,
    defs_for,
    materialize,
    materialized_keys,
)


def _run_checks(
    defs: dg.Definitions, instance: dg.DagsterInstance, asset: str
) -> dict[str, dg.AssetCheckEvaluation]:
    job = defs.resolve_implicit_global_asset_job_def()
    keys = {
        key
        for checks_def in checks_of(defs)
        for key in checks_def.check_keys
        if key.asset_key == dg.AssetKey(asset)
    }
    result = job.get_subset(asset_selection=set(), asset_check_selection=keys).execute_in_process(
        partition_key=SERIES, instance=instance, raise_on_error=False
    )
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.mark.slow
def test_checks_fail_on_seeded_bad_data_and_blocking_stops_downstream(
    sample_data_dir: Path,
) -> None:
    defs = defs_for(sample_data_dir, max_cost_usd=1.0)
    db = paths.warehouse_path(sample_data_dir)
    with dg.instance_for_test() as instance:
        first = materialize(defs, instance)
        assert first.success
        assert all(e.passed for e in first.get_asset_check_evaluations())

        with duckdb.connect(str(db)) as conn:
            # A relationship to an entity that was never extracted and is not flagged as orphan,
            # an entity id that differs only in case, every quote lost, and a billed batch.
            conn.execute(
                "INSERT INTO relationships (series, relationship_id, source_id, type, target_id, "
                "orphan, orphan_endpoints) SELECT series, 'seeded_rel', entity_id, 'ENEMY_OF', "
                "'nobody_at_all', false, [] FROM entities WHERE series = ? LIMIT 1",
                [SERIES],
            )
            conn.execute(
                "INSERT INTO entities (series, entity_id, type, name) "
                "SELECT series, upper(entity_id), type, name FROM entities "
                "WHERE series = ? ORDER BY entity_id LIMIT 1",
                [SERIES],
            )
            conn.execute("UPDATE evidence SET status = 'not_found' WHERE series = ?", [SERIES])
            conn.execute("UPDATE mentions SET status = 'not_found' WHERE series = ?", [SERIES])
            conn.execute(
                "INSERT INTO costs (series, batch_id, model, backend, mode, actual_usd) "
                "VALUES (?, 'msgbatch_seeded', 'claude-opus-4-5', 'anthropic', 'batch', 7.5)",
                [SERIES],
            )

        graph_checks = _run_checks(defs, instance, "knowledge_graph")
        assert {name: e.passed for name, e in graph_checks.items()} == {
            "relationships_point_at_known_entities": False,
            "no_duplicate_entity_ids": False,
            "grounding_rate_above_floor": False,
        }
        dangling = graph_checks["relationships_point_at_known_entities"].metadata
        assert dangling["unflagged_dangling_endpoints"].value == 1
        assert dangling["examples"].value == ["seeded_rel→nobody_at_all"]
        assert graph_checks["no_duplicate_entity_ids"].metadata["duplicate_ids"].value == 1
        assert graph_checks["grounding_rate_above_floor"].metadata["grounding_rate"].value == 0.0

        budget = _run_checks(defs, instance, "cost_summary")["actual_cost_within_budget"]
        assert not budget.passed
        assert budget.metadata["billed_usd"].value == 7.5
        assert budget.metadata["max_cost_usd"].value == 1.0

        # A lost result: no result file, no failure record, no batch working on it.
        lost = sorted(
            paths.extracted_dir(sample_data_dir).glob(f"{SERIES}_section_*_extracted.json")
        )
        lost[0].unlink()
        again = materialize(
            defs,
            instance,
            selection=dg.AssetSelection.assets("extraction_results").downstream(),
        )
        assert not again.success
        evaluations = {e.check_name: e for e in again.get_asset_check_evaluations()}
        check = evaluations["every_section_has_result_or_failure"]
        assert not check.passed
        assert check.metadata["missing"].value == 1
        assert check.metadata["missing_custom_ids"].value == [
            lost[0].name[: -len("_extracted.json")]
        ]
        # Blocking: the graph is not rebuilt from incomplete results.
        assert materialized_keys(again) == {"extraction_results"}
        assert "knowledge_graph" not in {e.step_key for e in again.get_step_success_events()}
