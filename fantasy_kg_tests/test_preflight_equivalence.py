"""Pre-flight's fast paths give exactly the numbers of the straightforward computation.

The benchmark (bench/, scenario ``requests``) found pre-flight re-estimating the shared prompt
prefix and output schema for every request, copying the schema per request and serializing every
body with the slower non-ASCII encoder. The fast paths must not change a single number: token
estimates (they decide the context-window check and the cost estimate) and body sizes (they
decide the 256 MB split).
"""

import json
from typing import Any

import pytest

from fantasy_kg.domain.catalog import get_model
from fantasy_kg.domain.prompts import build_prompt
from fantasy_kg.domain.schemas import ExtractionResult, default_ontology
from fantasy_kg.llm.prompt_tokens import PromptTokens as _PromptTokens
from fantasy_kg.llm.prompt_tokens import prefix_text as _prefix_text
from fantasy_kg.llm.prompt_tokens import request_text as _request_text
from fantasy_kg.llm.requests import (
    build_extraction_batch_request,
    estimate_tokens,
    request_bytes,
    split_request,
)

TEXTS = [
    "Mira Thorne crossed the Salt Court. “Stay,” said Captain Sable — and she stayed…",
    "Plain ASCII prose.\n\nA second paragraph with numbers 1234567890 and a "
    "verylongidentifierthatgoesonandon.",
    "Ünïcödé names: Åsa, Øystein, 王小明, emoji 🐉 and a tab\there.",
    "A literal backslash-u in text: C:\\users\\mira and \\u0041 and a control char \x01.",
    "",
]


def _body(text: str, model: str, guide_style: bool = False) -> dict[str, Any]:
    if guide_style:
        prompt = f"Extract entities.\n\nTEXT CONTENT:\n{text}"
    else:
        parts = build_prompt(
            series_name="Ashen Crown",
            ontology=default_ontology("ashen_crown"),
            book_names=["The Lantern Road"],
            section_id="01",
            text=text,
        )
        prompt = parts.render()
    return build_extraction_batch_request("x_section_01", prompt, model, ExtractionResult, 1000)


@pytest.mark.parametrize("model", ["claude-opus-4-5", "claude-sonnet-5-5"])
@pytest.mark.parametrize("guide_style", [False, True])
def test_memoized_token_estimates_equal_estimating_the_joined_text(model, guide_style):
    info = get_model(model)
    memo = _PromptTokens()
    for _ in range(2):  # the second pass is served from the memo
        for text in TEXTS:
            params = _body(text, model, guide_style)["params"]
            assert memo.prompt(params, info) == estimate_tokens(_request_text(params), info)
            assert memo.prefix(params, info) == estimate_tokens(_prefix_text(params), info)


@pytest.mark.parametrize("text", TEXTS)
def test_request_bytes_is_the_exact_utf8_size(text):
    body = _body(text, "claude-sonnet-5-5")
    exact = len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    assert request_bytes(body) == exact


def test_requests_share_one_schema_and_split_halves_do_not_touch_it():
    a = _body(TEXTS[1] * 50, "claude-sonnet-5-5")
    b = _body(TEXTS[0], "claude-sonnet-5-5")
    schema_a = a["params"]["output_config"]["format"]["schema"]
    assert schema_a is b["params"]["output_config"]["format"]["schema"]
    before = json.dumps(schema_a, sort_keys=True)
    halves = split_request(a, ("x_section_01_a", "x_section_01_b"))
    assert halves is not None
    for half in halves:
        half_schema = half["params"]["output_config"]["format"]["schema"]
        assert half_schema is not schema_a
        half_schema["mutated"] = True
    assert json.dumps(schema_a, sort_keys=True) == before
