"""Network faults against the loopback server: timeouts, refused connections, plain errors, 4xx.

The real ``anthropic`` SDK talks HTTP to the local server (or to a bare socket / a plain-text
error server for faults the emulator cannot express). Each scenario checks what the user sees
(exit code, one line on stderr, no key in it), what the SDK actually sent (the server's request
log: no retry where a retry cannot help) and that the state on disk lets a later run resume with
exactly one batch on the server.
"""

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fantasy_kg.llm import AnthropicBatchProvider
from fantasy_kg.llm.jobs import JobStore
from fantasy_kg.local_api import Fault, FaultPlan
from fantasy_kg.pipeline.extraction import retrieve_batch, submit_series
from fantasy_kg_tests.reliability.harness import (
    FAKE_KEY,
    CliResult,
    accounting,
    server_batches,
    temp_leftovers,
)
from fantasy_kg_tests.reliability.rig import POLL, Rig, open_rig, wait_for

SCENARIO_CATEGORY = "Network faults"


@pytest.fixture
def rig_factory(data_dir: Path, tmp_path: Path) -> Iterator[Any]:
    opened: list[Any] = []

    def make(plan: FaultPlan | None = None, **options: Any) -> Rig:
        ctx = open_rig(data_dir, tmp_path / "api", plan, **options)
        opened.append(ctx)
        return ctx.__enter__()

    yield make
    for ctx in opened:
        ctx.__exit__(None, None, None)


def assert_clear_error(res: CliResult, *needles: str) -> str:
    """Exit 2, one line on stderr starting with ``error:``, no traceback, no key anywhere."""
    assert res.exit_code == 2, (res.exit_code, res.stderr[-2000:])
    lines = [ln for ln in res.error_lines if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert FAKE_KEY not in res.stderr + res.stdout
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


def finish_and_check(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run --mode full to the end; exactly one batch, every custom_id with a result."""
    res = rig.cli_here(monkeypatch, "extract-batch", "--mode", "full", "--poll-interval", POLL)
    assert res.exit_code == 0, res.stderr[-3000:]
    batches = server_batches(rig.state_dir)
    assert len(batches) == 1, [b.id for b in batches]
    assert sorted(batches[0].custom_ids) == sorted(rig.custom_ids)
    assert set(accounting(rig.out, rig.custom_ids).values()) == {"result"}
    assert temp_leftovers(rig.data_dir) == []


def creates(rig: Rig) -> list[int | None]:
    return [e.status for e in rig.server.requests_to("batches.create")]


def _provider(rig: Rig, **kw: Any) -> AnthropicBatchProvider:
    return AnthropicBatchProvider(
        api_key=FAKE_KEY,
        base_url=rig.base_url,
        jobs_dir=rig.jobs,
        backend="anthropic",
        retry_base_delay=0.05,
        **kw,
    )


def _billed(rig: Rig) -> dict[str, int]:
    """How many batches on the server ran (billed) each section."""
    billed: dict[str, int] = {}
    for batch in server_batches(rig.state_dir):
        record = json.loads((rig.state_dir / "batches" / batch.id / "batch.json").read_text())
        if record["request_counts"]["succeeded"]:
            for cid in batch.custom_ids:
                billed[cid] = billed.get(cid, 0) + 1
    return billed


@pytest.mark.scenario(
    id="net-slow-create-past-timeout",
    injected="the server sleeps 3 s before handling batch create; client timeout 1 s (the "
    "slow create still lands on the server after the client gave up); batches take 4 s to "
    "process, like real ones take minutes; shared workspace (the default)",
    checked="the client waits for the timed-out create to land instead of creating again: one "
    "create call, the batch adopted provisionally and proven ours by its custom_ids; every "
    "custom_id is processed (billed) in exactly one batch and ends with a result; no cancel call",
)
def test_slow_create_past_the_client_timeout(
    rig_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = rig_factory(
        FaultPlan(faults=(Fault.slow("batches.create", 3.0),)), min_processing_seconds=4.0
    )
    (job,) = submit_series(rig.data_dir / "sections", rig.out, provider=_provider(rig, timeout=1.0))
    assert job.ownership == "provisional"
    rig.wait_all_ended()
    res = rig.cli_here(monkeypatch, "extract-batch", "--mode", "full", "--poll-interval", POLL)
    assert res.exit_code == 0, res.stderr[-3000:]
    assert len(rig.server.requests_to("batches.create")) == 1
    assert rig.server.requests_to("batches.cancel") == []
    assert _billed(rig) == dict.fromkeys(rig.custom_ids, 1)
    assert set(accounting(rig.out, rig.custom_ids).values()) == {"result"}
    assert JobStore(rig.jobs).load(job.id).ownership == "proven"


@pytest.mark.scenario(
    id="net-slow-create-past-timeout-dedicated-workspace",
    injected="as net-slow-create-past-timeout, with the opt-in dedicated_workspace=True (the "
    "behaviour before issue 12): the create is made again at once and the timed-out one lands "
    "next to it",
    checked="every custom_id is processed (billed) in exactly one batch; a duplicate created "
    "by the late request is canceled before it runs; every custom_id ends with a result",
)
def test_slow_create_past_the_client_timeout_dedicated_workspace(
    rig_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = rig_factory(
        FaultPlan(faults=(Fault.slow("batches.create", 3.0),)), min_processing_seconds=4.0
    )
    provider = _provider(rig, timeout=1.0, dedicated_workspace=True)
    submit_series(rig.data_dir / "sections", rig.out, provider=provider)
    # Let the late create land (two create calls answered), then finish the run.
    wait_for(lambda: len(rig.server.requests_to("batches.create")) >= 2, "the slow create")
    rig.wait_all_ended()
    res = rig.cli_here(
        monkeypatch,
        "extract-batch",
        "--mode",
        "full",
        "--poll-interval",
        POLL,
        "--dedicated-workspace",
    )
    assert res.exit_code == 0, res.stderr[-3000:]
    rig.wait_all_ended()
    assert len(rig.server.requests_to("batches.cancel")) == 1
    assert _billed(rig) == dict.fromkeys(rig.custom_ids, 1)
    assert set(accounting(rig.out, rig.custom_ids).values()) == {"result"}


@pytest.mark.scenario(
    id="net-slow-results-past-timeout",
    injected="the first results download sleeps 3 s; client timeout 1 s",
    checked="the download is retried, every custom_id gets exactly one result file, no second "
    "batch",
)
def test_slow_results_download(rig_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = rig_factory(FaultPlan(faults=(Fault.slow("batches.results", 3.0),)))
    batch_id = rig.submit_in_process(monkeypatch)
    res = retrieve_batch(batch_id, rig.jobs, provider=_provider(rig, timeout=1.0, max_retries=0))
    assert res.written == len(rig.custom_ids)
    # The abandoned slow download is logged once the server wakes up and finds the client gone.
    wait_for(lambda: len(rig.server.requests_to("batches.results")) >= 2, "the slow download")
    assert len(server_batches(rig.state_dir)) == 1
    assert set(accounting(rig.out, rig.custom_ids).values()) == {"result"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.scenario(
    id="net-connection-refused",
    injected="ANTHROPIC_BASE_URL points at a closed port on 127.0.0.1 (connection refused)",
    checked="exit 2, one line telling to re-run, no traceback; intent kept as pending, no job "
    "file; re-run against the live server: exactly one batch, every custom_id with a result",
)
def test_connection_refused_then_resume(rig_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = rig_factory()
    live = rig.base_url
    rig.base_url = f"http://127.0.0.1:{_closed_port()}"
    res = rig.cli_here(monkeypatch, "extract-batch", "--mode", "submit")
    assert_clear_error(res, "re-run")
    intents = list((rig.jobs / "intents").glob("*.json"))
    assert len(intents) == 1 and json.loads(intents[0].read_text())["state"] == "pending"
    assert list(rig.jobs.glob("*.json")) == []
    rig.base_url = live
    finish_and_check(rig, monkeypatch)


@pytest.mark.scenario(
    id="net-create-accepted-then-{kind}",
    injected="batch create is carried out by the server, then the answer is {what}",
    checked="the client reconciles with list and adopts the created batch: exactly one batch, "
    "one create call, every custom_id with a result",
)
@pytest.mark.parametrize(
    ("kind", "what"),
    [("500", "an HTTP 500 api_error"), ("drop", "a dropped connection (no response at all)")],
)
def test_create_accepted_then_lost(
    rig_factory: Any, monkeypatch: pytest.MonkeyPatch, kind: str, what: str
) -> None:
    fault = (
        Fault.accept_then_error("batches.create", status=500)
        if kind == "500"
        else Fault.accept_then_drop("batches.create")
    )
    rig = rig_factory(FaultPlan(faults=(fault,)))
    finish_and_check(rig, monkeypatch)
    assert len(creates(rig)) == 1


class _PlainErrorHandler(BaseHTTPRequestHandler):
    """A proxy-style failure: plain text/HTML 502 for every request, no JSON body."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"
        self.send_response(502)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.hits += 1  # type: ignore[attr-defined]

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.mark.scenario(
    id="net-plain-http-502",
    injected="every request answered by a plain-HTTP proxy page: 502 text/html, no JSON error",
    checked="exit 2, one line, no traceback, nothing created; re-run against the live server: "
    "exactly one batch, every custom_id with a result",
)
def test_plain_text_502_from_a_proxy(rig_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = rig_factory()
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _PlainErrorHandler)
    proxy.hits = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    live = rig.base_url
    try:
        rig.base_url = f"http://127.0.0.1:{proxy.server_address[1]}"
        res = rig.cli_here(monkeypatch, "extract-batch", "--mode", "submit")
        assert_clear_error(res)
        assert proxy.hits >= 1  # type: ignore[attr-defined]
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert server_batches(rig.state_dir) == []
    rig.base_url = live
    finish_and_check(rig, monkeypatch)


@pytest.mark.scenario(
    id="net-413-oversized-batch",
    injected="the server's body limit is 20 kB, so batch create answers 413 request_too_large",
    checked="exit 2, one line naming 413 and that nothing was created; exactly one create call "
    "(no retry); no batch, no job file, no result files",
)
def test_413_on_an_oversized_batch(rig_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = rig_factory(max_batch_body_bytes=20_000)
    res = rig.cli_here(monkeypatch, "extract-batch", "--mode", "submit")
    assert_clear_error(res, "413", "nothing was created")
    assert creates(rig) == [413]
    assert server_batches(rig.state_dir) == []
    assert list(rig.jobs.glob("*.json")) == []
    assert not list(rig.out.glob("*_extracted.json"))


@pytest.mark.scenario(
    id="net-{status}-no-retry",
    injected="batch create answers HTTP {status} ({why})",
    checked="exit 2, one line pointing at ANTHROPIC_API_KEY, the key itself nowhere in the "
    "output; exactly one create call (no retry); nothing created",
)
@pytest.mark.parametrize(
    ("status", "why"),
    [(401, "the server only accepts another key"), (403, "permission_error")],
)
def test_auth_errors_are_not_retried(
    rig_factory: Any, monkeypatch: pytest.MonkeyPatch, status: int, why: str
) -> None:
    if status == 401:
        rig = rig_factory(require_key="sk-ant-a-different-key")
    else:
        rig = rig_factory(FaultPlan(faults=(Fault.status_error("batches.create", 403),)))
    res = rig.cli_here(monkeypatch, "extract-batch", "--mode", "submit")
    assert_clear_error(res, "ANTHROPIC_API_KEY", str(status))
    assert creates(rig) == [status]
    assert server_batches(rig.state_dir) == []


@pytest.mark.scenario(
    id="net-401-while-polling",
    injected="the key is revoked after submission: `--mode status` gets 401",
    checked="exit 2, one clear line, exactly one retrieve call (no retry), job file unchanged; "
    "with the key valid again, retrieve finishes every custom_id",
)
def test_key_revoked_while_the_batch_runs(
    rig_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = rig_factory()
    batch_id = rig.submit_in_process(monkeypatch)
    job_file = rig.jobs / f"{batch_id}.json"
    before = job_file.read_bytes()
    rig.server.require_key = "sk-ant-rotated"
    retrieves = len(rig.server.requests_to("batches.retrieve"))
    res = rig.cli_here(monkeypatch, "extract-batch", "--mode", "status", "--batch-id", batch_id)
    assert_clear_error(res, "ANTHROPIC_API_KEY")
    assert len(rig.server.requests_to("batches.retrieve")) - retrieves == 1
    assert job_file.read_bytes() == before
    rig.server.require_key = None
    res = rig.cli_here(monkeypatch, "extract-batch", "--mode", "retrieve", "--batch-id", batch_id)
    assert res.exit_code == 0, res.stderr
    assert set(accounting(rig.out, rig.custom_ids).values()) == {"result"}


@pytest.mark.scenario(
    id="net-429-spend-limit",
    injected="batch create answers 429 enforced_spend_limit_reached without retry-after "
    "(keeps failing until the limit is raised)",
    checked="stops after one create call; exit 2 with one line that says the spend limit was "
    "reached; intent kept; after the limit is lifted the same command resumes: exactly one "
    "batch, every custom_id with a result",
)
def test_spend_limit_stops_and_resumes(rig_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = rig_factory(FaultPlan(faults=(Fault.spend_limit("batches.create"),)))
    res = rig.cli_here(monkeypatch, "extract-batch", "--mode", "submit")
    assert_clear_error(res, "spend limit")
    assert creates(rig) == [429]
    assert server_batches(rig.state_dir) == []
    assert list((rig.jobs / "intents").glob("*.json"))
    rig.server.set_faults(None)
    finish_and_check(rig, monkeypatch)


@pytest.mark.scenario(
    id="net-429-retry-after",
    injected="the first batch create answers 429 rate_limit_error with retry-after: 0.2",
    checked="waited and retried once: exactly two create calls, exactly one batch, every "
    "custom_id with a result",
)
def test_rate_limit_with_retry_after(rig_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = rig_factory(FaultPlan(faults=(Fault.rate_limit("batches.create", retry_after=0.2),)))
    finish_and_check(rig, monkeypatch)
    assert creates(rig) == [429, 200]


@pytest.mark.scenario(
    id="net-overloaded-and-cut-stream",
    injected="529 overloaded on the first two status polls and the first results download; the "
    "second results download is cut after 2 lines",
    checked="polls and downloads are retried; every custom_id gets exactly one result file; "
    "exactly one batch",
)
def test_overloaded_polls_and_a_cut_results_stream(
    rig_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = FaultPlan(
        faults=(
            Fault.overloaded("batches.retrieve", calls=(0, 1)),
            Fault.overloaded("batches.results", calls=(0,)),
            Fault.cut_stream(lines=2, calls=(1,)),
        )
    )
    rig = rig_factory(plan)
    finish_and_check(rig, monkeypatch)
    statuses = [e.status for e in rig.server.requests_to("batches.results")]
    assert statuses[0] == 529 and len(statuses) >= 3
