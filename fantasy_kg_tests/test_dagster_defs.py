"""The code location loads, and its asset graph is the one the README and the UI describe.

Keys, dependencies, groups, partitions, checks (and which of them block), the sensor's target,
pools and resource documentation are asserted here without running anything, so a refactor that
silently drops a dependency or a check fails fast.
"""

import importlib
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest

from fantasy_kg.defs import build_definitions
from fantasy_kg.defs.keys import DUCKDB_POOL
from fantasy_kg.defs.partitions import discover_series
from fantasy_kg.defs.resources import AnthropicBatchResource
from fantasy_kg.defs.sensors import SENSOR_NAME
from fantasy_kg_tests.conftest import REPO_ROOT
from fantasy_kg_tests.dagster_support import SERIES, assets_of, checks_of, defs_for

ASSETS = {
    "book_sections",
    "extraction_batch",
    "extraction_results",
    "knowledge_graph",
    "cost_summary",
    "graph_view",
}
DEPS = {
    "book_sections": set(),
    "extraction_batch": {"book_sections"},
    "extraction_results": {"extraction_batch"},
    "knowledge_graph": {"extraction_results"},
    "cost_summary": {"book_sections", "extraction_results"},
    "graph_view": {"knowledge_graph"},
}
CHECKS = {
    ("extraction_batch", "batches_not_stuck"): False,
    ("extraction_results", "every_section_has_result_or_failure"): True,
    ("knowledge_graph", "relationships_point_at_known_entities"): True,
    ("knowledge_graph", "no_duplicate_entity_ids"): True,
    ("knowledge_graph", "grounding_rate_above_floor"): False,
    ("cost_summary", "actual_cost_within_budget"): False,
    ("graph_view", "view_holds_every_entity"): False,
}


def test_code_location_module_loads(sample_data_dir: Path) -> None:
    module = importlib.reload(importlib.import_module("fantasy_kg.definitions"))
    defs = module.defs()  # @dg.definitions: the import built nothing, the call builds it
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == ASSETS


def test_asset_graph_keys_deps_groups_and_partitions(sample_data_dir: Path) -> None:
    defs = defs_for(sample_data_dir)
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == ASSETS
    for key, parents in DEPS.items():
        node = graph.get(dg.AssetKey(key))
        assert {p.to_user_string() for p in node.parent_keys} == parents, key
        assert node.partitions_def is not None
        assert node.partitions_def.get_partition_keys() == [SERIES]
        assert node.description and node.description.endswith(".")
        assert node.owners == ["team:fantasy-kg"]
        assert node.code_version
    groups = {k.to_user_string(): graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == {
        "book_sections": "ingest",
        "extraction_batch": "extraction",
        "extraction_results": "extraction",
        "knowledge_graph": "warehouse",
        "cost_summary": "warehouse",
        "graph_view": "warehouse",
    }
    # The test resources use the local backend: the badges must not credit Claude.
    assert "local" in graph.get(dg.AssetKey("extraction_batch")).kinds
    assert "claude" not in graph.get(dg.AssetKey("extraction_results")).kinds
    assert "duckdb" in graph.get(dg.AssetKey("knowledge_graph")).kinds


def test_lineage_badges_say_claude_only_when_claude_does_the_work(sample_data_dir: Path) -> None:
    claude = defs_for(sample_data_dir, backend="anthropic", api_key="sk-test-not-a-real-key")
    graph = claude.resolve_asset_graph()
    assert {"claude", "anthropic"} <= graph.get(dg.AssetKey("extraction_batch")).kinds
    assert "claude" in graph.get(dg.AssetKey("extraction_results")).kinds
    local = defs_for(sample_data_dir, backend="local").resolve_asset_graph()
    for key in ("extraction_batch", "extraction_results"):
        assert "claude" not in local.get(dg.AssetKey(key)).kinds
        assert "local" in local.get(dg.AssetKey(key)).kinds


def test_duckdb_steps_share_one_pool(sample_data_dir: Path) -> None:
    defs = defs_for(sample_data_dir)
    pools = {spec.key.to_user_string(): a.op.pool for a in assets_of(defs) for spec in a.specs}
    assert pools["knowledge_graph"] == DUCKDB_POOL
    assert pools["cost_summary"] == DUCKDB_POOL
    assert pools["graph_view"] == DUCKDB_POOL
    assert pools["extraction_batch"] is None
    duckdb_checks = [c for c in checks_of(defs) if "duckdb" in c.required_resource_keys]
    assert len(duckdb_checks) == 5
    assert all(c.op.pool == DUCKDB_POOL for c in duckdb_checks)


def test_checks_and_which_block(sample_data_dir: Path) -> None:
    defs = defs_for(sample_data_dir)
    found: dict[tuple[str, str], bool] = {}
    for checks_def in checks_of(defs):
        for spec in checks_def.check_specs:
            found[(spec.asset_key.to_user_string(), spec.name)] = spec.blocking
            assert spec.description
    assert found == CHECKS


def test_sensor_targets_everything_downstream_of_the_batch(sample_data_dir: Path) -> None:
    defs = defs_for(sample_data_dir)
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.job_name is not None
    job = defs.resolve_job_def(sensor.job_name)
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "extraction_results",
        "knowledge_graph",
        "cost_summary",
        "graph_view",
    }


def test_new_series_folder_becomes_a_partition_on_reload(sample_data_dir: Path) -> None:
    new = sample_data_dir / "books" / "The Iron Tide"
    new.mkdir()
    (new / "01_first.txt").write_text("Chapter 1\n\nMara sailed north.\n", encoding="utf-8")
    (sample_data_dir / "books" / ".hidden").mkdir()
    (sample_data_dir / "books" / "!!!").mkdir()
    (sample_data_dir / "books" / "!!!" / "01.txt").write_text("Text.\n", encoding="utf-8")
    defs = build_definitions(sample_data_dir)
    node = defs.resolve_asset_graph().get(dg.AssetKey("book_sections"))
    assert node.partitions_def is not None
    assert node.partitions_def.get_partition_keys() == [SERIES, "the_iron_tide"]


def test_no_books_folder_means_no_partitions(tmp_path: Path) -> None:
    assert discover_series(tmp_path / "nothing_here") == []
    defs = build_definitions(tmp_path)
    dg.Definitions.validate_loadable(defs)


def test_every_resource_field_is_documented() -> None:
    for name, field in AnthropicBatchResource.model_fields.items():
        assert field.description, f"AnthropicBatchResource.{name} has no description"


def test_api_key_is_passed_as_env_var_and_never_shown(
    sample_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-secret-value")
    defs = build_definitions(sample_data_dir)
    assert defs.resources is not None
    resource = defs.resources["anthropic_batches"]
    assert isinstance(resource, AnthropicBatchResource)
    assert isinstance(resource.api_key, dg.EnvVar)
    assert "sk-ant-test-secret-value" not in repr(resource)
    assert "sk-ant-test-secret-value" not in str(defs.resources)


def test_readme_dagster_home_applies_the_instance_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``export DAGSTER_HOME=$PWD/.dagster_home`` in a fresh clone: no file copied by hand."""
    home = tmp_path / ".dagster_home"
    home.mkdir()
    # A fresh clone's .dagster_home holds the tracked file and nothing else.
    shutil.copy(REPO_ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        info = instance.event_log_storage.get_concurrency_info(DUCKDB_POOL)
        assert info.limit == 1
        config = instance.get_concurrency_config()
        granularity = config.pool_config.pool_granularity
        assert granularity is not None and granularity.value == "op"
        assert config.run_queue_config is not None
        assert config.run_queue_config.max_concurrent_runs > 1
        assert instance.run_coordinator.dequeue_use_threads  # type: ignore[attr-defined]
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds > 0
        assert instance.nux_enabled is False
        assert Path(instance.root_directory) == home  # its storage goes beside the yaml


def test_dagster_home_tracks_only_its_yaml_and_no_root_yaml_shadows_it() -> None:
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    # `dg dev` warns when a dagster.yaml sits in the current folder but DAGSTER_HOME is elsewhere.
    assert not (REPO_ROOT / "dagster.yaml").exists()
    assert not (REPO_ROOT / "dagster.yml").exists()

    def ignored(path: str) -> bool:
        proc = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "check-ignore", "-q", "--no-index", path], check=False
        )
        return proc.returncode == 0

    assert not ignored(".dagster_home/dagster.yaml")
    assert ignored(".dagster_home/storage/runs.db")
    assert ignored(".dagster_home/history/runs.db")
    assert ignored(".tmp_dagster_home_abc123/dagster.yaml")
