"""The guide's batch workflow and every fault the API can throw, through the real SDK.

Each test runs the real ``anthropic`` client against the project's loopback Anthropic API with a
fault plan, then asserts on two sides: what the client wrote (job files, result files, failure
records) and what the server received (how many batch creates, which params).
"""

import asyncio
import json
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fantasy_kg.domain.prompts import build_prompt
from fantasy_kg.domain.schemas import ExtractionResult, load_ontology
from fantasy_kg.domain.sections import read_sections
from fantasy_kg.llm import (
    AnthropicBatchProvider,
    BatchProcessingStatus,
    BatchResultType,
    ResultsArchivedError,
    build_extraction_batch_request,
    load_failures,
)
from fantasy_kg.llm.jobs import JobStore
from fantasy_kg.local_api import Fault, FaultPlan, ResultOverride
from fantasy_kg.pipeline import extraction
from fantasy_kg_tests.llm_support import (
    FAKE_KEY,
    MODEL,
    REPO_ROOT,
    SERIES,
    SERIES_NAME,
    MutableClock,
    assert_no_key,
    batches_on_server,
    create_bodies,
    make_sections,
    section_ids,
    server,
)

ONTOLOGY = REPO_ROOT / "data" / "schemas" / f"{SERIES}_schema.json"


@pytest.fixture
def sections_dir(data_dir: Path) -> Path:
    path = data_dir / "sections"
    make_sections(path)
    return path


@pytest.fixture
def env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)


def _provider(srv, jobs_dir: Path, **kw) -> AnthropicBatchProvider:
    return AnthropicBatchProvider(
        api_key=FAKE_KEY,
        jobs_dir=jobs_dir,
        base_url=srv.base_url,
        retry_base_delay=0.01,
        max_retries=2,
        **kw,
    )


def _guide_requests(sections_dir: Path, temperature: float | None = None) -> list[dict[str, Any]]:
    ontology = load_ontology(ONTOLOGY)
    out = []
    for sec in read_sections(sections_dir, SERIES):
        prompt = build_prompt(
            series_name=SERIES_NAME,
            ontology=ontology,
            book_names=sec.meta.books,
            section_id=sec.section_id,
            text=sec.text,
        ).render()
        out.append(
            build_extraction_batch_request(
                sec.stem, prompt, MODEL, ExtractionResult, 16000, temperature
            )
        )
    return out


def _wait_ended(batch_id: str, jobs_dir: Path) -> None:
    for _ in range(300):
        if extraction.batch_status(batch_id, jobs_dir).is_ended:
            return
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not end")


def _all_params(srv) -> list[dict[str, Any]]:
    return [r["params"] for body in create_bodies(srv) for r in body["requests"]]


# ---------------------------------------------------------------------------------------------
# The guide's Python workflow
# ---------------------------------------------------------------------------------------------


def test_guide_python_workflow(
    tmp_path: Path, data_dir: Path, sections_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """create_batch -> poll_until_complete -> process_results_to_files, only imports changed."""
    caplog.set_level(logging.INFO)
    requests = _guide_requests(sections_dir, temperature=0.0)
    out_dir = data_dir / "extracted"
    jobs_dir = data_dir / "batch_jobs"
    # thinking=True: a thinking block precedes every text block; the client picks by type.
    with server(tmp_path / "api", FaultPlan(thinking=True)) as srv:

        async def guide() -> tuple[Any, ...]:
            provider = _provider(srv, jobs_dir)
            job = await provider.create_batch(requests, out_dir, MODEL, series_name=SERIES_NAME)
            done = await provider.poll_until_complete(job.id, poll_interval_seconds=0.05)
            summary = await provider.process_results_to_files(job.id, ExtractionResult)
            again = await provider.process_results_to_files(job.id, ExtractionResult)
            loaded = provider._load_job(job.id)
            await provider.close()
            return job, done, summary, again, loaded

        job, done, summary, again, loaded = asyncio.run(guide())
        params = _all_params(srv)
        creates = srv.requests_to("batches.create")

    assert done.processing_status == BatchProcessingStatus.ENDED
    assert summary["processed"] == len(requests) and summary["failed"] == 0
    assert summary["usage"].total_tokens > 0
    assert len(summary["files_written"]) == len(requests)
    assert again["processed"] == summary["processed"]  # stored summary, no second download
    for path in summary["files_written"]:
        result = ExtractionResult.model_validate_json(Path(path).read_text(encoding="utf-8"))
        assert result.entities, path
        assert all(m.file_name.endswith(".txt") for e in result.entities for m in e.mentions)

    # The guide's job file, plus usage and cost.
    raw = json.loads((jobs_dir / f"{job.id}.json").read_text(encoding="utf-8"))
    for key in (
        "id",
        "processing_status",
        "request_counts",
        "created_at",
        "expires_at",
        "local_request_mapping",
        "output_dir",
        "model",
        "series_name",
    ):
        assert key in raw, key
    assert set(raw["request_counts"]) >= {
        "processing",
        "succeeded",
        "errored",
        "canceled",
        "expired",
    }
    assert raw["request_counts"]["succeeded"] == len(requests)
    assert raw["series_name"] == SERIES_NAME
    assert loaded["local_request_mapping"] == raw["local_request_mapping"]
    assert raw["cost"]["batch_usd"] > 0
    assert raw["cost"]["realtime_usd"] == pytest.approx(2 * raw["cost"]["batch_usd"])
    assert set(raw["request_usage"]) == {r["custom_id"] for r in requests}
    assert (
        sum(u["usage"]["cache_creation_1h_input_tokens"] for u in raw["request_usage"].values()) > 0
    )

    # What the server received: one create; cached prefix; structured output; no sampling.
    assert len(creates) == 1
    assert creates[0].headers.get("anthropic-version") == "2026-10-21"
    assert len(params) == len(requests)
    for p in params:
        assert not {"temperature", "top_p", "top_k"} & set(p)
        assert p["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
        assert "TEXT CONTENT:" in p["messages"][0]["content"][0]["text"]
        assert p["output_config"]["format"]["type"] == "json_schema"
        assert p["output_config"]["format"]["schema"]["additionalProperties"] is False
    dropped = [r for r in caplog.records if "temperature dropped" in r.getMessage()]
    assert len(dropped) <= 1  # warned once per process (maybe earlier in this process)
    assert_no_key([data_dir, tmp_path / "api"], [r.getMessage() for r in caplog.records])


def test_rerun_same_manifest_reuses_batch(
    tmp_path: Path, data_dir: Path, sections_dir: Path
) -> None:
    requests = _guide_requests(sections_dir)
    with server(tmp_path / "api") as srv:

        async def twice() -> tuple[Any, ...]:
            provider = _provider(srv, data_dir / "jobs")
            first = await provider.create_batch(requests, data_dir / "out", MODEL)
            second = await provider.create_batch(list(reversed(requests)), data_dir / "out", MODEL)
            await provider.close()
            return first, second

        first, second = asyncio.run(twice())
        assert first.id == second.id
        assert len(srv.requests_to("batches.create")) == 1
        assert len(batches_on_server(srv)) == 1


# ---------------------------------------------------------------------------------------------
# Create faults: exactly one batch on the server, whatever happens
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "expect_creates", "expect_list"),
    [
        (Fault.rate_limit("batches.create", retry_after=0.2), 2, False),
        (Fault.rate_limit("batches.create"), 2, False),
        (Fault.overloaded("batches.create"), 2, True),
        (Fault.server_error("batches.create"), 2, True),
        (Fault.drop("batches.create"), 2, True),
        (Fault.accept_then_error("batches.create", status=500), 1, True),
        (Fault.accept_then_error("batches.create", status=529), 1, True),
        (Fault.accept_then_drop("batches.create"), 1, True),
    ],
    ids=[
        "429-retry-after",
        "429-no-retry-after",
        "529",
        "500",
        "drop",
        "accepted-then-500",
        "accepted-then-529",
        "accepted-then-drop",
    ],
)
def test_create_faults_give_exactly_one_batch(
    tmp_path: Path,
    data_dir: Path,
    sections_dir: Path,
    fault: Fault,
    expect_creates: int,
    expect_list: bool,
) -> None:
    requests = _guide_requests(sections_dir)
    with server(tmp_path / "api", FaultPlan(faults=(fault,))) as srv:

        async def run() -> tuple[Any, ...]:
            provider = _provider(srv, data_dir / "jobs")
            job = await provider.create_batch(requests, data_dir / "out", MODEL)
            await provider.poll_until_complete(job.id, poll_interval_seconds=0.05)
            summary = await provider.process_results_to_files(job.id)
            await provider.close()
            return job, summary

        job, summary = asyncio.run(run())
        creates = srv.requests_to("batches.create")
        lists = srv.requests_to("batches.list")
        on_server = batches_on_server(srv)
    assert len(on_server) == 1 and on_server[0].id == job.id
    assert len(creates) == expect_creates
    # The SDK never retried create on its own: every create call is ours (retry-count 0).
    assert all(c.headers.get("x-stainless-retry-count", "0") == "0" for c in creates)
    assert bool(lists) == expect_list  # ambiguous failures reconcile before resubmitting
    assert job.reconciled == (expect_creates == 1)
    assert summary["processed"] == len(requests)


def test_create_definitive_4xx_is_one_line_user_error(
    tmp_path: Path, data_dir: Path, sections_dir: Path
) -> None:
    from fantasy_kg.domain.errors import ConfigError

    requests = _guide_requests(sections_dir)
    with server(
        tmp_path / "api", FaultPlan(faults=(Fault.status_error("batches.create", 401),))
    ) as srv:
        provider = _provider(srv, data_dir / "jobs")
        with pytest.raises(ConfigError) as err:
            asyncio.run(provider.create_batch(requests, data_dir / "out", MODEL))
        assert "\n" not in err.value.message and FAKE_KEY not in err.value.message
        assert len(srv.requests_to("batches.create")) == 1
        assert batches_on_server(srv) == []
    intents = JobStore(data_dir / "jobs").all_intents()
    assert [i.state for i in intents] == ["failed"]


# ---------------------------------------------------------------------------------------------
# Results: cut streams, every result type, follow-ups, splits
# ---------------------------------------------------------------------------------------------


def test_results_stream_cut_is_refetched_and_deduped(
    tmp_path: Path, data_dir: Path, sections_dir: Path
) -> None:
    requests = _guide_requests(sections_dir)
    plan = FaultPlan(faults=(Fault.cut_stream(lines=2, calls=(0, 1)),))
    with server(tmp_path / "api", plan) as srv:

        async def run() -> dict[str, Any]:
            provider = _provider(srv, data_dir / "jobs")
            job = await provider.create_batch(requests, data_dir / "out", MODEL)
            await provider.poll_until_complete(job.id, poll_interval_seconds=0.05)
            items = await provider.retrieve_results(job.id)
            assert sorted(i.custom_id for i in items) == sorted(r["custom_id"] for r in requests)
            assert {i.result_type for i in items} == {BatchResultType.SUCCEEDED}
            summary = await provider.process_results_to_files(job.id)
            await provider.close()
            return summary

        summary = asyncio.run(run())
        downloads = srv.requests_to("batches.results")
    assert len(downloads) >= 3  # two cut downloads, then a full one (and the second run)
    assert summary["processed"] == len(requests) and summary["failed"] == 0
    assert len(set(summary["files_written"])) == len(requests)


def test_every_result_type_handled_and_retryable_ones_followed_up(
    tmp_path: Path,
    data_dir: Path,
    sections_dir: Path,
    env_key: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = section_ids(sections_dir)
    assert len(ids) >= 9
    overrides = {
        ids[0]: ResultOverride.errored("overloaded_error", times=1),
        ids[1]: ResultOverride.errored("invalid_request_error", "max_tokens: 999999 > 128000"),
        ids[2]: ResultOverride("expired", times=1),
        ids[3]: ResultOverride("canceled", times=1),
        ids[4]: ResultOverride("refusal"),
        ids[5]: ResultOverride("invalid_json"),
        ids[6]: ResultOverride("schema_invalid"),
        ids[7]: ResultOverride("max_tokens", times=1),
        ids[8]: ResultOverride("model_context_window_exceeded", times=1),
    }
    out_dir = data_dir / "extracted"
    jobs_dir = data_dir / "batch_jobs"
    with server(tmp_path / "api", FaultPlan(results=overrides)) as srv:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.base_url)
        result = extraction.run_full(
            sections_dir, out_dir, SERIES, MODEL, jobs_dir=jobs_dir, poll_interval_seconds=0.05
        )
        creates = create_bodies(srv)

    # Exactly two batches: the first, and ONE follow-up with only the retryable ones.
    assert len(creates) == 2
    followup_ids = sorted(r["custom_id"] for r in creates[1]["requests"])
    assert followup_ids == sorted(
        [ids[0], ids[2], ids[3], f"{ids[7]}_a", f"{ids[7]}_b", f"{ids[8]}_a", f"{ids[8]}_b"]
    )
    # The halves carry half the text each, same cached prefix.
    halves = {r["custom_id"]: r["params"] for r in creates[1]["requests"]}
    first = {r["custom_id"]: r["params"] for r in creates[0]["requests"]}
    whole = first[ids[7]]["messages"][0]["content"][0]["text"]
    a = halves[f"{ids[7]}_a"]["messages"][0]["content"][0]["text"]
    b = halves[f"{ids[7]}_b"]["messages"][0]["content"][0]["text"]
    assert len(a) < len(whole) and len(b) < len(whole)
    assert halves[f"{ids[7]}_a"]["system"] == first[ids[7]]["system"]

    # Invariant: every section ends as a result file or a recorded failure.
    assert result.sections == len(ids) == result.written + result.failed
    assert result.pending == 0
    written = {p.name for p in out_dir.glob("*_extracted.json")}
    assert written == {
        f"{i}_extracted.json" for i in [ids[0], ids[2], ids[3], ids[7], ids[8], *ids[9:]]
    }
    merged = ExtractionResult.model_validate_json(
        (out_dir / f"{ids[7]}_extracted.json").read_text(encoding="utf-8")
    )
    assert merged.entities
    failures = {f.custom_id: f for f in load_failures(out_dir)}
    assert set(failures) == {ids[1], ids[4], ids[5], ids[6]}
    assert failures[ids[1]].error_type == "invalid_request_error"
    assert not failures[ids[1]].retryable
    assert failures[ids[4]].type == "refusal"
    assert failures[ids[5]].type == "invalid_json" and "not valid JSON" in failures[ids[5]].message
    assert failures[ids[6]].type == "schema_mismatch"
    # The jobs folder view agrees with the output folder view.
    assert {f.custom_id for f in load_failures(jobs_dir, SERIES)} == set(failures)

    store = JobStore(jobs_dir)
    jobs = store.all_jobs(SERIES)
    assert len(jobs) == 2
    parent, child = jobs
    assert child.parent_batch_id == parent.id and parent.retry_batch_ids == [child.id]
    assert child.attempt == 2
    c = parent.result_counts
    assert c is not None
    assert c.submitted == c.written + c.parts_written + c.failed + c.split
    assert c.split == 2 and c.retryable == 3
    assert parent.failures[ids[0]].resubmitted_in == child.id
    assert parent.usage.total_tokens > 0 and child.cost.batch_usd > 0

    # Re-running costs nothing: no create, nothing resubmitted (permanent failures are blocked).
    with server(tmp_path / "api") as srv2:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", srv2.base_url)
        jobs_again = extraction.submit_series(
            sections_dir, out_dir, SERIES, MODEL, jobs_dir=jobs_dir
        )
        assert jobs_again == []
        assert srv2.requests_to("batches.create") == []


def test_attempt_limit_leaves_retryable_failures_recorded(
    tmp_path: Path,
    data_dir: Path,
    sections_dir: Path,
    env_key: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = section_ids(sections_dir)
    plan = FaultPlan(results={ids[0]: ResultOverride.errored("api_error")})  # every batch
    with server(tmp_path / "api", plan) as srv:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.base_url)
        result = extraction.run_full(
            sections_dir,
            data_dir / "out",
            SERIES,
            MODEL,
            jobs_dir=data_dir / "jobs",
            poll_interval_seconds=0.05,
            max_attempts=2,
        )
        assert len(srv.requests_to("batches.create")) == 2
    assert result.failed == 1 and result.written == len(ids) - 1
    [failure] = load_failures(data_dir / "out")
    assert failure.custom_id == ids[0] and failure.retryable and failure.attempt == 2
    jobs = JobStore(data_dir / "jobs").all_jobs()
    assert jobs[-1].followup_state == "exhausted"


def test_archived_results_recorded_then_resubmitted(
    tmp_path: Path,
    data_dir: Path,
    sections_dir: Path,
    env_key: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = MutableClock()
    out_dir, jobs_dir = data_dir / "out", data_dir / "jobs"
    with server(tmp_path / "api", clock=clock) as srv:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.base_url)
        [job] = extraction.submit_series(sections_dir, out_dir, SERIES, MODEL, jobs_dir=jobs_dir)
        _wait_ended(job.id, jobs_dir)
        clock.offset = timedelta(days=30)
        with pytest.raises(ResultsArchivedError) as err:
            extraction.retrieve_batch(job.id, jobs_dir)
        assert "--resubmit-archived" in err.value.message
        failures = load_failures(out_dir)
        assert {f.type for f in failures} == {"archived"}
        assert len(failures) == len(section_ids(sections_dir))
        res = extraction.retrieve_batch(job.id, jobs_dir, resubmit_archived=True)
        assert res.archived and res.followup_batch_id
        assert len(srv.requests_to("batches.create")) == 2
        _wait_ended(res.followup_batch_id, jobs_dir)
        again = extraction.retrieve_batch(res.followup_batch_id, jobs_dir)
    assert again.written == len(section_ids(sections_dir))
    assert load_failures(out_dir) == []


def test_large_request_sets_split_into_several_batches(
    tmp_path: Path, data_dir: Path, sections_dir: Path
) -> None:
    requests = _guide_requests(sections_dir)
    with server(tmp_path / "api") as srv:

        async def run() -> list[Any]:
            provider = _provider(srv, data_dir / "jobs", max_batch_requests=4)
            jobs = await provider.create_batches(requests, data_dir / "out", MODEL)
            first = await provider.create_batch(requests, data_dir / "out", MODEL)
            await provider.close()
            return [jobs, first]

        jobs, first = asyncio.run(run())
        assert len(jobs) == 3 and [len(j.inputs) for j in jobs] == [4, 4, 1]
        assert first.id == jobs[0].id and set(first.sibling_batch_ids) == {j.id for j in jobs[1:]}
        assert len(srv.requests_to("batches.create")) == 3
        sizes = [len(b["requests"]) for b in create_bodies(srv)]
        assert sizes == [4, 4, 1]


def test_cancel_gives_retryable_canceled_results(
    tmp_path: Path, data_dir: Path, sections_dir: Path
) -> None:
    requests = _guide_requests(sections_dir)
    with server(tmp_path / "api", process_batches=False) as srv:

        async def run() -> tuple[Any, ...]:
            provider = _provider(srv, data_dir / "jobs")
            job = await provider.create_batch(requests, data_dir / "out", MODEL)
            canceled = await provider.cancel_batch(job.id)
            done = await provider.poll_until_complete(job.id, poll_interval_seconds=0.05)
            summary = await provider.process_results_to_files(job.id)
            await provider.close()
            return canceled, done, summary

        canceled, done, summary = asyncio.run(run())
        assert len(srv.requests_to("batches.cancel")) == 1
    assert canceled.processing_status in ("canceling", "ended")
    assert done.request_counts.canceled == len(requests)
    assert summary["processed"] == 0 and summary["failed"] == len(requests)
    assert summary["retryable"] == len(requests) and summary["followup_needed"]
    assert {f.type for f in load_failures(data_dir / "out")} == {"canceled"}
