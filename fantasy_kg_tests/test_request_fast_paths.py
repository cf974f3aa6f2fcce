"""Request building's fast paths give exactly what the straightforward path gives.

``build_section_request`` builds from ``PromptParts`` instead of rendering and splitting the
prompt again, pre-flight sizes bodies without re-encoding their shared parts, and the cost
estimate prices each distinct token count once. None of that may change a byte or a number.
"""

import json
import math
from pathlib import Path
from typing import Any

import pytest

from fantasy_kg.domain.answer import effective_effort, expected_answer, thinking_allowance
from fantasy_kg.domain.catalog import get_model
from fantasy_kg.domain.pricing import TokenUsage, price_usage
from fantasy_kg.domain.prompts import build_prompt, prompt_version
from fantasy_kg.domain.schemas import ExtractionResult, default_ontology
from fantasy_kg.domain.sections import SectionFile, SectionMeta, text_sha256
from fantasy_kg.llm.request_size import BodySizer as _BodySizer
from fantasy_kg.llm.requests import (
    RequestEstimate,
    build_extraction_batch_request,
    build_section_request,
    estimate_cost,
    request_bytes,
)

TEXTS = [
    "Mira Thorne crossed the Salt Court. “Stay,” said Captain Sable — and she stayed…",
    'Plain ASCII prose with "quotes", a tab\there and a backslash \\ and \\u0041.',
    "Ünïcödé names: Åsa, 王小明, emoji 🐉, a control char \x01 and \x7f.",
    "",
]
MODEL = "claude-sonnet-5-5"


def _section(i: int, text: str, series_name: str = "Ashen Crown") -> SectionFile:
    meta = SectionMeta(
        series="ashen_crown",
        series_name=series_name,
        section=i,
        books=["The Lantern Road", "Book Two"],
        input_tokens=10,
        token_count_method="estimate",
        sha256=text_sha256(text),
        chars=len(text),
    )
    return SectionFile(meta=meta, text=text, path=Path(f"/tmp/ashen_crown_section_{i:02d}.txt"))


@pytest.mark.parametrize("series_name", ["Ashen Crown", 'Odd "name"\n\n=== SECTION ===\n', ""])
def test_section_request_equals_render_then_split(series_name):
    ontology = default_ontology("ashen_crown")
    if series_name:
        ontology.name = series_name
    for i, text in enumerate(TEXTS, 1):
        section = _section(i, text)
        got = build_section_request(section, ontology, MODEL, 1000)
        name = ontology.name or section.meta.series_name or section.meta.series
        parts = build_prompt(
            series_name=name,
            ontology=ontology,
            book_names=list(section.meta.books),
            section_id=section.section_id,
            text=text,
        )
        want = build_extraction_batch_request(
            got.custom_id, parts.render(), MODEL, ExtractionResult, 1000
        )
        assert json.dumps(got.body, ensure_ascii=False) == json.dumps(want, ensure_ascii=False)
        assert got.meta.prompt_version == prompt_version(ontology, MODEL)


def test_body_sizer_equals_request_bytes():
    ontology = default_ontology("ashen_crown")
    bodies: list[dict[str, Any]] = [
        build_section_request(_section(i, t), ontology, MODEL, 1000).body
        for i, t in enumerate(TEXTS * 3, 1)
    ]
    odd = {"custom_id": "x", "params": {"t": 0.7, "n": None, "b": [True, False, -3, 1e300]}}
    fallback = {"custom_id": "y", "params": {1: (1, 2), "nan": float("nan")}}
    sizer = _BodySizer()
    for body in [*bodies, odd, fallback, *bodies]:
        assert sizer.size(body) == request_bytes(body)


def test_cost_estimate_equals_pricing_every_request():
    info = get_model(MODEL)
    effort = effective_effort(info, None)
    estimates = [
        RequestEstimate(
            f"r{i}",
            prompt_tokens=p,
            prefix_tokens=q,
            max_tokens=m,
            bytes=1,
            answer=expected_answer(p - q, info, max_tokens=m, effort=effort),
        )
        for i, (p, q, m) in enumerate(
            [(9000, 6000, 4000), (9000, 6000, 4000), (300, 100, 2000), (9000, 6000, 4000)] * 5
        )
    ]
    batch = realtime = 0.0
    for i, est in enumerate(estimates):
        body = max(0, est.prompt_tokens - est.prefix_tokens)
        answer = max(256, math.ceil(0.15 * body))
        out = min(est.max_tokens, answer + thinking_allowance(effort, info, answer))
        if est.prefix_tokens < info.min_cacheable_prefix_tokens:
            c = price_usage(info, TokenUsage(input_tokens=est.prompt_tokens, output_tokens=out))
            batch, realtime = batch + c.batch_usd, realtime + c.realtime_usd
            continue
        base = TokenUsage(input_tokens=body, output_tokens=out)
        w = price_usage(info, base + TokenUsage(cache_creation_1h_input_tokens=est.prefix_tokens))
        r = price_usage(info, base + TokenUsage(cache_read_input_tokens=est.prefix_tokens))
        hit = 0.3 if i > 0 else 0.0
        batch = batch + hit * r.batch_usd + (1 - hit) * w.batch_usd
        realtime = realtime + hit * r.realtime_usd + (1 - hit) * w.realtime_usd
    cost = estimate_cost(estimates, info)
    assert (cost.batch_usd, cost.realtime_usd) == (batch, realtime)
