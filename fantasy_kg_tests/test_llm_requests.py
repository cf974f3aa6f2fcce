"""Request building, custom_ids, pre-flight limits, answer interpretation, backend choice.

These run without a server: they check what would be sent (and refused) and how an answer is
read, using the real SDK types for messages.
"""

import logging
import re
from pathlib import Path
from typing import Any

import anthropic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fantasy_kg.domain import failpoints
from fantasy_kg.domain.catalog import get_model
from fantasy_kg.domain.errors import ConfigError, PreflightError, UserError
from fantasy_kg.domain.pricing import TokenUsage
from fantasy_kg.domain.prompts import build_prompt
from fantasy_kg.domain.schemas import ExtractionResult, default_ontology
from fantasy_kg.llm import backend as backend_mod
from fantasy_kg.llm import requests as rq
from fantasy_kg.llm.requests import (
    LEGACY_API_VERSION,
    PreparedRequest,
    RequestMeta,
    build_extraction_batch_request,
    make_custom_id,
    preflight,
    schema_complexity,
    split_into_batches,
    split_request,
    split_text,
)
from fantasy_kg.llm.results import (
    interpret_error,
    interpret_message,
    merge_results,
    result_path,
    text_of,
    usage_of,
)

MODEL = "claude-sonnet-5-5"
ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _prompt(text: str = "Mira Thorne lit the lanterns of Dunmere.\n\nShe was nineteen.") -> str:
    return build_prompt(
        series_name="The Ashen Crown",
        ontology=default_ontology("ashen_crown"),
        book_names=["The Lantern Road"],
        section_id="01",
        text=text,
    ).render()


def _req(cid: str = "ashen_crown_section_01", **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"max_tokens": 16000, "model": MODEL} | kw
    return build_extraction_batch_request(
        cid,
        args.pop("prompt", _prompt()),
        args.pop("model"),
        ExtractionResult,
        args.pop("max_tokens"),
        **args,
    )


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


def test_request_shape_cached_prefix_and_structured_output() -> None:
    body = _req()
    p = body["params"]
    assert body["custom_id"] == "ashen_crown_section_01"
    assert p["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert "ONTOLOGY:" in p["system"][0]["text"]
    user = p["messages"][0]["content"][0]["text"]
    assert user.startswith("INPUT CONTEXT:") and "Mira Thorne" in user
    schema = p["output_config"]["format"]["schema"]
    assert p["output_config"]["format"]["type"] == "json_schema"
    assert set(schema["properties"]) == {"entities", "relationships", "schema_proposals"}
    assert "temperature" not in p and "effort" not in p["output_config"]


def test_guide_style_prompt_is_split_before_text_content() -> None:
    prompt = "You extract entities.\nONTOLOGY: {}\n\nTEXT CONTENT:\nDorothy lived in Kansas."
    p = _req(prompt=prompt)["params"]
    assert p["system"][0]["text"].endswith("ONTOLOGY: {}")
    assert p["messages"][0]["content"][0]["text"] == "TEXT CONTENT:\nDorothy lived in Kansas."
    bare = _req(prompt="just text", cache_ttl=None)["params"]
    assert "system" not in bare and bare["messages"][0]["content"][0]["text"] == "just text"


def test_temperature_dropped_once_unless_pinned_to_an_accepting_version(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rq, "_temperature_warned", False)
    caplog.set_level(logging.WARNING)
    for _ in range(3):
        assert "temperature" not in _req(temperature=0.0)["params"]
    assert sum("temperature dropped" in r.getMessage() for r in caplog.records) == 1
    old = _req(model="claude-haiku-4-5", temperature=0.0, api_version=LEGACY_API_VERSION)
    assert old["params"]["temperature"] == 0.0
    # A model that rejects sampling never gets it, whatever the version.
    assert "temperature" not in _req(temperature=0.0, api_version=LEGACY_API_VERSION)["params"]


def test_effort_only_on_thinking_models() -> None:
    assert _req(effort="low")["params"]["output_config"]["effort"] == "low"
    haiku = _req(model="claude-haiku-4-5", effort="low")["params"]
    assert "effort" not in haiku["output_config"]


def test_wire_schema_stays_within_complexity_limits() -> None:
    schema = _req()["params"]["output_config"]["format"]["schema"]
    cx = schema_complexity(schema)
    assert cx.optional_params <= rq.MAX_OPTIONAL_PARAMS and cx.union_params <= rq.MAX_UNION_PARAMS
    assert cx.optional_params == 0 and cx.union_params == 0


# ---------------------------------------------------------------------------------------------
# custom_ids
# ---------------------------------------------------------------------------------------------


def test_custom_ids_readable_shortened_and_unique() -> None:
    assert make_custom_id("ashen_crown_section_01") == "ashen_crown_section_01"
    long = "a_very_long_series_name_" * 4 + "_section_01"
    short = make_custom_id(long)
    assert len(short) == 64 and ID_RE.match(short) and short.startswith("a_very_long")
    assert make_custom_id(long + "x") != short
    used: set[str] = set()
    first = make_custom_id("x.y", used)
    second = make_custom_id("x y", used)  # both clean to x_y
    assert first != second and used == {first, second}
    hostile = make_custom_id("../../etc/passwd")
    assert ID_RE.match(hostile) and "/" not in hostile and ".." not in hostile


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=200))
def test_any_name_becomes_a_valid_custom_id(name: str) -> None:
    assert ID_RE.match(make_custom_id(name))


def test_result_paths_are_confined(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        result_path(tmp_path, "../escape")
    assert result_path(tmp_path, "ok_01").parent == tmp_path.resolve()


# ---------------------------------------------------------------------------------------------
# Pre-flight
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requests", "model", "needle"),
    [
        ([_req("a" * 65)], MODEL, "custom_id must match"),
        ([_req("bad id!")], MODEL, "custom_id must match"),
        ([_req("dup"), _req("dup")], MODEL, "used twice"),
        ([_req(max_tokens=128_001)], MODEL, "max_tokens 128,001 > 128,000"),
        (
            [_req(model="claude-haiku-4-5", max_tokens=64_000, prompt=_prompt("word " * 120_000))],
            "claude-haiku-4-5",
            "context window",
        ),
        ([_req(model="claude-haiku-4-5")], MODEL, "differs from the batch model"),
    ],
    ids=["too-long", "bad-chars", "duplicate", "output-cap", "context-window", "model-mismatch"],
)
def test_preflight_refuses_what_the_api_would_reject(
    requests: list[dict[str, Any]], model: str, needle: str
) -> None:
    with pytest.raises(PreflightError) as err:
        preflight(requests, model)
    assert needle in err.value.message and "\n" not in err.value.message


def test_preflight_names_the_section_file() -> None:
    body = _req(max_tokens=999_999)
    meta = RequestMeta(
        custom_id=body["custom_id"],
        file_name="ashen_crown_section_01.txt",
        chunk_id="01",
        section_path="/data/sections/ashen_crown_section_01.txt",
    )
    with pytest.raises(PreflightError) as err:
        preflight([PreparedRequest(body=body, meta=meta)], MODEL)
    assert err.value.message.startswith("error") is False
    assert "section ashen_crown_section_01.txt" in err.value.message


def test_preflight_schema_complexity_limit() -> None:
    fields = {f"f{i}": (int | None, None) for i in range(25)}
    from pydantic import create_model

    Wide = create_model("Wide", **fields)  # type: ignore[call-overload]
    body = build_extraction_batch_request("wide_01", _prompt(), MODEL, Wide, 1000)
    with pytest.raises(PreflightError) as err:
        preflight([body], MODEL)
    assert "optional" in err.value.message and "24" in err.value.message


def test_preflight_report_cost_and_batches() -> None:
    tiny = "Extract entities.\n\nTEXT CONTENT:\nDorothy lived in Kansas."
    reqs = [_req(f"s_section_{i:02d}", prompt=tiny) for i in range(5)]
    report = preflight(reqs, MODEL, max_requests=2)
    assert report.batches == [[0, 1], [2, 3], [4]]
    assert 0 < report.estimated_cost.batch_usd <= report.worst_case_cost.batch_usd
    assert report.estimated_cost.realtime_usd == pytest.approx(2 * report.estimated_cost.batch_usd)
    assert any("below" in w for w in report.warnings)  # a tiny prefix cannot be cached


def test_split_into_batches_by_count_and_bytes() -> None:
    assert split_into_batches([10] * 5, max_requests=2) == [[0, 1], [2, 3], [4]]
    assert split_into_batches([40, 40, 40], max_bytes=100) == [[0, 1], [2]]
    with pytest.raises(PreflightError):
        split_into_batches([500], max_bytes=100)


# ---------------------------------------------------------------------------------------------
# Splitting truncated sections
# ---------------------------------------------------------------------------------------------


def test_split_text_prefers_paragraph_boundaries() -> None:
    text = "\n\n".join(f"Paragraph {i} " + "word " * 40 for i in range(10))
    a, b = split_text(text) or ("", "")
    assert a + b == text and a.endswith("\n\n") and b.startswith("Paragraph 5")
    assert split_text("short") is None


def test_split_request_keeps_prefix_and_params() -> None:
    text = "\n\n".join(f"Paragraph {i} " + "word " * 40 for i in range(6))
    body = _req(prompt=_prompt(text))
    halves = split_request(body, ("x_a", "x_b"))
    assert halves is not None
    for half in halves:
        assert half["params"]["system"] == body["params"]["system"]
        assert half["params"]["output_config"] == body["params"]["output_config"]
        assert half["params"]["messages"][0]["content"][0]["text"].startswith("INPUT CONTEXT:")
    joined = "".join(
        h["params"]["messages"][0]["content"][0]["text"].split("TEXT CONTENT:\n", 1)[1]
        for h in halves
    )
    assert joined == text


# ---------------------------------------------------------------------------------------------
# Reading answers (real SDK types)
# ---------------------------------------------------------------------------------------------


def _message(content: list[dict[str, Any]], stop: str = "end_turn", **usage: Any) -> Any:
    return anthropic.types.Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 20} | usage,
        }
    )


META = RequestMeta(custom_id="s_01", file_name="s_section_01.txt", chunk_id="01")
ANSWER = (
    '{"entities":[{"id":"mira_thorne","type":"Character","name":"Mira Thorne","aliases":'
    '["the Lantern Maid"],"attributes":[{"name":"age","value":"19"}],"mentions":["Mira"],'
    '"confidence":0.9}],"relationships":[],"schema_proposals":[]}'
)


def test_text_block_picked_by_type_after_thinking() -> None:
    msg = _message(
        [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": ANSWER},
        ]
    )
    assert text_of(msg) == ANSWER
    out = interpret_message(msg, META, batch_id="b")
    assert isinstance(out.result, ExtractionResult)
    assert out.result.entities[0].attributes == {"age": "19"}
    assert out.result.entities[0].mentions[0].file_name == "s_section_01.txt"


@pytest.mark.parametrize(
    ("content", "stop", "kind", "truncated"),
    [
        ([{"type": "text", "text": ANSWER[:50]}], "max_tokens", None, True),
        ([{"type": "text", "text": ANSWER[:50]}], "model_context_window_exceeded", None, True),
        ([], "refusal", "refusal", False),
        ([{"type": "text", "text": "not json"}], "end_turn", "invalid_json", False),
        ([{"type": "text", "text": '{"entities": 3}'}], "end_turn", "schema_mismatch", False),
        ([], "end_turn", "no_text_block", False),
    ],
)
def test_unusable_answers_are_recorded_or_split(
    content: list[dict[str, Any]], stop: str, kind: str | None, truncated: bool
) -> None:
    out = interpret_message(_message(content, stop), META, batch_id="b")
    assert out.truncated == truncated and out.result is None
    if kind is not None:
        assert out.failure is not None and out.failure.type == kind
        assert not out.failure.retryable


def test_errored_lines_retryable_unless_invalid_request() -> None:
    bad = {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}
    busy = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    assert not interpret_error(bad, META, batch_id="b", attempt=1).retryable
    assert interpret_error(busy, META, batch_id="b", attempt=1).retryable


def test_usage_splits_cache_writes_by_ttl() -> None:
    msg = _message(
        [{"type": "text", "text": ANSWER}],
        cache_creation_input_tokens=300,
        cache_read_input_tokens=50,
        cache_creation={"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
    )
    assert usage_of(msg) == TokenUsage(
        input_tokens=10,
        output_tokens=20,
        cache_creation_5m_input_tokens=100,
        cache_creation_1h_input_tokens=200,
        cache_read_input_tokens=50,
    )
    plain = _message([], cache_creation_input_tokens=70)
    assert usage_of(plain).cache_creation_5m_input_tokens == 70


def test_merge_results_unites_entities_and_evidence() -> None:
    a = interpret_message(_message([{"type": "text", "text": ANSWER}]), META, batch_id="b")
    other = ANSWER.replace('"Mira"]', '"Mira Thorne"]').replace("0.9", "0.95")
    b = interpret_message(_message([{"type": "text", "text": other}]), META, batch_id="b")
    assert isinstance(a.result, ExtractionResult) and isinstance(b.result, ExtractionResult)
    merged = merge_results([a.result, b.result])
    [ent] = merged.entities
    assert {m.text for m in ent.mentions} == {"Mira", "Mira Thorne"}
    assert ent.confidence.score == 0.95


# ---------------------------------------------------------------------------------------------
# Backend and failpoints
# ---------------------------------------------------------------------------------------------


def test_backend_selection(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    with pytest.raises(ConfigError) as err:
        backend_mod.resolve_backend("anthropic")
    assert "ANTHROPIC_API_KEY" in err.value.message
    with pytest.raises(ConfigError):
        backend_mod.resolve_backend("openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-value")
    chosen = backend_mod.resolve_backend("auto")
    assert chosen.name == "anthropic" and "sk-ant-secret-value" not in repr(chosen)
    local = backend_mod.resolve_backend("local", base_url="http://127.0.0.1:1")
    assert local.name == "local" and local.api_key == backend_mod.LOCAL_API_KEY
    assert any(backend_mod.LOCAL_BANNER in r.getMessage() for r in caplog.records)
    assert all("sk-ant-secret-value" not in r.getMessage() for r in caplog.records)


def test_local_backend_when_no_key_starts_the_embedded_server() -> None:
    chosen = backend_mod.resolve_backend("auto")
    assert (
        chosen.name == "local"
        and chosen.base_url
        and chosen.base_url.startswith("http://127.0.0.1:")
    )


def test_failpoints_parse_and_stay_inert_when_unarmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(failpoints.FAILPOINT_ENV, "after_create, during_results:3,bogus:x")
    assert failpoints._armed() == {"after_create": 1, "during_results": 3, "bogus": 1}
    monkeypatch.delenv(failpoints.FAILPOINT_ENV)
    failpoints.failpoint("after_create")  # unarmed: returns
    assert {"before_create", "after_create", "during_results"} <= failpoints.FAILPOINTS


class _Unused(BaseModel):
    x: int


def test_model_check_uses_catalog() -> None:
    with pytest.raises(ConfigError):
        build_extraction_batch_request("a", "p", "claude-nope", _Unused, 10)
    assert get_model(MODEL).id == MODEL
