"""Shared machinery of the reliability suite: running the CLI, snapshots, scans, server state.

Everything here observes; nothing replaces project code. The CLI runs either in-process through
click's runner (fast, for input validation) or as a real subprocess (``python -m fantasy_kg``) so
it can be SIGKILLed at a failpoint with nothing flushed.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from fantasy_kg.cli.main import cli
from fantasy_kg.llm.ownership import split_wire_id

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_BOOKS = REPO_ROOT / "data" / "books" / "ashen_crown"
SAMPLE_SCHEMA = REPO_ROOT / "data" / "schemas" / "ashen_crown_schema.json"

TMP_FILE_RE = re.compile(r"^\..*\.tmp$|\.tmp$|\.part$")
"""Names of temp files the project writes before an atomic rename (``.<name>.<pid>.tmp``)."""


@dataclass(frozen=True)
class CliResult:
    """Outcome of one CLI invocation."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """Non-blank stderr lines."""
        return [line for line in self.stderr.splitlines() if line.strip()]

    def json(self) -> Any:
        """stdout as one JSON document."""
        return json.loads(self.stdout)


def run_cli_inprocess(*args: str, env: Mapping[str, str] | None = None) -> CliResult:
    """Run ``fantasy-kg ARGS`` in this process (stdout and stderr captured separately)."""
    runner = CliRunner()
    result = runner.invoke(cli, list(args), env=dict(env or {}), catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)


def subprocess_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this one, the test's data dir, no real credentials."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL")
        and not k.startswith("FANTASY_KG_")
        and not k.startswith("PYTEST_")
    }
    env["FANTASY_KG_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 180.0, cwd: Path | None = None
) -> CliResult:
    """Run ``python -m fantasy_kg ARGS`` as a real subprocess and wait for it."""
    proc = subprocess.run(
        [sys.executable, "-m", "fantasy_kg", *args],
        env=dict(env),
        cwd=cwd or REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def killed_by_sigkill(result: CliResult) -> bool:
    """Whether the subprocess died of SIGKILL (a fired failpoint)."""
    return result.exit_code == -signal.SIGKILL


def snapshot(root: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``root`` (symlinks as ``link:<target>``)."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in [*filenames, *(d for d in dirnames if (base / d).is_symlink())]:
            path = base / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = f"link:{os.readlink(path)}"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def temp_leftovers(*roots: Path) -> list[Path]:
    """Temp files (``.x.123.tmp`` and friends) left under ``roots``: proof of a torn write."""
    found: list[Path] = []
    for root in roots:
        if not root.exists():
            continue
        for path in root.rglob("*"):
            if path.is_file() and TMP_FILE_RE.search(path.name):
                found.append(path)
    return found


def files_outside(root: Path, paths: Iterable[Path]) -> list[Path]:
    """The paths that resolve outside ``root``."""
    base = root.resolve()
    return [p for p in paths if base != p.resolve() and base not in p.resolve().parents]


def all_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (not following symlinked folders)."""
    out: list[Path] = []
    for dirpath, _dirs, filenames in os.walk(root, followlinks=False):
        out.extend(Path(dirpath) / n for n in filenames)
    return out


def write_book(folder: Path, name: str, text: str) -> Path:
    """Write a UTF-8 book file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def synthetic_book(paragraphs: int, seed: int = 0, title: str = "A Synthetic Chronicle") -> str:
    """Deterministic prose with named characters, places and a few stated relationships."""
    names = ["Mira Thorne", "Aldous Thorne", "Kestrel Vane", "Ilsa Marr", "Orrin Dusk"]
    places = ["Emberfall", "the Ashen Keep", "Greywater", "the Thornwood"]
    lines = [title, ""]
    for i in range(paragraphs):
        a = names[(i + seed) % len(names)]
        b = names[(i * 3 + seed + 1) % len(names)]
        p = places[(i + seed) % len(places)]
        if i % 12 == 0:
            lines += [f"Chapter {i // 12 + 1}", ""]
        lines.append(
            f"{a} rode to {p} at dawn. {a} was the enemy of {b}, and the road was long. "
            f"The ash fell on the banners of {p} while the bells rang for the {i}th time."
        )
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# The server's view and the pipeline's accounting
# ------------------------------------------------------------------------------------------

FAKE_KEY = "sk-ant-FAKE-KEY-reliability-0123456789abcdefDO-NOT-LEAK"
"""A recognizable fake API key: scanned for in every file, log and table after a run."""


@dataclass(frozen=True)
class ServerBatch:
    """A batch as the server stored it.

    ``custom_ids`` are the section ids the requests were for: fantasy_kg sends each with its
    submission's nonce (``<section id>-<nonce>``), which ``wire_ids`` keeps.
    """

    id: str
    custom_ids: tuple[str, ...]
    status: str
    wire_ids: tuple[str, ...] = ()


def server_batches(state_dir: Path) -> list[ServerBatch]:
    """Every batch ever created in a local API state directory, oldest first (read from disk)."""
    index = state_dir / "index.jsonl"
    if not index.exists():
        return []
    out: list[ServerBatch] = []
    pairs = []
    for line in index.read_text(encoding="utf-8").splitlines():
        seq, _, batch_id = line.partition(" ")
        if seq.isdigit() and batch_id:
            pairs.append((int(seq), batch_id))
    for _seq, batch_id in sorted(pairs):
        folder = state_dir / "batches" / batch_id
        cids = tuple(
            json.loads(line)["custom_id"]
            for line in (folder / "requests.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()
        )
        record = json.loads((folder / "batch.json").read_text(encoding="utf-8"))
        sections = tuple(split_wire_id(cid)[0] for cid in cids)
        out.append(ServerBatch(batch_id, sections, str(record["processing_status"]), cids))
    return out


def section_custom_ids(sections_dir: Path) -> list[str]:
    """The custom_ids the pipeline gives the section files of a folder (its own rule)."""
    from fantasy_kg.domain.sections import read_sections
    from fantasy_kg.llm.requests import make_custom_id

    used: set[str] = set()
    return [make_custom_id(sec.stem, used) for sec in read_sections(sections_dir)]


def accounting(output_dir: Path, custom_ids: Iterable[str]) -> dict[str, str]:
    """``custom_id -> 'result' | 'failure' | 'both' | 'none'`` from the files in ``output_dir``."""
    out: dict[str, str] = {}
    for cid in custom_ids:
        has_result = (output_dir / f"{cid}_extracted.json").is_file()
        has_failure = (output_dir / "_failures" / f"{cid}.json").is_file()
        out[cid] = {
            (True, False): "result",
            (False, True): "failure",
            (True, True): "both",
            (False, False): "none",
        }[(has_result, has_failure)]
    return out


def result_files(output_dir: Path) -> dict[str, str]:
    """``file name -> content`` of every ``*_extracted.json`` (to compare runs)."""
    return {
        p.name: p.read_text(encoding="utf-8") for p in sorted(output_dir.glob("*_extracted.json"))
    }


def dump_duckdb(
    db_path: Path, exclude: Iterable[str] = ("load_runs",)
) -> dict[str, list[tuple[Any, ...]]]:
    """Every base table's rows, sorted, as Python values (``load_runs`` left out by default:
    it logs each load with a timestamp by design)."""
    import duckdb

    skip = set(exclude)
    out: dict[str, list[tuple[Any, ...]]] = {}
    conn = duckdb.connect(str(db_path), read_only=True)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            ).fetchall()
        ]
        for table in sorted(tables):
            if table in skip:
                continue
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            out[table] = sorted(rows, key=repr)
    finally:
        conn.close()
    return out


def dump_duckdb_text(db_path: Path) -> str:
    """Every table (``load_runs`` included) rendered as text, for secret scans."""
    return repr(dump_duckdb(db_path, exclude=()))
