"""The local Anthropic-compatible API, driven through the real ``anthropic`` SDK over loopback."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import pytest
from pydantic import ValidationError

from fantasy_kg.domain.catalog import catalog, get_model
from fantasy_kg.domain.errors import ConfigError
from fantasy_kg.domain.prompts import build_prompt
from fantasy_kg.domain.schemas import WireExtractionResult, default_ontology, wire_json_schema
from fantasy_kg.local_api import (
    FAULTS_ENV,
    Fault,
    FaultPlan,
    LocalServer,
    ResponderAnswer,
    ResultOverride,
    ensure_local_server,
    read_request_log,
    start_local_server,
)

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-test-fantasy-kg-0123456789"


class FakeClock:
    """An injectable clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


SECTION = (
    "Queen Mira Thorne rode to the city of Ashfall with her brother, Lord Aren Thorne. "
    '"Aren," said Mira, "the Order of the Ember will not bend."'
)


def params(text: str = SECTION, **extra: Any) -> Any:
    """An extraction request as the batch client builds it (prompt + output schema)."""
    prompt = build_prompt(
        series_name="Ashen Crown",
        ontology=default_ontology("Ashen Crown"),
        book_names=["The Ashen Crown"],
        section_id="ashen_crown_section_01",
        text=text,
    ).render()
    body: dict[str, Any] = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 2000,
        "messages": [{"role": "user", "content": prompt}],
        "output_config": {"format": {"type": "json_schema", "schema": wire_json_schema()}},
    }
    body.update(extra)
    return body


def request(custom_id: str, **extra: Any) -> Any:
    return raw_request(custom_id, params(**extra))


def raw_request(custom_id: str, body: dict[str, Any]) -> Any:
    """A batch request (typed Any: the tests send params the SDK's TypedDicts do not allow)."""
    return {"custom_id": custom_id, "params": body}


def results_by_id(client: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {r.custom_id: r.result for r in client.messages.batches.results(batch_id)}


def client_for(server: LocalServer, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=server.base_url, **options)


def wait_ended(client: anthropic.Anthropic, batch_id: str) -> Any:
    deadline = time.monotonic() + 120  # a safety net for a loaded machine, not a speed assertion
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} never ended"
        time.sleep(0.05)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "local_api"


@pytest.fixture
def server(state_dir: Path) -> Iterator[LocalServer]:
    with start_local_server(state_dir, faults=FaultPlan()) as srv:
        yield srv


# ---- Messages, count_tokens, models ---------------------------------------------------------


def test_messages_create_returns_a_message_with_usage_and_request_id(server: LocalServer) -> None:
    client = client_for(server)
    raw = client.messages.with_raw_response.create(**params())
    message = raw.parse()
    assert raw.headers["request-id"].startswith("req_")
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "claude-sonnet-5-5"
    texts = [b.text for b in message.content if b.type == "text"]
    assert len(texts) == 1
    answer = WireExtractionResult.model_validate_json(texts[0])
    assert {e.name for e in answer.entities} >= {"Mira Thorne"}
    assert message.stop_reason == "end_turn"
    assert message.usage.service_tier == "standard"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    short: Any = {"model": "claude-sonnet-5-5", "messages": [{"role": "user", "content": "Mira."}]}
    counted = client.messages.count_tokens(**short)
    again = client.messages.create(max_tokens=100, **short)
    assert counted.input_tokens == again.usage.input_tokens
    # Credentials never reach the request log.
    logged = server.requests_to("messages.create")[0]
    assert "authorization" not in logged.headers and "x-api-key" not in logged.headers
    assert KEY not in json.dumps([e.to_json() for e in server.requests_log])
    assert logged.headers["anthropic-version"] == "2026-10-21"


def test_custom_responder_and_alias_resolution(state_dir: Path) -> None:
    seen: list[dict[str, Any]] = []

    def responder(p: dict[str, Any]) -> ResponderAnswer:
        seen.append(p)
        return ResponderAnswer(text='{"answer": 42}')

    with start_local_server(state_dir, faults=FaultPlan(), responder=responder) as srv:
        message = client_for(srv).messages.create(**params(model="claude-haiku-4-5"))
    assert message.model == "claude-haiku-4-5-20251001"
    assert message.content[0].type == "text" and message.content[0].text == '{"answer": 42}'
    assert SECTION in seen[0]["messages"][0]["content"]


def test_realtime_prompt_cache_writes_then_reads(server: LocalServer) -> None:
    client = client_for(server)
    prefix = "Ontology and instructions. " * 800
    system = [{"type": "text", "text": prefix, "cache_control": {"type": "ephemeral"}}]
    first = client.messages.create(**params(system=system))
    second = client.messages.create(**params("Another section.", system=system))
    assert first.usage.cache_creation_input_tokens and first.usage.cache_creation
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == (
        first.usage.cache_creation_input_tokens
    )
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    # Below the model's minimum cacheable prefix (no output schema in it here) nothing is cached.
    small = [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}]
    tiny_params = params(system=small)
    del tiny_params["output_config"]
    tiny = client.messages.create(**tiny_params)
    assert tiny.usage.cache_creation_input_tokens == 0 and tiny.usage.cache_read_input_tokens == 0


def test_models_come_from_the_catalog_with_pagination(server: LocalServer) -> None:
    client = client_for(server)
    listed = list(client.models.list(limit=5))
    assert [m.id for m in listed] == [m.id for m in catalog().models]
    first_page = client.models.list(limit=5)
    assert len(first_page.data) == 5 and first_page.has_next_page()
    haiku = client.models.retrieve("claude-haiku-4-5")
    info = get_model("claude-haiku-4-5")
    assert haiku.id == info.id
    assert haiku.max_input_tokens == info.context_window
    assert haiku.max_tokens == info.max_output_tokens
    with pytest.raises(anthropic.NotFoundError) as exc:
        client.models.retrieve("claude-nonexistent-9")
    assert exc.value.request_id and exc.value.request_id.startswith("req_")


def test_sampling_params_rejected_under_2026_10_21_accepted_under_2023(
    server: LocalServer,
) -> None:
    client = client_for(server, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(**params(), extra_body={"temperature": 0.0})
    assert "temperature" in str(exc.value)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.count_tokens(
            model="claude-sonnet-5-5",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"top_p": 0.9},
        )
    old = client_for(server, default_headers={"anthropic-version": "2023-06-01"})
    message = old.messages.create(**params(model="claude-haiku-4-5"), extra_body={"temperature": 0})
    assert message.stop_reason == "end_turn"


def test_messages_validation_errors(server: LocalServer) -> None:
    client = client_for(server, max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="max_tokens: 200000 > 128000"):
        client.messages.create(**params(max_tokens=200000), timeout=30)
    with pytest.raises(anthropic.NotFoundError, match="model: claude-foo"):
        client.messages.create(**params(model="claude-foo"))
    with pytest.raises(anthropic.BadRequestError, match="output_formatx: Extra inputs"):
        client.messages.create(**params(), extra_body={"output_formatx": {}})


def test_auth_accepts_x_api_key_and_bearer_and_can_require_a_key(state_dir: Path) -> None:
    with start_local_server(state_dir, faults=FaultPlan(), require_key=KEY) as srv:
        assert client_for(srv).models.retrieve("claude-haiku-4-5").id  # Bearer (SDK 2.x)
        req = urllib.request.Request(
            srv.base_url + "/v1/models",
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        )
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 200 and resp.headers["request-id"].startswith("req_")
        wrong = anthropic.Anthropic(api_key="sk-wrong", base_url=srv.base_url)
        with pytest.raises(anthropic.AuthenticationError) as exc:
            wrong.models.list()
        assert "sk-wrong" not in str(exc.value)
        bare = urllib.request.Request(srv.base_url + "/v1/models")
        with pytest.raises(urllib.error.HTTPError) as http_exc:
            urllib.request.urlopen(bare)
        body = json.loads(http_exc.value.read())
        assert http_exc.value.code == 401
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        assert body["request_id"] == http_exc.value.headers["request-id"]


def test_refuses_any_host_but_loopback(state_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"only listens on 127\.0\.0\.1"):
        LocalServer(state_dir, host="0.0.0.0")


# ---- Message Batches ------------------------------------------------------------------------


def test_batch_lifecycle_results_shuffled_with_cache_and_batch_tier(state_dir: Path) -> None:
    prefix = "Series instructions and ontology. " * 700
    system = [{"type": "text", "text": prefix, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    requests = [request(f"sec_{i:02d}", system=system) for i in range(20)]
    with start_local_server(state_dir, faults=FaultPlan(), min_processing_seconds=0.5) as srv:
        client = client_for(srv)
        created = client.messages.batches.create(requests=requests)
        assert created.processing_status == "in_progress"
        assert created.request_counts.processing == 20
        assert created.request_counts.succeeded == 0
        assert created.results_url is None and created.ended_at is None
        assert created.expires_at - created.created_at == timedelta(hours=24)
        with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
            client.messages.batches.results(created.id)
        polled = client.messages.batches.retrieve(created.id)
        if polled.processing_status == "in_progress":  # counts stay 0 until the whole batch ends
            assert polled.request_counts.processing == 20 and polled.request_counts.succeeded == 0
        ended = wait_ended(client, created.id)
        assert ended.request_counts.succeeded == 20 and ended.request_counts.processing == 0
        assert ended.ended_at is not None
        assert ended.results_url == f"{srv.base_url}/v1/messages/batches/{created.id}/results"
        results = list(client.messages.batches.results(created.id))
    order = [r.custom_id for r in results]
    assert sorted(order) == [r["custom_id"] for r in requests]
    assert order != [r["custom_id"] for r in requests]  # order is not kept: join on custom_id
    usages = [r.result.message.usage for r in results if r.result.type == "succeeded"]
    assert len(usages) == 20 and {u.service_tier for u in usages} == {"batch"}
    writes = [u for u in usages if u.cache_creation_input_tokens]
    assert len(writes) == 1  # the first request per prefix writes the 1-hour cache
    assert writes[0].cache_creation and writes[0].cache_creation.ephemeral_1h_input_tokens > 0
    assert sum(1 for u in usages if u.cache_read_input_tokens) == 19


def test_batch_params_are_validated_asynchronously(server: LocalServer) -> None:
    client = client_for(server)
    long_text = "word " * 200_000
    batch = client.messages.batches.create(
        requests=[
            request("ok"),
            raw_request("temp", {**params(), "temperature": 0.0}),
            request("too_many_tokens", model="claude-haiku-4-5", max_tokens=100000),
            request("unknown_model", model="claude-foo-1"),
            request("too_long", text=long_text, model="claude-haiku-4-5"),
        ]
    )
    ended = wait_ended(client, batch.id)
    assert ended.request_counts.succeeded == 1 and ended.request_counts.errored == 4
    by_id = results_by_id(client, batch.id)
    assert by_id["ok"].type == "succeeded"
    errors = {cid: r.error.error for cid, r in by_id.items() if r.type == "errored"}
    assert errors["temp"].type == "invalid_request_error"
    assert "temperature" in errors["temp"].message
    assert errors["too_many_tokens"].message == (
        "max_tokens: 100000 > 64000, which is the maximum allowed number of output tokens for "
        "claude-haiku-4-5-20251001"
    )
    assert errors["unknown_model"].type == "not_found_error"
    assert errors["too_long"].message.startswith("prompt is too long: ")
    assert errors["too_long"].message.endswith(" tokens > 200000 maximum")
    # The same temperature request is fine for a batch created under 2023-06-01.
    old = client_for(server, default_headers={"anthropic-version": "2023-06-01"})
    legacy = old.messages.batches.create(
        requests=[raw_request("t", {**params(model="claude-haiku-4-5"), "top_k": 5})]
    )
    wait_ended(old, legacy.id)
    assert [r.result.type for r in old.messages.batches.results(legacy.id)] == ["succeeded"]


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([request("x" * 65)], "requests.0.custom_id: String should have at most 64 characters"),
        (
            [request("ok"), request("has space")],
            "requests.1.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
        ),
        ([request("a"), request("b"), request("a")], "requests.2.custom_id: duplicate custom_id"),
        ([], "requests: List should have at least 1 item"),
        ([request(f"r{i}") for i in range(4)], "requests: List should have at most 3 items"),
    ],
)
def test_batch_create_envelope_errors_are_synchronous_400(
    state_dir: Path, requests: Any, message: str
) -> None:
    with start_local_server(state_dir, faults=FaultPlan(), max_batch_requests=3) as srv:
        client = client_for(srv)
        with pytest.raises(anthropic.BadRequestError) as exc:
            client.messages.batches.create(requests=requests)
        assert message in str(exc.value)
        assert exc.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        assert list(client.messages.batches.list()) == []
        assert len(srv.requests_to("batches.create")) == 1  # a 400 is not retried


def test_batch_body_over_the_limit_is_413_and_creates_nothing(state_dir: Path) -> None:
    big = [request(f"r{i}") for i in range(3)]
    limit = len(json.dumps({"requests": big[:1]})) * 2
    with start_local_server(state_dir, faults=FaultPlan(), max_batch_body_bytes=limit) as srv:
        client = client_for(srv)
        with pytest.raises(anthropic.ContentTooLargeError) as exc:
            client.messages.batches.create(requests=big)
        assert exc.value.status_code == 413
        assert exc.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
        assert list(client.messages.batches.list()) == []
        assert client.messages.batches.create(requests=big[:1]).processing_status == "in_progress"


def test_list_is_newest_first_with_cursor_pagination(server: LocalServer) -> None:
    client = client_for(server)
    ids = [client.messages.batches.create(requests=[request("only")]).id for _ in range(23)]
    newest_first = list(reversed(ids))
    first = client.messages.batches.list()
    assert [b.id for b in first.data] == newest_first[:20] and first.has_more
    assert first.first_id == newest_first[0] and first.last_id == newest_first[19]
    assert [b.id for b in client.messages.batches.list(limit=7)] == newest_first
    after = client.messages.batches.list(after_id=newest_first[4], limit=3)
    assert [b.id for b in after.data] == newest_first[5:8] and after.has_more
    before = client.messages.batches.list(before_id=newest_first[4], limit=3)
    assert [b.id for b in before.data] == newest_first[1:4] and before.has_more
    tail = client.messages.batches.list(after_id=newest_first[20], limit=5)
    assert [b.id for b in tail.data] == newest_first[21:] and not tail.has_more
    for bad in (0, 1001):
        with pytest.raises(anthropic.BadRequestError, match="limit"):
            client.messages.batches.list(limit=bad)


def test_cancel_delete_and_their_errors(state_dir: Path) -> None:
    with start_local_server(state_dir, faults=FaultPlan(), process_batches=False) as srv:
        client = client_for(srv)
        batch = client.messages.batches.create(requests=[request(f"r{i}") for i in range(3)])
        with pytest.raises(anthropic.BadRequestError, match="cancel it first"):
            client.messages.batches.delete(batch.id)
        canceling = client.messages.batches.cancel(batch.id)
        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at is not None
        assert canceling.request_counts.processing == 3
        ended = wait_ended(client, batch.id)
        assert ended.request_counts.canceled == 3 and ended.request_counts.processing == 0
        results = list(client.messages.batches.results(batch.id))
        assert {r.result.type for r in results} == {"canceled"} and len(results) == 3
        with pytest.raises(anthropic.BadRequestError, match="already ended"):
            client.messages.batches.cancel(batch.id)
        deleted = client.messages.batches.delete(batch.id)
        assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve(batch.id)
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve("msgbatch_doesnotexist")


def test_cancel_after_processing_may_cancel_nothing(state_dir: Path) -> None:
    with start_local_server(state_dir, faults=FaultPlan(), min_processing_seconds=30) as srv:
        client = client_for(srv)
        batch = client.messages.batches.create(requests=[request(f"r{i}") for i in range(3)])
        deadline = time.monotonic() + 30
        results_file = state_dir / "batches" / batch.id / "results.jsonl"
        while not results_file.exists() or results_file.read_text().count("\n") < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.messages.batches.cancel(batch.id)
        ended = wait_ended(client, batch.id)
    assert ended.request_counts.succeeded == 3 and ended.request_counts.canceled == 0


def test_24h_expiry_and_29_day_archive_with_an_injected_clock(state_dir: Path) -> None:
    clock = FakeClock()
    with start_local_server(
        state_dir, faults=FaultPlan(), clock=clock, process_batches=False
    ) as srv:
        client = client_for(srv)
        stuck = client.messages.batches.create(requests=[request("a"), request("b")])
        clock.advance(hours=23, minutes=59)
        assert client.messages.batches.retrieve(stuck.id).processing_status == "in_progress"
        clock.advance(minutes=2)
        # The server's worker ends it on its next pass (asynchronously, as the API does).
        expired = wait_ended(client, stuck.id)
        assert expired.request_counts.expired == 2
        assert expired.ended_at == expired.expires_at
        assert {r.result.type for r in client.messages.batches.results(stuck.id)} == {"expired"}
        clock.advance(days=28)
        archived = client.messages.batches.retrieve(stuck.id)
        assert archived.archived_at == archived.created_at + timedelta(days=29)
        with pytest.raises(anthropic.NotFoundError, match="no longer available"):
            list(client.messages.batches.results(stuck.id))


def test_batch_created_in_a_subprocess_is_processed_and_retrieved_by_another(
    state_dir: Path,
) -> None:
    script = (
        "import sys, anthropic\n"
        "from pathlib import Path\n"
        "from fantasy_kg.local_api import FaultPlan, start_local_server\n"
        "with start_local_server(Path(sys.argv[1]), faults=FaultPlan(),"
        " process_batches=False) as s:\n"
        "    c = anthropic.Anthropic(api_key='k', base_url=s.base_url)\n"
        "    reqs = [{'custom_id': f'sec_{i}', 'params': {'model': 'claude-sonnet-5-5',"
        " 'max_tokens': 500, 'messages': [{'role': 'user', 'content': 'Mira'}]}}"
        " for i in range(6)]\n"
        "    print(c.messages.batches.create(requests=reqs).id)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(state_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    batch_id = done.stdout.strip()
    with start_local_server(state_dir, faults=FaultPlan()) as srv:
        client = client_for(srv)
        assert [b.id for b in client.messages.batches.list()] == [batch_id]
        ended = wait_ended(client, batch_id)
        assert ended.request_counts.succeeded == 6
        assert ended.results_url and ended.results_url.startswith(srv.base_url)
        got = sorted(r.custom_id for r in client.messages.batches.results(batch_id))
    assert got == [f"sec_{i}" for i in range(6)]


def test_two_servers_on_one_state_dir_process_each_request_once(state_dir: Path) -> None:
    with (
        start_local_server(state_dir, faults=FaultPlan(), per_request_seconds=0.005) as one,
        start_local_server(state_dir, faults=FaultPlan()) as two,
    ):
        batch = client_for(one).messages.batches.create(
            requests=[request(f"r{i:02d}") for i in range(40)]
        )
        ended = wait_ended(client_for(two), batch.id)
        lines = (state_dir / "batches" / batch.id / "results.jsonl").read_text().splitlines()
    assert ended.request_counts.succeeded == 40
    assert sorted(json.loads(line)["custom_id"] for line in lines) == [
        f"r{i:02d}" for i in range(40)
    ]


def test_partial_line_left_by_a_killed_worker_is_repaired(state_dir: Path) -> None:
    with start_local_server(state_dir, faults=FaultPlan(), process_batches=False) as holder:
        batch = client_for(holder).messages.batches.create(
            requests=[request("a"), request("b"), request("c")]
        )
    # A worker killed mid-write leaves half a line behind.
    (state_dir / "batches" / batch.id / "results.jsonl").write_text('{"custom_id": "a", "res')
    with start_local_server(state_dir, faults=FaultPlan()) as srv:
        client = client_for(srv)
        ended = wait_ended(client, batch.id)
        results = list(client.messages.batches.results(batch.id))
    assert ended.request_counts.succeeded == 3
    assert sorted(r.custom_id for r in results) == ["a", "b", "c"]


# ---- Fault injection observed through the SDK -----------------------------------------------


def test_529_then_success_is_retried_by_the_sdk(state_dir: Path) -> None:
    plan = FaultPlan(faults=(Fault.overloaded("batches.create", calls=(0,)),))
    with start_local_server(state_dir, faults=plan) as srv:
        client = client_for(srv)
        batch = client.messages.batches.create(requests=[request("a")])
        creates = srv.requests_to("batches.create")
        assert [(c.call_index, c.status, c.fault) for c in creates] == [
            (0, 529, "error"),
            (1, 200, None),
        ]
        assert [b.id for b in client.messages.batches.list()] == [batch.id]
        assert creates[1].body["requests"][0]["params"]["model"] == "claude-sonnet-5-5"


def test_500_with_x_should_retry_false_is_attempted_once(state_dir: Path) -> None:
    plan = FaultPlan(
        faults=(Fault.server_error("messages.create", calls=None, should_retry=False),)
    )
    with start_local_server(state_dir, faults=plan) as srv:
        with pytest.raises(anthropic.InternalServerError):
            client_for(srv).messages.create(**params())
        assert len(srv.requests_to("messages.create")) == 1


def test_429_with_retry_after_and_spend_limit_without(state_dir: Path) -> None:
    plan = FaultPlan(
        faults=(
            Fault.rate_limit("messages.create", calls=(0,), retry_after=0.2),
            Fault.spend_limit("batches.create"),
        )
    )
    with start_local_server(state_dir, faults=plan) as srv:
        client = client_for(srv, max_retries=1)
        raw = client.messages.with_raw_response.create(**params())
        assert raw.parse().stop_reason == "end_turn"
        assert [e.status for e in srv.requests_to("messages.create")] == [429, 200]
        with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as exc:
            client.messages.batches.create(requests=[request("a")])
        assert exc.value.response.headers.get("retry-after") is None
        assert exc.value.error_code == "enforced_spend_limit_reached"
        assert list(client.messages.batches.list()) == []


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, anthropic.AuthenticationError), (403, anthropic.PermissionDeniedError)],
)
def test_401_and_403_are_not_retried(state_dir: Path, status: int, error: type) -> None:
    plan = FaultPlan(faults=(Fault.status_error("batches.retrieve", status, calls=None),))
    with start_local_server(state_dir, faults=plan) as srv:
        client = client_for(srv)
        batch = client.messages.batches.create(requests=[request("a")])
        with pytest.raises(error):
            client.messages.batches.retrieve(batch.id)
        assert len(srv.requests_to("batches.retrieve")) == 1


def test_slow_response_past_the_client_timeout(state_dir: Path) -> None:
    plan = FaultPlan(faults=(Fault.slow("models.list", seconds=1.0),))
    with start_local_server(state_dir, faults=plan) as srv:
        with pytest.raises(anthropic.APITimeoutError):
            client_for(srv, max_retries=0, timeout=0.2).models.list()
        assert len(client_for(srv).models.list().data) > 0  # call 1 is not slowed


def test_dropped_connection_is_retried(state_dir: Path) -> None:
    plan = FaultPlan(faults=(Fault.drop("messages.create"),))
    with start_local_server(state_dir, faults=plan) as srv:
        assert client_for(srv).messages.create(**params()).stop_reason == "end_turn"
        assert [e.status for e in srv.requests_to("messages.create")] == [None, 200]
    with (
        start_local_server(state_dir, faults=plan) as srv,
        pytest.raises(anthropic.APIConnectionError),
    ):
        client_for(srv, max_retries=0).messages.create(**params())


@pytest.mark.parametrize(
    "fault",
    [Fault.accept_then_error("batches.create"), Fault.accept_then_drop("batches.create")],
)
def test_create_accepted_then_failed_leaves_a_batch_behind(state_dir: Path, fault: Fault) -> None:
    with start_local_server(state_dir, faults=FaultPlan(faults=(fault,))) as srv:
        client = client_for(srv, max_retries=0)
        with pytest.raises((anthropic.InternalServerError, anthropic.APIConnectionError)):
            client.messages.batches.create(requests=[request("a"), request("b")])
        listed = list(client.messages.batches.list())
        assert len(listed) == 1 and listed[0].request_counts.processing == 2


def test_sdk_retry_after_an_accepted_create_duplicates_the_batch(state_dir: Path) -> None:
    """Why the batch client must create with retries off and reconcile with list()."""
    plan = FaultPlan(faults=(Fault.accept_then_error("batches.create", status=529),))
    with start_local_server(state_dir, faults=plan) as srv:
        client = client_for(srv)  # default: 2 retries
        client.messages.batches.create(requests=[request("a")])
        assert len(list(client.messages.batches.list())) == 2
        assert len(srv.requests_to("batches.create")) == 2


def test_results_stream_cut_mid_way_then_fetched_again(state_dir: Path) -> None:
    plan = FaultPlan(faults=(Fault.cut_stream(lines=2),))
    with start_local_server(state_dir, faults=plan) as srv:
        client = client_for(srv)
        batch = client.messages.batches.create(requests=[request(f"r{i}") for i in range(6)])
        wait_ended(client, batch.id)
        received: list[str] = []
        with pytest.raises(Exception) as exc:  # httpx2's transport error
            for item in client.messages.batches.results(batch.id):
                received.append(item.custom_id)
        assert "incomplete" in str(exc.value).lower() or "closed" in str(exc.value).lower()
        assert len(received) <= 2  # the SDK may lose lines it had buffered when the cut came
        assert [e.fault for e in srv.requests_to("batches.results")] == ["cut_stream"]
        again = [r.custom_id for r in client.messages.batches.results(batch.id)]
    assert sorted(again) == [f"r{i}" for i in range(6)]
    assert set(received) <= set(again)


def test_per_custom_id_result_overrides(state_dir: Path) -> None:
    plan = FaultPlan(
        results={
            "err": ResultOverride.errored("overloaded_error", times=1),
            "exp": ResultOverride("expired"),
            "can": ResultOverride("canceled"),
            "trunc": ResultOverride("max_tokens"),
            "refuse": ResultOverride("refusal"),
            "window": ResultOverride("model_context_window_exceeded"),
            "badjson": ResultOverride("invalid_json"),
            "badschema": ResultOverride("schema_invalid"),
            "think": ResultOverride("thinking"),
            "hostile": ResultOverride("text", text='{"entities": [{"id": "../../etc"}]}'),
        }
    )
    ids = [*plan.results, "plain"]
    with start_local_server(state_dir, faults=plan) as srv:
        client = client_for(srv)
        batch = client.messages.batches.create(requests=[request(cid) for cid in ids])
        ended = wait_ended(client, batch.id)
        by_id = results_by_id(client, batch.id)
        # times=1: a follow-up batch with the same custom_id succeeds.
        retry = client.messages.batches.create(requests=[request("err")])
        wait_ended(client, retry.id)
        retried = [r.result.type for r in client.messages.batches.results(retry.id)]
    assert retried == ["succeeded"]
    counts = ended.request_counts
    assert (counts.succeeded, counts.errored, counts.expired, counts.canceled) == (8, 1, 1, 1)
    assert by_id["err"].error.error.type == "overloaded_error"
    assert by_id["exp"].type == "expired" and by_id["can"].type == "canceled"

    def text_of(cid: str) -> str:
        return "".join(b.text for b in by_id[cid].message.content if b.type == "text")

    assert by_id["trunc"].message.stop_reason == "max_tokens"
    with pytest.raises(json.JSONDecodeError):
        json.loads(text_of("trunc"))
    assert by_id["trunc"].message.usage.output_tokens == 2000
    assert by_id["refuse"].message.stop_reason == "refusal"
    assert by_id["refuse"].message.stop_details.type == "refusal"
    assert by_id["window"].message.stop_reason == "model_context_window_exceeded"
    with pytest.raises(json.JSONDecodeError):
        json.loads(text_of("badjson"))
    with pytest.raises(ValidationError):
        WireExtractionResult.model_validate_json(text_of("badschema"))
    assert [b.type for b in by_id["think"].message.content] == ["thinking", "text"]
    assert json.loads(text_of("think"))["entities"] == json.loads(text_of("plain"))["entities"]
    assert json.loads(text_of("hostile"))["entities"][0]["id"] == "../../etc"


def test_messages_answer_faults_and_thinking_everywhere(state_dir: Path) -> None:
    plan = FaultPlan(
        faults=(
            Fault.answer(ResultOverride("refusal"), calls=(0,)),
            Fault.answer(ResultOverride.errored("overloaded_error"), calls=(1, 2, 3)),
        ),
        thinking=True,
    )
    with start_local_server(state_dir, faults=plan) as srv:
        client = client_for(srv, max_retries=0)
        refused = client.messages.create(**params())
        assert refused.stop_reason == "refusal"
        with pytest.raises(anthropic.OverloadedError):
            client.messages.create(**params())
        ok = client_for(srv).messages.create(**params())  # calls 2, 3 fail, 4 succeeds
        assert [b.type for b in ok.content] == ["thinking", "text"]
        assert ok.usage.output_tokens_details and ok.usage.output_tokens_details.thinking_tokens
        batch = client.messages.batches.create(requests=[request("a")])
        wait_ended(client, batch.id)
        (result,) = results_by_id(client, batch.id).values()
        assert [b.type for b in result.message.content] == ["thinking", "text"]


def test_fault_plan_from_env_reaches_a_subprocess_server_and_its_log_file(
    state_dir: Path, tmp_path: Path
) -> None:
    plan = FaultPlan(
        faults=(Fault.overloaded("batches.create", calls=(0,)),),
        results={"x": ResultOverride.errored("api_error")},
        persist_counts=True,
    )
    assert FaultPlan.from_json(json.loads(plan.to_json_text())) == plan
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan.to_json_text())
    script = (
        "import sys, anthropic\n"
        "from pathlib import Path\n"
        "from fantasy_kg.local_api import start_local_server\n"
        "with start_local_server(Path(sys.argv[1])) as s:\n"
        "    c = anthropic.Anthropic(api_key=sys.argv[2], base_url=s.base_url)\n"
        "    p = {'model': 'claude-sonnet-5-5', 'max_tokens': 100,"
        " 'messages': [{'role': 'user', 'content': 'hi'}]}\n"
        "    print(c.messages.batches.create(requests=[{'custom_id': 'x', 'params': p}]).id)\n"
    )
    env = {**os.environ, FAULTS_ENV: str(plan_file)}
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", script, str(state_dir), KEY],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
    creates = read_request_log(state_dir, "batches.create")
    # persist_counts: only the very first create (across both processes) got the 529.
    assert [c["status"] for c in creates] == [529, 200, 200]
    assert len({c["pid"] for c in creates}) == 2
    assert KEY not in (state_dir / "requests_log.jsonl").read_text()
    with start_local_server(state_dir, faults=FaultPlan()) as srv:
        client = client_for(srv)
        batches = list(client.messages.batches.list())
        assert len(batches) == 2
        for batch in batches:
            wait_ended(client, batch.id)
            (line,) = list(client.messages.batches.results(batch.id))
            assert line.result.type == "errored"  # overrides travel with the batch


def test_ensure_local_server_is_a_singleton_per_data_dir(data_dir: Path) -> None:
    first = ensure_local_server()
    assert ensure_local_server(data_dir) == first
    client = anthropic.Anthropic(api_key="local", base_url=first)
    batch = client.messages.batches.create(requests=[request("a")])
    assert (data_dir / "local_api" / "batches" / batch.id / "batch.json").is_file()


def test_cli_local_api_serves_until_interrupted(state_dir: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from fantasy_kg.cli.local_api_cmd import local_api; local_api()",
            "--state-dir",
            str(state_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["base_url"].startswith("http://127.0.0.1:")
        client = anthropic.Anthropic(api_key="local", base_url=info["base_url"])
        assert client.messages.create(**params()).stop_reason == "end_turn"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "baseline extractor, not Claude" in err
