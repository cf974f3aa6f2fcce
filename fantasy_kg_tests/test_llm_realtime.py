"""Real-time extraction: same files as batch mode, retries honouring retry-after, splits."""

import json
from pathlib import Path
from typing import Any

import pytest

from fantasy_kg.domain.schemas import ExtractionResult
from fantasy_kg.llm import AnthropicProvider, UnifiedLLMService, load_failures
from fantasy_kg.llm.results import PARTS_DIR, Provenance, load_provenance
from fantasy_kg.local_api import Fault, FaultPlan, ResultOverride
from fantasy_kg.pipeline import extraction
from fantasy_kg_tests.llm_support import (
    FAKE_KEY,
    MODEL,
    SERIES,
    assert_no_key,
    make_sections,
    section_ids,
    server,
)


@pytest.fixture
def sections_dir(data_dir: Path) -> Path:
    path = data_dir / "sections"
    make_sections(path, per_book=2)
    return path


def _provider(srv) -> AnthropicProvider:
    return AnthropicProvider(api_key=FAKE_KEY, base_url=srv.base_url, max_retries=3)


def test_realtime_files_identical_to_batch_files(
    tmp_path: Path, data_dir: Path, sections_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    batch_out, rt_out = data_dir / "batch_out", data_dir / "rt_out"
    with server(tmp_path / "api") as srv:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.base_url)
        extraction.run_full(
            sections_dir,
            batch_out,
            SERIES,
            MODEL,
            jobs_dir=data_dir / "jobs",
            poll_interval_seconds=0.05,
        )
        done: list[str] = []
        result = extraction.extract_realtime(
            sections_dir, rt_out, SERIES, MODEL, max_concurrency=3, on_done=done.append
        )
        messages = srv.requests_to("messages.create")
        again = extraction.extract_realtime(sections_dir, rt_out, SERIES, MODEL)
        assert len(srv.requests_to("messages.create")) == len(messages)  # idempotent: no call
    ids = section_ids(sections_dir)
    assert result.written == len(ids) and result.failed == 0 and again.written == len(ids)
    assert sorted(done) == ids
    for cid in ids:
        a = (batch_out / f"{cid}_extracted.json").read_bytes()
        b = (rt_out / f"{cid}_extracted.json").read_bytes()
        assert a == b, cid  # downstream code cannot tell the modes apart
        ExtractionResult.model_validate_json(b)
        prov = load_provenance(rt_out, cid)
        assert prov is not None and prov.mode == "realtime" and prov.cost.realtime_usd > 0
    assert len(messages) == len(ids)
    for m in messages:
        assert not {"temperature", "top_p", "top_k"} & set(m.body)
        assert m.body["system"][0]["cache_control"]["type"] == "ephemeral"
        assert m.body["output_config"]["format"]["type"] == "json_schema"
    assert_no_key([data_dir, tmp_path / "api"])


@pytest.mark.parametrize(
    "fault",
    [
        Fault.rate_limit("messages.create", calls=(0,), retry_after=0.2),
        Fault.rate_limit("messages.create", calls=(0,)),
        Fault.overloaded("messages.create", calls=(0,)),
        Fault.server_error("messages.create", calls=(0,)),
    ],
    ids=["429-retry-after", "429", "529", "500"],
)
def test_realtime_retries_transient_errors(
    tmp_path: Path, data_dir: Path, sections_dir: Path, fault: Fault
) -> None:
    out = data_dir / "out"
    with server(tmp_path / "api", FaultPlan(faults=(fault,))) as srv:
        service = UnifiedLLMService(_provider(srv), max_concurrency=1)
        requests = extraction.plan_submission(
            sections_dir,
            out,
            SERIES,
            _sections(sections_dir),
            _model(),
            store=_store(data_dir),
            max_tokens=16000,
        ).requests
        summary = _process(service, requests, out)
        calls = srv.requests_to("messages.create")
    assert summary["processed"] == len(requests) and summary["failed"] == 0
    assert len(calls) == len(requests) + 1
    assert calls[1].headers.get("x-stainless-retry-count") == "1"  # the SDK's own retry


def test_realtime_truncation_is_split_and_merged(
    tmp_path: Path, data_dir: Path, sections_dir: Path
) -> None:
    out = data_dir / "out"
    plan = FaultPlan(faults=(Fault.answer(ResultOverride("max_tokens"), calls=(0,)),))
    with server(tmp_path / "api", plan) as srv:
        service = UnifiedLLMService(_provider(srv), max_concurrency=1)
        requests = extraction.plan_submission(
            sections_dir,
            out,
            SERIES,
            _sections(sections_dir),
            _model(),
            store=_store(data_dir),
            max_tokens=16000,
        ).requests
        summary = _process(service, requests, out)
        calls = srv.requests_to("messages.create")
    first = requests[0].custom_id
    assert summary["split"] == 1 and summary["failed"] == 0
    assert len(calls) == len(requests) + 2
    assert {c.body["messages"][0]["content"][0]["text"][:20] for c in calls[-2:]} == {
        "INPUT CONTEXT:\nThis "
    }
    merged = ExtractionResult.model_validate_json(
        (out / f"{first}_extracted.json").read_text(encoding="utf-8")
    )
    assert merged.entities
    prov = load_provenance(out, first)
    assert prov is not None and prov.merged_from == [f"{first}_a", f"{first}_b"]
    assert load_failures(out) == []
    # The halves were sent with the request's settings and say so (invariant 10).
    for half in ("a", "b"):
        part = Provenance.model_validate_json(
            (out / PARTS_DIR / f"{first}_{half}.provenance.json").read_text(encoding="utf-8")
        )
        assert part.max_tokens == 16000 and part.effort == requests[0].meta.effort


def test_realtime_invalid_request_is_recorded_not_retried(
    tmp_path: Path, data_dir: Path, sections_dir: Path
) -> None:
    out = data_dir / "out"
    plan = FaultPlan(faults=(Fault.status_error("messages.create", 400, calls=(0,)),))
    with server(tmp_path / "api", plan) as srv:
        service = UnifiedLLMService(_provider(srv), max_concurrency=1)
        requests = extraction.plan_submission(
            sections_dir,
            out,
            SERIES,
            _sections(sections_dir),
            _model(),
            store=_store(data_dir),
            max_tokens=16000,
        ).requests
        summary = _process(service, requests, out)
        assert len(srv.requests_to("messages.create")) == len(requests)
    [failure] = load_failures(out)
    assert failure.custom_id == requests[0].custom_id
    assert failure.error_type == "invalid_request_error" and not failure.retryable
    assert summary["processed"] == len(requests) - 1
    record = json.loads((out / "_failures" / f"{failure.custom_id}.json").read_text())
    assert record["batch_id"] == "realtime"


def test_cli_extract_realtime(
    tmp_path: Path, data_dir: Path, sections_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from fantasy_kg.cli.main import cli

    with server(tmp_path / "api") as srv:
        monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.base_url)
        res = CliRunner().invoke(
            cli,
            [
                "extract",
                "--provider",
                "anthropic",
                "--model",
                MODEL,
                "--input-dir",
                str(sections_dir),
                "--output-dir",
                str(data_dir / "out"),
                "--series",
                SERIES,
            ],
        )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["written"] == doc["sections"] == len(section_ids(sections_dir))
    assert_no_key([data_dir], [res.output])


# --- small helpers ---------------------------------------------------------------------------


def _process(service: UnifiedLLMService, requests, out: Path) -> dict[str, Any]:
    import asyncio

    async def go() -> dict[str, Any]:
        try:
            return await service.process_requests(requests, out, MODEL)
        finally:
            await service.close()

    return asyncio.run(go())


def _sections(sections_dir: Path):
    from fantasy_kg.domain.sections import read_sections

    return read_sections(sections_dir, SERIES)


def _model():
    from fantasy_kg.domain.catalog import get_model

    return get_model(MODEL)


def _store(data_dir: Path):
    from fantasy_kg.llm.jobs import JobStore

    return JobStore(data_dir / "jobs")
