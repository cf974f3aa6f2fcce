"""Issue 11.3: the local backend answers like Claude at the cap, thinks by effort, and has a
Claude-like mode that answers at Claude's size. Driven through the real SDK over loopback."""

import itertools
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from fantasy_kg.domain.answer import EFFORT_LEVELS, effective_effort, thinking_allowance
from fantasy_kg.domain.catalog import get_model
from fantasy_kg.domain.prompts import build_prompt
from fantasy_kg.domain.schemas import (
    WireExtractionResult,
    default_ontology,
    parse_extraction,
    wire_json_schema,
)
from fantasy_kg.domain.text.tokens import estimate_tokens
from fantasy_kg.local_api import ClaudeLikeResponder, FaultPlan, LocalServer, start_local_server

KEY = "sk-test-fantasy-kg-local-cap"
THINKER = "claude-sonnet-5-5"  # adaptive thinking, default effort high
PLAIN = "claude-haiku-4-5"  # no thinking unless asked


@pytest.fixture(scope="module")
def oz_text() -> str:
    """About 20,000 tokens of Oz prose (the last chapters of book 1): real text, real names."""
    from fantasy_kg_tests.conftest import CORPUS_DIR

    path = CORPUS_DIR / "oz" / "01_the_wonderful_wizard_of_oz.txt"
    if not path.is_file():
        pytest.skip(f"shared corpus not found at {path}")
    return path.read_text(encoding="utf-8")[-60_000:]


def params(text: str, model: str, max_tokens: int, **config: Any) -> Any:
    """An extraction request as the pipeline builds it (prompt + output schema)."""
    prompt = build_prompt(
        series_name="Ashen Crown",
        ontology=default_ontology("Ashen Crown"),
        book_names=["The Ashen Crown"],
        section_id="ashen_crown_section_01",
        text=text,
    ).render()
    output_config: dict[str, Any] = {
        "format": {"type": "json_schema", "schema": wire_json_schema()},
        **config,
    }
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
        "output_config": output_config,
    }


def text_of(message: Any) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def thinking_of(message: Any) -> int:
    details = message.usage.output_tokens_details
    return int(details.thinking_tokens) if details and details.thinking_tokens else 0


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[LocalServer]:
    with start_local_server(tmp_path / "api", faults=FaultPlan()) as server:
        yield server


def client_for(server: LocalServer) -> anthropic.Anthropic:
    # An explicit timeout: the SDK refuses non-streaming calls with a large max_tokens otherwise.
    return anthropic.Anthropic(api_key=KEY, base_url=server.base_url, timeout=120, max_retries=0)


@pytest.mark.parametrize("model", [PLAIN, THINKER])
def test_an_answer_over_max_tokens_is_cut_where_the_cap_falls(
    srv: LocalServer, model: str, caplog: pytest.LogCaptureFixture, oz_text: str
) -> None:
    client = client_for(srv)
    info = get_model(model)
    full = client.messages.create(**params(oz_text, model, info.max_output_tokens))
    assert full.stop_reason == "end_turn"
    whole = text_of(full)
    WireExtractionResult.model_validate_json(whole)  # the uncut answer is whole, valid JSON
    answer_tokens = full.usage.output_tokens - thinking_of(full)
    assert answer_tokens == estimate_tokens(whole, info.tokenizer_factor)

    cap = thinking_of(full) + answer_tokens // 2
    with caplog.at_level(logging.WARNING, logger="fantasy_kg.local_api"):
        cut = client.messages.create(**params(oz_text, model, cap))
    assert cut.stop_reason == "max_tokens"
    assert cut.usage.output_tokens == cap
    text = text_of(cut)
    assert text and whole.startswith(text) and len(text) < len(whole)
    thinking = thinking_of(cut)
    assert estimate_tokens(text, info.tokenizer_factor) <= cap - thinking
    # Cut where the cap falls: one more character would not have fit.
    assert estimate_tokens(whole[: len(text) + 1], info.tokenizer_factor) > cap - thinking
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    (warning,) = [r for r in caplog.records if "cut at max_tokens" in r.getMessage()]
    assert warning.levelno == logging.WARNING and f"max_tokens={cap}" in warning.getMessage()
    assert srv.billed_usage()[info.id]["max_tokens_stops"] == 1


def test_a_cut_batch_answer_names_its_custom_id(
    srv: LocalServer, caplog: pytest.LogCaptureFixture, oz_text: str
) -> None:
    client = client_for(srv)
    with caplog.at_level(logging.WARNING, logger="fantasy_kg.local_api"):
        batch = client.messages.batches.create(
            requests=[
                {"custom_id": "crowd_01", "params": params(oz_text, PLAIN, 500)},
                {"custom_id": "crowd_02", "params": params(oz_text, PLAIN, 60_000)},
            ]
        )
        deadline = time.monotonic() + 60  # a safety net, not a speed assertion
        while client.messages.batches.retrieve(batch.id).processing_status != "ended":
            assert time.monotonic() < deadline, "batch never ended"
            time.sleep(0.05)
        results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    cut, whole = results["crowd_01"].message, results["crowd_02"].message  # type: ignore[union-attr]
    assert (cut.stop_reason, cut.usage.output_tokens) == ("max_tokens", 500)
    assert text_of(whole).startswith(text_of(cut)) and whole.stop_reason == "end_turn"
    messages = [r.getMessage() for r in caplog.records if "cut at max_tokens" in r.getMessage()]
    assert len(messages) == 1 and "custom_id crowd_01" in messages[0]


def test_thinking_tokens_grow_with_effort_on_a_thinking_model_only(
    srv: LocalServer, oz_text: str
) -> None:
    client = client_for(srv)
    thinker, plain = get_model(THINKER), get_model(PLAIN)
    by_effort = {}
    for effort in EFFORT_LEVELS:
        message = client.messages.create(**params(oz_text, THINKER, 100_000, effort=effort))
        assert message.stop_reason == "end_turn"
        assert [b.type for b in message.content] == ["thinking", "text"]
        thinking = thinking_of(message)
        answer = estimate_tokens(text_of(message), thinker.tokenizer_factor)
        assert message.usage.output_tokens == answer + thinking
        # The plan's allowance and the emulation are one function: they agree exactly.
        assert thinking == thinking_allowance(effort, thinker, answer)
        by_effort[effort] = thinking
    values = [by_effort[e] for e in EFFORT_LEVELS]
    assert all(a < b for a, b in itertools.pairwise(values)), by_effort
    # No effort sent: the model's default effort (high on Sonnet 5.5).
    default = client.messages.create(**params(oz_text, THINKER, 100_000))
    assert thinker.default_effort == "high" and thinking_of(default) == by_effort["high"]
    # Same request, same usage (idempotency tests compare runs).
    again = client.messages.create(**params(oz_text, THINKER, 100_000))
    assert again.usage.model_dump() == default.usage.model_dump()
    assert again.content[0].model_dump() == default.content[0].model_dump()
    # Thinking switched off by the request: no thinking billed.
    off = client.messages.create(**params(oz_text, THINKER, 100_000), thinking={"type": "disabled"})
    assert [b.type for b in off.content] == ["text"] and thinking_of(off) == 0
    # A model that does not think bills no thinking, whatever the effort.
    plain_efforts: tuple[str | None, ...] = (None, "max")
    for plain_effort in plain_efforts:
        config = {"effort": plain_effort} if plain_effort else {}
        message = client.messages.create(**params(oz_text, PLAIN, 60_000, **config))
        assert [b.type for b in message.content] == ["text"]
        assert message.usage.output_tokens_details is None
        assert message.usage.output_tokens == estimate_tokens(
            text_of(message), plain.tokenizer_factor
        )
        assert thinking_allowance(plain_effort, plain, 10_000) == 0
    billed = srv.billed_usage()
    assert billed[thinker.id]["thinking_tokens"] == sum(values) + 2 * by_effort["high"]
    assert billed[plain.id]["thinking_tokens"] == 0


def test_thinking_counts_toward_max_tokens(srv: LocalServer, oz_text: str) -> None:
    client = client_for(srv)
    info = get_model(THINKER)
    # medium: thinking is half the answer, so a cap just above the answer keeps all of it.
    full = client.messages.create(**params(oz_text, THINKER, 100_000, effort="medium"))
    answer = full.usage.output_tokens - thinking_of(full)
    # The answer alone fits the cap, answer + thinking does not: cut.
    cut = client.messages.create(**params(oz_text, THINKER, answer + 10, effort="medium"))
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == answer + 10
    assert thinking_of(cut) == thinking_of(full)
    room = answer + 10 - thinking_of(cut)
    assert estimate_tokens(text_of(cut), info.tokenizer_factor) <= room < answer
    assert text_of(full).startswith(text_of(cut)) and text_of(cut) != text_of(full)
    # Thinking alone over the cap: no text at all, thinking billed up to the cap.
    starved = client.messages.create(**params(oz_text, THINKER, 100, effort="max"))
    assert starved.stop_reason == "max_tokens" and starved.usage.output_tokens == 100
    assert [b.type for b in starved.content] == ["thinking"] and thinking_of(starved) == 100


def test_an_unknown_effort_is_a_400(srv: LocalServer, oz_text: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as exc:
        client_for(srv).messages.create(**params(oz_text, THINKER, 1000, effort="extreme"))
    assert "output_config.effort" in exc.value.message


# ---- Claude-like mode ----------------------------------------------------------------------


@pytest.mark.parametrize(("ratio", "padded"), [(0.15, False), (0.4, True)])
def test_claude_like_answers_at_the_ratio_with_thinking(
    tmp_path: Path, oz_dir: Path, ratio: float, padded: bool
) -> None:
    text = (oz_dir / "01_the_wonderful_wizard_of_oz.txt").read_text(encoding="utf-8")[-120_000:]
    info = get_model(THINKER)
    section_tokens = estimate_tokens(text, info.tokenizer_factor)
    with (
        start_local_server(tmp_path / "base", faults=FaultPlan()) as base,
        start_local_server(tmp_path / "like", responder=ClaudeLikeResponder(ratio)) as like,
    ):
        baseline = text_of(client_for(base).messages.create(**params(text, THINKER, 100_000)))
        message = client_for(like).messages.create(**params(text, THINKER, 100_000))
        billed = like.billed_usage()[info.id]
    assert like.mode == f"Claude-like emulation, output ratio {ratio:g}"
    assert message.stop_reason == "end_turn"
    assert [b.type for b in message.content] == ["thinking", "text"]
    answer = text_of(message)
    answer_tokens = estimate_tokens(answer, info.tokenizer_factor)
    # About ratio x section tokens: within one entity (2 %) of the target, trimmed or padded.
    assert abs(answer_tokens - ratio * section_tokens) <= 0.02 * ratio * section_tokens
    assert thinking_of(message) == thinking_allowance(
        effective_effort(info, None), info, answer_tokens
    )
    assert billed["output_tokens"] == message.usage.output_tokens
    # Schema-valid, and it parses with nothing rejected.
    wire = WireExtractionResult.model_validate_json(answer)
    parsed = parse_extraction(answer, file_name="oz_section_01.txt", chunk_id="01")
    assert parsed.rejected == [] and len(parsed.result.entities) == len(wire.entities)
    base_ids = [e.id for e in WireExtractionResult.model_validate_json(baseline).entities]
    like_ids = [e.id for e in wire.entities if not e.id.startswith("passage_")]
    padding = [e for e in wire.entities if e.id.startswith("passage_")]
    if padded:  # the baseline's whole answer, then passages whose mentions are verbatim text
        assert like_ids == base_ids and padding
        assert all(m in text for e in padding for m in e.mentions)
    else:  # the baseline's most salient entities, in the baseline's order
        assert 0 < len(like_ids) < len(base_ids) and not padding
        assert [i for i in base_ids if i in set(like_ids)] == like_ids


def test_claude_like_is_cut_at_the_cap_and_bills_no_thinking_on_a_plain_model(
    tmp_path: Path, oz_text: str
) -> None:
    info = get_model(PLAIN)
    with start_local_server(tmp_path / "like", faults=FaultPlan(claude_like=0.5)) as like:
        full = client_for(like).messages.create(**params(oz_text, PLAIN, 60_000))
        cap = full.usage.output_tokens // 2
        cut = client_for(like).messages.create(**params(oz_text, PLAIN, cap))
        billed = like.billed_usage()[info.id]
    section_tokens = estimate_tokens(oz_text, info.tokenizer_factor)
    assert like.mode == "Claude-like emulation, output ratio 0.5"
    assert abs(full.usage.output_tokens - 0.5 * section_tokens) <= 0.01 * section_tokens
    assert (cut.stop_reason, cut.usage.output_tokens) == ("max_tokens", cap)
    assert text_of(full).startswith(text_of(cut))
    assert thinking_of(full) == 0 and [b.type for b in full.content] == ["text"]
    assert billed["requests"] == 2 and billed["max_tokens_stops"] == 1
    assert billed["output_tokens"] == full.usage.output_tokens + cap


def test_claude_like_from_the_fault_plan_env_and_the_local_api_command(tmp_path: Path) -> None:
    raw = FaultPlan(claude_like=0.2).to_json_text()
    assert FaultPlan.load(raw).claude_like == 0.2
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fantasy_kg",
            "local-api",
            "--claude-like",
            "--output-ratio",
            "0.25",
            "--state-dir",
            str(tmp_path / "api"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        announced = json.loads(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert announced["mode"] == "Claude-like emulation, output ratio 0.25"
    assert announced["base_url"].startswith("http://127.0.0.1:")
    bad = subprocess.run(
        [sys.executable, "-m", "fantasy_kg", "local-api", "--claude-like", "--output-ratio", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "output ratio 0.0 is outside" in bad.stderr
