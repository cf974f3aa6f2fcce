"""Every asset materializes in process for the sample partition with the local backend.

Real parts only: the sample books, the embedded local Anthropic-compatible server driven through
the official SDK, a DuckDB file in a temp dir and a real Dagster instance. Re-materializing the
unchanged partition must create no batch and leave every DuckDB fact table identical (design
invariant 3).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from fantasy_kg.defs.keys import EXTRACTION_CODE_VERSION
from fantasy_kg.domain import paths
from fantasy_kg.domain.prompts import PROMPT_VERSION
from fantasy_kg_tests.conftest import REPO_ROOT
from fantasy_kg_tests.dagster_support import (
    SERIES,
    data_version,
    defs_for,
    materialize,
    materialized_keys,
    metadata_of,
    table_snapshot,
)

ALL = {
    "book_sections",
    "extraction_batch",
    "extraction_results",
    "knowledge_graph",
    "cost_summary",
    "graph_view",
}
PNG_DATA = "](data:image/png;base64,iVBORw0KGgo"  # a Markdown image whose bytes are a PNG


def _local_batches(data_dir: Path) -> list[str]:
    """Batches the local server has ever accepted (its on-disk store)."""
    folder = paths.local_api_dir(data_dir) / "batches"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.slow
def test_whole_graph_then_unchanged_rematerialization(sample_data_dir: Path) -> None:
    defs = defs_for(sample_data_dir, max_section_tokens=6000)
    db = paths.warehouse_path(sample_data_dir)
    with dg.instance_for_test() as instance:
        first = materialize(defs, instance)
        assert first.success, first.get_failed_step_keys()
        assert materialized_keys(first) == ALL
        checks = {e.check_name: e.passed for e in first.get_asset_check_evaluations()}
        assert checks == {
            "batches_not_stuck": True,
            "every_section_has_result_or_failure": True,
            "relationships_point_at_known_entities": True,
            "no_duplicate_entity_ids": True,
            "grounding_rate_above_floor": True,
            "actual_cost_within_budget": True,
            "view_holds_every_entity": True,
        }

        sections = metadata_of(first, "book_sections")
        assert sections["sections"] > 1
        assert sections["books"] == 3
        assert sections["input_tokens"] > 0
        assert "| section |" in sections["preview"]

        batch = metadata_of(first, "extraction_batch")
        assert batch["status"] == "submitted"
        assert batch["batch_id"].startswith("msgbatch_")
        assert batch["requests_submitted"] == sections["sections"]
        assert batch["backend"] == "local (local baseline extractor, not Claude)"
        assert batch["prompt_version"].startswith(PROMPT_VERSION)
        assert batch["processing_status"] == "ended"
        assert batch["estimated_cost_usd"] > 0

        results = metadata_of(first, "extraction_results")
        assert results["succeeded"] == sections["sections"]
        assert results["errored"] == results["expired"] == results["canceled"] == 0
        assert results["sections_with_result"] == sections["sections"]
        assert results["sections_missing"] == 0
        assert results["input_tokens"] > 0 and results["output_tokens"] > 0
        assert results["cost_usd"] < results["realtime_equivalent_usd"]

        graph = metadata_of(first, "knowledge_graph")
        assert graph["entities"] > 10 and graph["relationships"] > 10
        assert graph["dagster/row_count"] == graph["entities"]
        columns = {c.name for c in graph["dagster/column_schema"].columns}
        assert {"series", "entity_id", "type", "name"} <= columns
        assert {c.name for c in graph["schema/relationships"].columns} >= {"source_id", "target_id"}
        assert 0.9 <= graph["grounding_rate"] <= 1.0
        assert "| entity | type |" in graph["top_entities"]
        assert "local" in graph["backend"]

        costs = metadata_of(first, "cost_summary")
        assert costs["dagster/row_count"] == 1
        assert costs["billed_usd"] == 0.0  # the local backend bills nothing
        assert costs["actual_usd"] > 0  # ...but says what the model would have cost
        assert "claude" in costs["estimate_by_model"]
        assert PNG_DATA in costs["cost_chart"]  # planned vs actual per model and attempt
        assert "| model | attempt | planned $ | actual $ |" in costs["cost_chart"]

        view = metadata_of(first, "graph_view")
        page = Path(view["path"])
        assert page.is_file() and page.parent == sample_data_dir.resolve() / "views"
        assert view["link"] == page.as_uri()
        assert PNG_DATA in view["preview"]
        assert Path(view["preview_path"]).read_bytes()[:4] == b"\x89PNG"
        assert view["entities"] == graph["entities"]
        assert view["relationships"] == graph["relationships"]
        assert "local baseline" in view["made_by"]

        for key in ("extraction_batch", "extraction_results"):
            record = instance.get_latest_materialization_event(dg.AssetKey(key))
            assert record is not None and record.asset_materialization is not None
        with duckdb.connect(str(db), read_only=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM entities WHERE series = ?", [SERIES]
            ).fetchone()
            assert row is not None and row[0] == graph["entities"]
        jobs_before = sorted(p.name for p in paths.jobs_dir(sample_data_dir).glob("*.json"))
        server_batches = _local_batches(sample_data_dir)
        tables_before = table_snapshot(db)

        second = materialize(defs, instance)
        assert second.success
        assert materialized_keys(second) == ALL
        for key in ("book_sections", "extraction_batch", "extraction_results"):
            # Same data version: Dagster does not mark anything downstream as stale.
            assert data_version(first, key) is not None, key
            assert data_version(second, key) == data_version(first, key), key
        again = metadata_of(second, "extraction_batch")
        assert again["status"] == "up_to_date"
        assert again["new_batches"] == 0 and again["requests_submitted"] == 0
        assert again["sections_already_extracted"] == sections["sections"]
        assert metadata_of(second, "extraction_results")["batches_retrieved"] == []
        assert sorted(p.name for p in paths.jobs_dir(sample_data_dir).glob("*.json")) == jobs_before
        assert _local_batches(sample_data_dir) == server_batches
        assert table_snapshot(db) == tables_before
        with duckdb.connect(str(db), read_only=True) as conn:
            loads = conn.execute("SELECT count(*) FROM load_runs WHERE series = ?", [SERIES])
            assert loads.fetchone() == (2,)  # the audit log of loads is the one thing that grows


def test_anthropic_backend_without_key_fails_with_one_line(sample_data_dir: Path) -> None:
    defs = defs_for(sample_data_dir, backend="anthropic")
    with dg.instance_for_test() as instance:
        result = materialize(
            defs,
            instance,
            selection=[dg.AssetKey("book_sections"), dg.AssetKey("extraction_batch")],
        )
    assert not result.success
    assert materialized_keys(result) == {"book_sections"}  # sectioning needs no key
    assert result.get_failed_step_keys() == {"extraction_batch"}
    failure = result.get_step_failure_events()[0].step_failure_data
    assert failure.user_failure_data is not None
    assert failure.user_failure_data.description == (
        "backend 'anthropic' needs an API key: set ANTHROPIC_API_KEY or use --backend local"
    )


def test_budget_cap_refuses_to_submit(sample_data_dir: Path) -> None:
    defs = defs_for(sample_data_dir, max_cost_usd=0.0001)
    with dg.instance_for_test() as instance:
        result = materialize(
            defs,
            instance,
            selection=[dg.AssetKey("book_sections"), dg.AssetKey("extraction_batch")],
        )
    assert not result.success
    assert result.get_failed_step_keys() == {"extraction_batch"}
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert failure is not None and failure.description is not None
    assert "exceeds --max-cost" in failure.description and "nothing was sent" in failure.description
    assert not list(paths.jobs_dir(sample_data_dir).glob("*.json"))
    assert _local_batches(sample_data_dir) == []


def test_code_version_follows_the_prompt_version() -> None:
    assert EXTRACTION_CODE_VERSION.startswith(f"{PROMPT_VERSION}-")


@pytest.mark.slow
def test_cli_materialize_on_a_fresh_dagster_home(sample_data_dir: Path, tmp_path: Path) -> None:
    """The README's Dagster command, as a newcomer runs it: fresh DAGSTER_HOME, no API key."""
    home = tmp_path / ".dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HOME": str(tmp_path),
        "DAGSTER_HOME": str(home),
        "FANTASY_KG_DATA_DIR": str(sample_data_dir),
    }
    proc = subprocess.run(
        ["dg", "launch", "--assets", "book_sections*", "--partition", SERIES],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stderr
    # No SupersessionWarning, BetaWarning or other Python warning, no WARNING log line; the
    # local backend's banner shows once, as information.
    assert "Warning" not in proc.stderr, proc.stderr[:3000]
    assert " - WARNING - " not in proc.stderr, proc.stderr[:3000]
    assert proc.stderr.count("backend=local: deterministic baseline extractor") == 1
    with duckdb.connect(str(paths.warehouse_path(sample_data_dir)), read_only=True) as conn:
        row = conn.execute("SELECT count(*) FROM entities WHERE series = ?", [SERIES]).fetchone()
    assert row is not None and row[0] > 10
    assert "graph_view" in proc.stderr
    assert (sample_data_dir / "views" / f"{SERIES}.html").is_file()
    assert (sample_data_dir / "views" / f"{SERIES}_preview.png").is_file()
    jobs = list(paths.jobs_dir(sample_data_dir).glob("*.json"))
    assert len(jobs) == 1
    assert json.loads(jobs[0].read_text())["backend"] == "local"
