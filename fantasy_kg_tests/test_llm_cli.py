"""The CLI workflow across processes, and SIGKILL at every dangerous point of it.

Every ``fantasy-kg`` run here is a real subprocess with the fake key in its environment, talking
to the loopback API served by the test process. Crashes use the ``FANTASY_KG_FAILPOINT``
failpoints (SIGKILL: no cleanup runs). After each crash the same command is run again and the
test checks the two invariants: one batch per manifest on the server, and every section ending as
a result file or a recorded failure. Every file written and every line printed is grepped for the
key.
"""

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from fantasy_kg.domain.schemas import ExtractionResult
from fantasy_kg.llm import load_failures
from fantasy_kg.llm.jobs import JobStore
from fantasy_kg.local_api import FaultPlan, ResultOverride
from fantasy_kg.pipeline import extraction
from fantasy_kg_tests.llm_support import (
    MODEL,
    SERIES,
    assert_no_key,
    batches_on_server,
    cli_env,
    create_bodies,
    make_sections,
    run_cli,
    section_ids,
    server,
)


class Workspace:
    """Folders of one CLI scenario and the outputs of every run, for the final key grep."""

    def __init__(self, data_dir: Path, tmp_path: Path) -> None:
        self.data_dir = data_dir
        self.sections = data_dir / "sections"
        self.out = data_dir / "extracted"
        self.jobs = data_dir / "batch_jobs"
        self.api_state = tmp_path / "api"
        self.texts: list[str] = []
        make_sections(self.sections)
        self.ids = section_ids(self.sections)

    def args(self, mode: str, *extra: str) -> list[str]:
        return [
            "extract-batch",
            "--mode",
            mode,
            "--model",
            MODEL,
            "--input-dir",
            str(self.sections),
            "--output-dir",
            str(self.out),
            "--series",
            SERIES,
            "--jobs-dir",
            str(self.jobs),
            *extra,
        ]

    def run(self, srv, mode: str, *extra: str, failpoint: str | None = None, rc: int = 0):
        env = cli_env(
            srv, self.data_dir, **({"FANTASY_KG_FAILPOINT": failpoint} if failpoint else {})
        )
        proc = run_cli(self.args(mode, *extra), env)
        self.texts += [proc.stdout, proc.stderr]
        assert proc.returncode == rc, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
        return proc

    def wait_ended(self, srv, batch_id: str) -> dict[str, Any]:
        """Wait in-process (cheap), then ask a fresh process for the status."""
        for _ in range(200):
            if extraction.batch_status(batch_id, self.jobs).is_ended:
                break
            time.sleep(0.05)
        doc: dict[str, Any] = json.loads(self.run(srv, "status", "--batch-id", batch_id).stdout)
        return doc

    def assert_complete(self) -> None:
        """Invariant 2: every section has a valid result or a recorded failure, no key leaked."""
        failures = {f.custom_id for f in load_failures(self.out)}
        for cid in self.ids:
            path = self.out / f"{cid}_extracted.json"
            if cid in failures:
                continue
            assert path.is_file(), f"{cid} lost: no result and no failure record"
            ExtractionResult.model_validate_json(path.read_text(encoding="utf-8"))
        checked = assert_no_key([self.data_dir, self.api_state], self.texts)
        assert checked > len(self.ids)


@pytest.fixture
def ws(data_dir: Path, tmp_path: Path) -> Workspace:
    return Workspace(data_dir, tmp_path)


def _one_batch_per_manifest(srv) -> list[str]:
    """Batch ids on the server, asserting no two were created for the same custom_id set."""
    manifests = [tuple(sorted(r["custom_id"] for r in b["requests"])) for b in create_bodies(srv)]
    on_server = batches_on_server(srv)
    assert len(on_server) == len(set(manifests)), (len(on_server), manifests)
    return [b.id for b in on_server]


def test_cli_submit_then_status_and_retrieve_from_other_processes(
    ws: Workspace, in_process_env
) -> None:
    with server(ws.api_state) as srv:
        in_process_env(srv)
        proc = ws.run(srv, "submit")
        doc = json.loads(proc.stdout)
        [batch] = doc["batches"]
        assert batch["series"] == SERIES and batch["batch_id"].startswith("msgbatch_")
        # The submitting process has exited; a later process asks for the status.
        status = ws.wait_ended(srv, batch["batch_id"])
        assert {
            "batch_id",
            "status",
            "succeeded",
            "processing",
            "errored",
            "canceled",
            "expired",
        } <= set(status)
        assert status["succeeded"] == len(ws.ids) and status["processing"] == 0
        got = json.loads(ws.run(srv, "retrieve", "--batch-id", batch["batch_id"]).stdout)
        assert got["written"] == len(ws.ids) and got["failed"] == 0
        assert got["cost_usd"]["batch"] > 0
        # A second submit is a no-op: everything is extracted, no API call at all.
        before = len(srv.request_log.entries())
        assert extraction.submit_series(ws.sections, ws.out, SERIES, MODEL, jobs_dir=ws.jobs) == []
        # The status of a processed batch is answered from its job file.
        assert extraction.batch_status(batch["batch_id"], ws.jobs).is_settled
        assert len(srv.request_log.entries()) == before
        assert len(srv.requests_to("batches.create")) == 1
        for params in (r["params"] for b in create_bodies(srv) for r in b["requests"]):
            assert not {"temperature", "top_p", "top_k"} & set(params)
    ws.assert_complete()


def test_cli_full_mode_prints_counts_and_progress(ws: Workspace) -> None:
    with server(ws.api_state) as srv:
        proc = ws.run(srv, "full", "--poll-interval", "0.05")
    doc = json.loads(proc.stdout)
    assert doc["sections"] == doc["written"] == len(ws.ids)
    assert doc["failed"] == 0 and doc["pending"] == 0
    assert f"sections {len(ws.ids)} = written {len(ws.ids)}" in proc.stderr
    ws.assert_complete()


def test_cli_preflight_refusal_names_section_and_sends_nothing(ws: Workspace) -> None:
    with server(ws.api_state) as srv:
        proc = ws.run(srv, "submit", "--max-tokens", "500000", rc=2)
        assert srv.request_log.entries() == []  # not a single request left the machine
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: section ashen_crown_section_01.txt"), proc.stderr
    assert "max_tokens 500,000 > 128,000" in line
    assert not ws.jobs.exists() or not list(ws.jobs.glob("*.json"))


@pytest.mark.parametrize(
    ("extra", "needle", "key"),
    [
        (["--max-cost", "0.0001"], "exceeds --max-cost $0.00", True),
        (["--model", "claude-opus-4-1"], "unknown model 'claude-opus-4-1'", True),
        (["--backend", "anthropic"], "backend 'anthropic' needs an API key", False),
    ],
    ids=["max-cost", "unknown-model", "anthropic-without-key"],
)
def test_cli_user_errors_exit_2_in_one_line(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, extra: list[str], needle: str, key: bool
) -> None:
    from click.testing import CliRunner

    from fantasy_kg.cli.main import cli

    with server(ws.api_state) as srv:
        for name, value in cli_env(srv, ws.data_dir).items():
            if name.startswith(("ANTHROPIC_", "FANTASY_KG_")):
                monkeypatch.setenv(name, value)
        if not key:
            monkeypatch.delenv("ANTHROPIC_API_KEY")
        result = CliRunner().invoke(cli, ws.args("submit", *extra))
        assert srv.request_log.entries() == []
    assert result.exit_code == 2, result.output
    lines = [x for x in result.output.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and needle in lines[0], result.output
    ws.texts.append(result.output)
    assert_no_key([ws.data_dir], ws.texts)


# ---------------------------------------------------------------------------------------------
# SIGKILL matrix
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def in_process_env(monkeypatch: pytest.MonkeyPatch, ws: Workspace):
    """Point in-process pipeline calls at a server the way the subprocesses are pointed."""

    def apply(srv) -> None:
        for name, value in cli_env(srv, ws.data_dir).items():
            if name.startswith("ANTHROPIC_"):
                monkeypatch.setenv(name, value)

    return apply


@pytest.mark.parametrize("point", ["before_create", "after_create", "after_persist"])
def test_kill_during_submit_then_rerun_submits_once(
    ws: Workspace, in_process_env, point: str
) -> None:
    with server(ws.api_state) as srv:
        in_process_env(srv)
        ws.run(srv, "submit", failpoint=point, rc=-signal.SIGKILL)
        assert len(batches_on_server(srv)) == (0 if point == "before_create" else 1)
        [batch] = json.loads(ws.run(srv, "submit").stdout)["batches"]
        # Re-running again (here in-process) is still a no-op returning the same batch.
        jobs = extraction.submit_series(ws.sections, ws.out, SERIES, MODEL, jobs_dir=ws.jobs)
        assert [j.id for j in jobs] == [batch["batch_id"]]
        assert _one_batch_per_manifest(srv) == [batch["batch_id"]]
        assert len(srv.requests_to("batches.create")) == 1
        if point == "after_create":
            assert srv.requests_to("batches.list"), "the re-run must reconcile via list"
            assert JobStore(ws.jobs).load(batch["batch_id"]).reconciled
        result = extraction.run_full(
            ws.sections, ws.out, SERIES, MODEL, jobs_dir=ws.jobs, poll_interval_seconds=0.05
        )
        assert result.written == len(ws.ids)
        assert len(batches_on_server(srv)) == 1
    ws.assert_complete()


@pytest.mark.parametrize(
    "point",
    [
        "during_results:3",
        "before_followup_create",
        pytest.param("after_results", marks=pytest.mark.slow),
        pytest.param("after_create", marks=pytest.mark.slow),
        pytest.param("after_persist", marks=pytest.mark.slow),
    ],
)
def test_kill_during_retrieve_then_rerun_loses_nothing(
    ws: Workspace, in_process_env, point: str
) -> None:
    # One section errors once (retryable), so retrieve also creates a follow-up batch.
    plan = FaultPlan(results={ws.ids[0]: ResultOverride.errored("api_error", times=1)})
    with server(ws.api_state, plan) as srv:
        in_process_env(srv)
        [job] = extraction.submit_series(ws.sections, ws.out, SERIES, MODEL, jobs_dir=ws.jobs)
        for _ in range(200):
            if extraction.batch_status(job.id, ws.jobs).is_ended:
                break
            time.sleep(0.05)
        ws.run(srv, "retrieve", "--batch-id", job.id, failpoint=point, rc=-signal.SIGKILL)
        if point.startswith("during_results"):
            written = list(ws.out.glob("*_extracted.json"))
            assert 0 < len(written) < len(ws.ids)  # killed mid-download
        got = json.loads(ws.run(srv, "retrieve", "--batch-id", job.id).stdout)
        assert got["followup_batch_id"]
        # Retrieving again creates no second follow-up.
        again = extraction.retrieve_batch(job.id, ws.jobs)
        assert again.followup_batch_id == got["followup_batch_id"]
        result = extraction.run_full(
            ws.sections, ws.out, SERIES, MODEL, jobs_dir=ws.jobs, poll_interval_seconds=0.05
        )
        assert result.written == len(ws.ids)
        assert len(_one_batch_per_manifest(srv)) == 2
        assert len(srv.requests_to("batches.create")) == 2
    parent = JobStore(ws.jobs).load(job.id)
    assert parent.result_counts is not None
    assert parent.result_counts.written == len(ws.ids) - 1
    assert parent.retry_batch_ids == [got["followup_batch_id"]]
    assert load_failures(ws.out) == []
    ws.assert_complete()


@pytest.mark.slow
def test_kill_during_full_run_then_rerun(ws: Workspace) -> None:
    with server(ws.api_state) as srv:
        ws.run(
            srv, "full", "--poll-interval", "0.05", failpoint="during_results:5", rc=-signal.SIGKILL
        )
        ws.run(srv, "full", "--poll-interval", "0.05")
        assert len(_one_batch_per_manifest(srv)) == 1
    ws.assert_complete()


def test_cli_backend_choices_match_the_backend_resolver() -> None:
    """The CLI repeats the backend names to keep ``--help`` free of the SDK import; they agree."""
    from fantasy_kg.cli.options import BACKEND_CHOICES as cli_choices
    from fantasy_kg.llm.backend import BACKEND_CHOICES as llm_choices

    assert cli_choices == llm_choices
