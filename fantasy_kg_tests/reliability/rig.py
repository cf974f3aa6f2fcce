"""A test rig: a data dir with sections of a small series plus a running local API server.

The server runs in the test process, so its state outlives any CLI process the test kills, like
the real API's; CLI runs reach it through the ``anthropic`` backend (fake key + base URL), in a
subprocess (:meth:`Rig.cli`) or in this process (:meth:`Rig.cli_here`).
"""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fantasy_kg.local_api import FaultPlan, LocalServer, start_local_server
from fantasy_kg_tests.reliability.harness import (
    FAKE_KEY,
    CliResult,
    run_cli,
    run_cli_inprocess,
    section_custom_ids,
    server_batches,
    subprocess_env,
    synthetic_book,
    write_book,
)

SERIES = "crash_series"
POLL = "0.2"


def make_sections(data_dir: Path, series: str = SERIES, paragraphs: int = 70) -> list[str]:
    """Section a small deterministic series (~5 sections); return all custom_ids in the folder."""
    write_book(data_dir / "books" / series, "01_book.txt", synthetic_book(paragraphs, seed=7))
    res = run_cli_inprocess(
        "sections",
        "--books-dir",
        str(data_dir / "books"),
        "--output-dir",
        str(data_dir / "sections"),
        "--max-section-tokens",
        "900",
    )
    assert res.exit_code == 0, res.stderr
    cids = section_custom_ids(data_dir / "sections")
    assert len(cids) >= 4
    return cids


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Wait until ``predicate`` holds (the limit only stops a hung test; nothing is timed)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


@dataclass
class Rig:
    """Sections on disk, a running API server and the environment to reach it."""

    data_dir: Path
    state_dir: Path
    server: LocalServer
    custom_ids: list[str]
    base_url: str = ""

    def __post_init__(self) -> None:
        self.base_url = self.base_url or self.server.base_url

    def env(self, failpoint: str | None = None, **extra: str) -> dict[str, str]:
        """Environment of a CLI (or Dagster) subprocess aimed at this rig's server."""
        env = {"ANTHROPIC_API_KEY": FAKE_KEY, "ANTHROPIC_BASE_URL": self.base_url, **extra}
        if failpoint:
            env["FANTASY_KG_FAILPOINT"] = failpoint
        return subprocess_env(self.data_dir, **env)

    def cli(self, *args: str, failpoint: str | None = None) -> CliResult:
        """``fantasy-kg extract-batch ARGS`` in a subprocess."""
        return run_cli("extract-batch", *args, env=self.env(failpoint))

    def cli_here(self, monkeypatch: pytest.MonkeyPatch, *args: str) -> CliResult:
        """``fantasy-kg ARGS`` in this process, aimed at the rig's server."""
        monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", self.base_url)
        return run_cli_inprocess(*args)

    @property
    def out(self) -> Path:
        """The default output folder."""
        return self.data_dir / "extracted"

    @property
    def jobs(self) -> Path:
        """The default jobs folder."""
        return self.data_dir / "batch_jobs"

    def submit_in_process(self, monkeypatch: pytest.MonkeyPatch) -> str:
        """Submit through the CLI in this process (setup, not under test); wait until it ends."""
        res = self.cli_here(monkeypatch, "extract-batch", "--mode", "submit")
        assert res.exit_code == 0, res.stderr
        (batch,) = res.json()["batches"]
        self.wait_all_ended()
        return str(batch["batch_id"])

    def wait_all_ended(self) -> None:
        """Wait until every batch on the server has ended."""
        wait_for(
            lambda: all(b.status == "ended" for b in server_batches(self.state_dir)),
            "every batch to end",
        )


@contextmanager
def open_rig(
    data_dir: Path,
    state_dir: Path,
    plan: FaultPlan | None = None,
    *,
    sections: Callable[[Path], list[str]] = make_sections,
    **server_options: Any,
) -> Iterator[Rig]:
    """Make sections, start a server (with faults/options), stop it afterwards."""
    cids = sections(data_dir)
    server = start_local_server(state_dir, faults=plan or FaultPlan(), **server_options)
    try:
        yield Rig(data_dir, state_dir, server, cids)
    finally:
        server.stop()
