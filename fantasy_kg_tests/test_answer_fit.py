"""Issue 11: sections sized for the answer, effort and thinking priced, sampling refused by API
version, results reused only when the same backend, model, effort and max_tokens made them.

The pre-flight and reuse tests run the real CLI in a subprocess against the project's loopback
server with a fake key (the anthropic backend), and use the server's request log as the witness
of what was (not) sent.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pytest

from fantasy_kg.domain.answer import (
    ANSWER_MARGIN,
    DEFAULT_EFFORT,
    EFFORT_LEVELS,
    effective_effort,
    expected_answer,
    max_section_tokens_for_answer,
    request_effort,
    thinking_allowance,
)
from fantasy_kg.domain.catalog import get_model
from fantasy_kg.domain.errors import PreflightError
from fantasy_kg.domain.prompts import build_prompt
from fantasy_kg.domain.schemas import ExtractionResult, default_ontology
from fantasy_kg.llm.requests import (
    LEGACY_API_VERSION,
    build_extraction_batch_request,
    preflight,
)
from fantasy_kg.local_api import FaultPlan
from fantasy_kg_tests.conftest import REPO_ROOT
from fantasy_kg_tests.llm_support import cli_env, create_bodies, run_cli, server

THINKING = "claude-sonnet-5-5"
FACTS = ("sections", "mentions", "evidence")
PLAIN = "claude-haiku-4-5"


# --- the sizing rule ----------------------------------------------------------------------


def test_thinking_grows_with_effort_and_is_zero_without_thinking() -> None:
    think, plain = get_model(THINKING), get_model(PLAIN)
    sizes = [thinking_allowance(e, think, 3000) for e in EFFORT_LEVELS]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes) and sizes[0] > 0
    assert thinking_allowance("high", plain, 3000) == 0
    # The default effort is low on a thinking model, none on a model that does not think.
    assert request_effort(think, None) == DEFAULT_EFFORT == "low"
    assert request_effort(plain, "high") is None
    # Without an effort in the request, a thinking model runs at its own default.
    assert effective_effort(think, None) == think.default_effort


@pytest.mark.parametrize("model", [THINKING, PLAIN, "claude-opus-5-5", "claude-opus-4-5"])
@pytest.mark.parametrize("effort", [None, "low", "high", "max"])
@pytest.mark.parametrize("max_tokens", [4000, 32000, 64000])
def test_the_largest_fitting_section_fits_and_one_more_percent_does_not(
    model: str, effort: str | None, max_tokens: int
) -> None:
    info = get_model(model)
    run = effective_effort(info, request_effort(info, effort))
    cap = max_section_tokens_for_answer(info, max_tokens=max_tokens, effort=run)
    if cap == 0:  # e.g. thinking at max needs more than 4,000 tokens by itself
        assert not expected_answer(1, info, max_tokens=max_tokens, effort=run).fits
        return
    assert expected_answer(cap, info, max_tokens=max_tokens, effort=run).fits
    over = expected_answer(int(cap * 1.01) + 10, info, max_tokens=max_tokens, effort=run)
    assert not over.fits
    assert over.required_tokens >= (over.answer_tokens + over.thinking_tokens) * ANSWER_MARGIN


# --- pre-flight ---------------------------------------------------------------------------


def _request(words: int, *, model: str = THINKING, max_tokens: int = 32000, **kw: Any) -> Any:
    prompt = build_prompt(
        series_name="Test",
        ontology=default_ontology("test"),
        book_names=["One"],
        section_id="01",
        text="word " * words,
    ).render()
    return build_extraction_batch_request(
        "test_section_01", prompt, model, ExtractionResult, max_tokens, **kw
    )


def test_preflight_refuses_a_request_whose_answer_cannot_fit_and_names_the_fix() -> None:
    fine = preflight([_request(5_000)], THINKING)
    size = fine.requests[0].answer
    assert size is not None and size.fits and size.thinking_tokens > 0
    # No effort in a hand-built request: the model's default (high on Sonnet 5.5) is priced.
    assert size.effort == "high"
    with pytest.raises(PreflightError) as err:
        preflight([_request(150_000)], THINKING)
    msg = err.value.message
    assert "test_section_01" in msg and "max_tokens 32,000" in msg
    assert "--max-section-tokens" in msg and "\n" not in msg


def test_thinking_is_in_the_estimate() -> None:
    low = preflight([_request(8_000, effort="low")], THINKING)
    high = preflight([_request(8_000, effort="high")], THINKING)
    assert high.expected_thinking_tokens > low.expected_thinking_tokens > 0
    assert high.estimated_cost.batch_usd > low.estimated_cost.batch_usd
    plain = preflight([_request(8_000, model=PLAIN)], PLAIN)
    assert plain.expected_thinking_tokens == 0


def test_sampling_parameters_are_refused_by_api_version_not_by_model() -> None:
    # Opus 4.5 accepted temperature under the old API version; 2026-10-21 rejects it everywhere.
    body = _request(2_000, model="claude-opus-4-5")
    body["params"]["temperature"] = 0.0  # built by hand, as the guide did
    with pytest.raises(PreflightError, match=r"API version 2026-10-21 rejects temperature"):
        preflight([body], "claude-opus-4-5")
    report = preflight([body], "claude-opus-4-5", api_version=LEGACY_API_VERSION)
    assert len(report.requests) == 1


# --- the CLI against a loopback server with a fake key ---------------------------------------


def _books(data_dir: Path) -> None:
    for sub in ("books", "schemas"):
        shutil.copytree(REPO_ROOT / "data" / sub, data_dir / sub, dirs_exist_ok=True)


def test_run_refuses_sections_too_large_for_the_answer_before_sending(
    data_dir: Path, tmp_path: Path
) -> None:
    _books(data_dir)
    with server(tmp_path / "state") as srv:
        env = cli_env(srv, data_dir)
        proc = run_cli(
            [
                "run",
                "--series",
                "ashen_crown",
                "--max-section-tokens",
                "200000",
                "--max-tokens",
                "4000",
            ],
            env,
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "ashen_crown_section_01" in last
        assert "--max-section-tokens" in last
        assert "Traceback" not in proc.stderr
        assert "\n\nerror:" not in proc.stderr
        assert create_bodies(srv) == []


def test_estimate_shows_thinking_and_refuses_a_plan_that_cannot_fit(
    data_dir: Path, tmp_path: Path
) -> None:
    _books(data_dir)
    env = {**cli_env_no_key(data_dir)}
    ok = run_cli(["sections", "--series", "ashen_crown"], env)
    assert ok.returncode == 0, ok.stderr
    est = run_cli(["estimate", "--series", "ashen_crown", "--json"], env)
    assert est.returncode == 0, est.stderr
    doc = json.loads(est.stdout)
    model = doc["models"][0]
    assert model["effort"] == "low"
    assert model["total"]["thinking_tokens"] > 0
    assert all(s["fits"] for s in model["sections"])
    tight = run_cli(["estimate", "--series", "ashen_crown", "--max-tokens", "1500"], env)
    assert tight.returncode == 2
    assert "CUT" in tight.stdout
    assert tight.stderr.strip().splitlines()[-1].startswith("error: ashen_crown section 01")


def cli_env_no_key(data_dir: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env["FANTASY_KG_DATA_DIR"] = str(data_dir)
    return env


def _backends(db: Path, tables: tuple[str, ...] = FACTS) -> set[tuple[str, str]]:
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = []
        for table in tables:
            rows += conn.execute(f"SELECT DISTINCT backend, model FROM {table}").fetchall()
    return {(str(b), str(m)) for b, m in rows}


def test_a_key_after_the_quickstart_extracts_again_and_says_why(
    data_dir: Path, tmp_path: Path
) -> None:
    _books(data_dir)
    quick = run_cli(["run", "--series", "ashen_crown"], cli_env_no_key(data_dir))
    assert quick.returncode == 0, quick.stderr[-2000:]
    db = data_dir / "fantasy_kg.duckdb"
    assert {b for b, _ in _backends(db)} == {"local"}
    with server(tmp_path / "state") as srv:
        env = cli_env(srv, data_dir)
        fast = ["--poll-interval", "0.2"]
        proc = run_cli(["run", "--series", "ashen_crown", *fast], env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "were made with backend local (now anthropic)" in proc.stderr
        assert "backend=anthropic: Claude claude-sonnet-5-5 (effort low)" in proc.stderr
        assert len(create_bodies(srv)) == 1
        assert {b for b, _ in _backends(db)} == {"anthropic"}
        # The batch history keeps both: which batch of which backend, with its cost.
        assert {b for b, _ in _backends(db, ("batch_jobs",))} == {"local", "anthropic"}
        again = run_cli(["run", "--series", "ashen_crown", *fast], env)
        assert again.returncode == 0 and len(create_bodies(srv)) == 1
        assert json.loads(again.stdout)["extraction"]["cost_usd"]["batch"] == 0.0
        forced = run_cli(["run", "--series", "ashen_crown", "--force", *fast], env)
        assert forced.returncode == 0, forced.stderr[-2000:]
        assert "--force" in forced.stderr and len(create_bodies(srv)) == 2
        body = create_bodies(srv)[-1]["requests"][0]["params"]
        assert body["output_config"]["effort"] == "low"
        assert "temperature" not in body


def test_an_unreachable_api_says_so_in_one_line(data_dir: Path) -> None:
    _books(data_dir)
    env = cli_env_no_key(data_dir) | {
        "ANTHROPIC_API_KEY": "sk-ant-test-unreachable-0000",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
    }
    proc = run_cli(["run", "--series", "ashen_crown"], env, timeout=300)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach the Anthropic API at http://127.0.0.1:9 (")
    assert "use --backend local" in last
    assert "\n\nerror:" not in proc.stderr and "interrupted submission" not in proc.stderr
    assert "sk-ant-test-unreachable" not in proc.stderr


# --- done-when: Oz on every default, answered like Claude ------------------------------------


def test_oz_with_every_default_finishes_in_one_batch_round_like_claude(
    data_dir: Path, tmp_path: Path, oz_dir: Path
) -> None:
    """Claude-like answers (15 % of the section plus thinking, cut at max_tokens) all fit."""
    with server(tmp_path / "state", FaultPlan(claude_like=0.15)) as srv:
        env = cli_env(srv, data_dir)
        proc = run_cli(
            ["run", "--series", "oz", "--books-dir", str(oz_dir.parent), "--poll-interval", "0.2"],
            env,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        billed = srv.billed_usage()[get_model(THINKING).id]
    doc = json.loads(proc.stdout)
    ext = doc["extraction"]
    assert ext["sections"] == ext["written"] >= 50 and ext["failed"] == 0
    assert ext["truncated"] == 0 and ext["followup_batches"] == 0
    assert len(create_bodies(srv)) == 1  # one batch round
    assert billed["max_tokens_stops"] == 0 and billed["thinking_tokens"] > 0
    with duckdb.connect(str(data_dir / "fantasy_kg.duckdb"), read_only=True) as conn:
        row = conn.execute(
            "SELECT sum(estimated_usd), sum(actual_usd), sum(thinking_tokens) FROM costs "
            "WHERE series = 'oz'"
        ).fetchone()
    assert row is not None
    estimated, actual, thinking = row
    assert thinking == billed["thinking_tokens"]
    assert abs(actual - estimated) <= 0.25 * estimated, (actual, estimated)


def _entity_names(db: Path) -> set[str]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return {str(r[0]) for r in conn.execute("SELECT name FROM entities").fetchall()}


def test_the_local_backend_cuts_at_the_cap_and_the_split_loses_nothing(tmp_path: Path) -> None:
    whole, capped = tmp_path / "whole", tmp_path / "capped"
    for d in (whole, capped):
        _books(d)
    ok = run_cli(["run", "--series", "ashen_crown"], cli_env_no_key(whole))
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads(ok.stdout)["extraction"]["truncated"] == 0
    # The baseline writes a long answer for the dense sample: 6,000 tokens cannot hold it.
    cut = run_cli(
        ["run", "--series", "ashen_crown", "--max-tokens", "6000"], cli_env_no_key(capped)
    )
    assert cut.returncode == 0, cut.stderr[-3000:]
    ext = json.loads(cut.stdout)["extraction"]
    assert ext["truncated"] >= 1 and ext["followup_batches"] >= 1 and ext["failed"] == 0
    assert "WARNING fantasy_kg.local_api.engine: local API: answer to custom_id" in cut.stderr
    assert "answers were cut at max_tokens and split" in cut.stderr
    found = _entity_names(whole / "fantasy_kg.duckdb")
    assert found and found <= _entity_names(capped / "fantasy_kg.duckdb")
    with duckdb.connect(str(capped / "fantasy_kg.duckdb"), read_only=True) as conn:
        truncated = conn.execute("SELECT sum(truncated) FROM batch_jobs").fetchone()
    assert truncated is not None and truncated[0] == ext["truncated"]
