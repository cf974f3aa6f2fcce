"""Secrets and exposure (design invariant 5): the API key never leaves memory; the local API
listens on loopback only.

The whole pipeline runs with a recognizable fake key on the ``anthropic`` backend (the SDK is
pointed at the loopback server with ``ANTHROPIC_BASE_URL``, so the real key-handling code path
runs), through the CLI with debug logging and through real Dagster materializations. Afterwards
every byte the project could have written is scanned for the key: every file under the data
directory and under ``DAGSTER_HOME`` (run storage, event logs, compute logs), every DuckDB table
rendered as text, captured stdout/stderr, log records and the text of the errors users see.
"""

import json
import logging
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fantasy_kg.domain.errors import ConfigError
from fantasy_kg.local_api import Fault, FaultPlan, LocalServer, start_local_server
from fantasy_kg_tests.reliability.harness import (
    FAKE_KEY,
    REPO_ROOT,
    all_files,
    dump_duckdb_text,
    run_cli,
    server_batches,
    subprocess_env,
    synthetic_book,
    write_book,
)
from fantasy_kg_tests.reliability.rig import wait_for

SCENARIO_CATEGORY = "Secrets and exposure"

KEY_FRAGMENT = FAKE_KEY[len("sk-ant-") :]
"""A distinctive tail of the key: also catches a key that was cut, quoted or re-encoded."""


def leaks_in_files(*roots: Path) -> list[str]:
    """Files under ``roots`` whose bytes contain the key (raw, UTF-16 or without its prefix)."""
    needles = [
        FAKE_KEY.encode(),
        KEY_FRAGMENT.encode(),
        KEY_FRAGMENT.encode("utf-16-le"),
    ]
    found = []
    for root in roots:
        for path in all_files(root):
            data = path.read_bytes()
            if any(n in data for n in needles):
                found.append(str(path))
    return found


def assert_no_key(text: str, where: str) -> None:
    assert KEY_FRAGMENT not in text, f"the API key appears in {where}"


@pytest.mark.slow
@pytest.mark.scenario(
    id="secrets-cli-pipeline",
    injected=f"ANTHROPIC_API_KEY={FAKE_KEY[:24]}… (fake, recognizable) with the anthropic backend; "
    "`fantasy-kg -v` sections → extract-batch full → extract (real time) → load → sql, plus "
    "failing calls: key refused (401), spend limit (429), unknown batch id",
    checked="the key (or its tail, in UTF-8 or UTF-16) is in no file under the data dir or the "
    "server's state dir, in no DuckDB table, in no stdout/stderr line, in no error message",
)
def test_key_never_leaves_memory_in_the_cli(data_dir: Path, tmp_path: Path) -> None:
    write_book(data_dir / "books" / "secret_saga", "01.txt", synthetic_book(40, seed=5))
    outputs: list[str] = []
    with start_local_server(tmp_path / "api", log_requests_to_file=True) as server:
        env = subprocess_env(
            data_dir, ANTHROPIC_API_KEY=FAKE_KEY, ANTHROPIC_BASE_URL=server.base_url
        )

        def cli(*args: str, expect: int = 0) -> None:
            res = run_cli("-v", *args, env=env)
            outputs.extend([res.stdout, res.stderr])
            assert res.exit_code == expect, res.stderr[-3000:]

        cli("sections", "--max-section-tokens", "900")
        cli("extract-batch", "--mode", "full", "--poll-interval", "0.2", "--backend", "anthropic")
        cli(
            "extract",
            "--provider",
            "anthropic",
            "--output-dir",
            str(data_dir / "realtime"),
        )
        cli("load")
        cli("sql", "SELECT * FROM batch_jobs", "--format", "json")
        cli("extract-batch", "--mode", "status", "--batch-id", "msgbatch_nope", expect=2)
        server.require_key = "sk-ant-someone-else"
        (data_dir / "extracted").rename(data_dir / "extracted_before")
        cli("extract-batch", "--mode", "submit", expect=2)
        server.require_key = None
        server.set_faults(FaultPlan(faults=(Fault.spend_limit("batches.create"),)))
        cli("extract-batch", "--mode", "submit", expect=2)
        assert server.requests_to("batches.create")
        assert any(e.headers.get("anthropic-version") for e in server.requests_to("batches.create"))
    assert leaks_in_files(data_dir, tmp_path / "api") == []
    assert_no_key(dump_duckdb_text(data_dir / "fantasy_kg.duckdb"), "DuckDB")
    for text in outputs:
        assert_no_key(text, "CLI output")
    # The runs did use the key: the server saw authenticated requests (headers redacted in logs).
    assert len(server_batches(tmp_path / "api")) >= 1


@pytest.mark.scenario(
    id="secrets-error-texts-and-logs",
    injected="in-process pipeline calls with the fake key that fail every way a key-bearing "
    "request can: 401, 403, connection refused, spend limit; logging captured at DEBUG for "
    "every logger (SDK and HTTP client included)",
    checked="no exception message, repr, chained cause or log record contains the key; the "
    "Backend object's repr hides it",
)
def test_key_absent_from_exceptions_and_debug_logs(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fantasy_kg.llm.backend import resolve_backend
    from fantasy_kg.pipeline.extraction import submit_series
    from fantasy_kg_tests.reliability.harness import run_cli_inprocess

    write_book(data_dir / "books" / "secret_saga", "01.txt", synthetic_book(20, seed=5))
    assert run_cli_inprocess("sections", "--max-section-tokens", "900").exit_code == 0
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    monkeypatch.setenv("ANTHROPIC_LOG", "debug")
    backend = resolve_backend("anthropic")
    assert_no_key(repr(backend), "repr(Backend)")
    errors: list[BaseException] = []
    plans: list[tuple[FaultPlan, dict[str, Any]]] = [
        (FaultPlan(), {"require_key": "sk-ant-other"}),
        (FaultPlan(faults=(Fault.status_error("batches.create", 403),)), {}),
        (FaultPlan(faults=(Fault.spend_limit("batches.create"),)), {}),
    ]
    for i, (plan, options) in enumerate(plans):
        with start_local_server(tmp_path / f"api{i}", faults=plan, **options) as server:
            monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
            with pytest.raises(Exception) as info:
                submit_series(data_dir / "sections", data_dir / "extracted", backend="anthropic")
            errors.append(info.value)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{dead}")
    with pytest.raises(Exception) as info:
        submit_series(data_dir / "sections", data_dir / "extracted", backend="anthropic")
    errors.append(info.value)
    for exc in errors:
        chain: BaseException | None = exc
        while chain is not None:
            assert_no_key(str(chain), f"str({type(chain).__name__})")
            assert_no_key(repr(chain), f"repr({type(chain).__name__})")
            chain = chain.__cause__ or chain.__context__
    for record in caplog.records:
        assert_no_key(record.getMessage(), f"log record of {record.name}")
    assert any(r.name.startswith("fantasy_kg") for r in caplog.records)
    assert leaks_in_files(data_dir) == []


@pytest.mark.slow
@pytest.mark.scenario(
    id="secrets-dagster-materialization",
    injected=f"ANTHROPIC_API_KEY={FAKE_KEY[:24]}… in the environment of `dagster asset "
    "materialize` (resource takes it as dg.EnvVar); submit run, then the results → graph → "
    "DuckDB run once the batch ended",
    checked="both runs succeed; the key is in no file under DAGSTER_HOME (run and event "
    "storage, compute logs), the data dir or DuckDB, and not in the runs' output",
)
def test_key_never_reaches_dagster_storage(data_dir: Path, tmp_path: Path) -> None:
    write_book(data_dir / "books" / "secret_saga", "01.txt", synthetic_book(30, seed=5))
    home = tmp_path / "dagster_home"
    home.mkdir()
    with start_local_server(tmp_path / "api") as server:
        env = subprocess_env(
            data_dir,
            DAGSTER_HOME=str(home),
            ANTHROPIC_API_KEY=FAKE_KEY,
            ANTHROPIC_BASE_URL=server.base_url,
        )

        def materialize(select: str) -> str:
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "dagster",
                    "asset",
                    "materialize",
                    "-m",
                    "fantasy_kg.definitions",
                    "--select",
                    select,
                    "--partition",
                    "secret_saga",
                ],
                env=env,
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert "RUN_SUCCESS" in proc.stderr
            return proc.stdout + proc.stderr

        first = materialize("*")
        wait_for(
            lambda: all(b.status == "ended" for b in server_batches(tmp_path / "api")),
            "the batch to end",
        )
        second = materialize("extraction_results*")
    jobs = [json.loads(p.read_text()) for p in (data_dir / "batch_jobs").glob("*.json")]
    assert jobs and all(j["backend"] == "anthropic" for j in jobs)
    assert (data_dir / "fantasy_kg.duckdb").exists()
    assert leaks_in_files(home, data_dir) == []
    assert_no_key(dump_duckdb_text(data_dir / "fantasy_kg.duckdb"), "DuckDB")
    assert_no_key(first + second, "dagster output")
    assert any(home.rglob("*.db")), "no Dagster storage was written to scan"


def _outward_address() -> str | None:
    """This machine's non-loopback IPv4 address, if it has one (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("198.51.100.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


@pytest.mark.scenario(
    id="local-api-loopback-only",
    injected="`fantasy-kg local-api` started as a process; connections attempted on its port "
    "through this machine's non-loopback address; LocalServer asked to bind 0.0.0.0",
    checked="it listens on 127.0.0.1 only and says so (banner and base_url); the non-loopback "
    "connection is refused; binding any other host is refused with a one-line ConfigError",
)
def test_local_api_listens_on_loopback_only(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fantasy_kg", "local-api", "--state-dir", str(data_dir / "api")],
        env=subprocess_env(data_dir),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = json.loads(proc.stdout.readline())
        banner = proc.stderr.readline()
        url = str(first["base_url"])
        assert url.startswith("http://127.0.0.1:")
        assert "127.0.0.1" in banner and "not Claude" in banner
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        outward = _outward_address()
        if outward is not None:
            with pytest.raises(OSError):
                socket.create_connection((outward, port), timeout=2).close()
        listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
        ours = [ln.split()[1] for ln in listening if ln.split()[1].endswith(f":{port:04X}")]
        assert ours and all(addr.startswith("0100007F:") for addr in ours), ours
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1"):
        LocalServer(data_dir / "api2", host="0.0.0.0")
    caplog.set_level(logging.INFO, logger="fantasy_kg.local_api")
    with start_local_server(data_dir / "api3") as server:
        assert server.base_url.startswith("http://127.0.0.1:")
    assert any("127.0.0.1" in r.getMessage() for r in caplog.records)
