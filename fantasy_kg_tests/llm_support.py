"""Helpers for the batch/real-time client tests: section files, servers, key-leak checks.

Sections are cut from the tracked sample series at run time (paragraph boundaries, several per
book) so the every-result-type tests have enough custom_ids; the server is the project's own
loopback Anthropic API (``fantasy_kg.local_api``) driven through the real SDK.
"""

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fantasy_kg.domain.sections import SectionMeta, text_sha256, write_section
from fantasy_kg.local_api import FaultPlan, LocalServer, start_local_server

REPO_ROOT = Path(__file__).resolve().parent.parent
SERIES = "ashen_crown"
SERIES_NAME = "The Ashen Crown"
MODEL = "claude-sonnet-5-5"
#: A recognizable fake key: every file and log line is grepped for it (and for its tail).
FAKE_KEY = "sk-ant-api03-FANTASYKGFAKEKEY-do-not-leak-7f3a9c1e"


def make_sections(sections_dir: Path, per_book: int = 3) -> list[Path]:
    """Write ``per_book`` sections per sample book (paragraph boundaries), return the .txt paths."""
    books = sorted((REPO_ROOT / "data" / "books" / SERIES).glob("*.txt"))
    paths: list[Path] = []
    number = 0
    for book in books:
        text = book.read_text(encoding="utf-8")
        title = text.splitlines()[0].strip()
        paras = [p for p in text.split("\n\n") if p.strip()]
        size = max(1, -(-len(paras) // per_book))
        for i in range(0, len(paras), size):
            number += 1
            body = "\n\n".join(paras[i : i + size])
            meta = SectionMeta(
                series=SERIES,
                series_name=SERIES_NAME,
                section=number,
                books=[title],
                book_files=[book.name],
                input_tokens=len(body) // 3,
                token_count_method="estimate",
                sha256=text_sha256(body),
                chars=len(body),
            )
            paths.append(write_section(sections_dir, SERIES, body, meta))
    return paths


def section_ids(sections_dir: Path) -> list[str]:
    """custom_ids (file stems) of the section files, in order."""
    return sorted(p.stem for p in sections_dir.glob(f"{SERIES}_section_*.txt"))


class MutableClock:
    """A server clock tests can move forward (expiry, 29-day archive)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@contextmanager
def server(state_dir: Path, plan: FaultPlan | None = None, **options: Any) -> Iterator[LocalServer]:
    """A loopback Anthropic API with an optional fault plan; stopped afterwards."""
    srv = start_local_server(state_dir=state_dir, faults=plan or FaultPlan(), **options)
    try:
        yield srv
    finally:
        srv.stop()


def batches_on_server(srv: LocalServer) -> list[Any]:
    """Every batch the server holds (via the SDK's list, as reconciliation sees them)."""
    import anthropic

    client = anthropic.Anthropic(api_key=FAKE_KEY, base_url=srv.base_url, max_retries=0)
    try:
        return list(client.messages.batches.list(limit=1000))
    finally:
        client.close()


def wire_bodies(srv: LocalServer) -> list[dict[str, Any]]:
    """Bodies of every batch create the server received, exactly as sent."""
    return [e.body for e in srv.requests_to("batches.create")]


def create_bodies(srv: LocalServer) -> list[dict[str, Any]]:
    """Bodies of every batch create, with each custom_id back to its section's id.

    On the wire every custom_id carries its submission's nonce (``<section id>-<nonce>``, see
    :mod:`fantasy_kg.llm.ownership`); tests about what was asked for compare section ids.
    """
    from fantasy_kg.llm.ownership import split_wire_id

    out = []
    for body in wire_bodies(srv):
        requests = [
            {**r, "custom_id": split_wire_id(str(r["custom_id"]))[0]} for r in body["requests"]
        ]
        out.append({**body, "requests": requests})
    return out


def cli_env(srv: LocalServer, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a ``fantasy-kg`` subprocess talking to ``srv`` with the fake key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANTASY_KG_FAILPOINT")}
    env.update(
        {
            "ANTHROPIC_API_KEY": FAKE_KEY,
            "ANTHROPIC_BASE_URL": srv.base_url,
            "FANTASY_KG_DATA_DIR": str(data_dir),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fantasy_kg <args>`` in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "fantasy_kg", "-v", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_no_key(roots: list[Path], texts: Sequence[str] = ()) -> int:
    """Fail if the fake key (or a 16-char piece of it) is in any file under ``roots`` or text.

    Returns the number of files checked, so callers can assert the check saw something.
    """
    needles = [FAKE_KEY, FAKE_KEY[-16:], FAKE_KEY[8:24]]
    checked = 0
    for root in roots:
        if not root.exists():
            continue
        for path in [root] if root.is_file() else root.rglob("*"):
            if not path.is_file():
                continue
            checked += 1
            data = path.read_bytes()
            if path.suffix == ".gz":
                import gzip

                data = gzip.decompress(data)
            for needle in needles:
                assert needle.encode() not in data, f"API key found in {path}"
    for text in texts:
        for needle in needles:
            assert needle not in text, "API key found in output/log text"
    return checked
