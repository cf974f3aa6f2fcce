"""A throw-away Dagster setup for the scripts: sample data copy, fresh DAGSTER_HOME, dagster dev.

Used by ``ui_screenshot.py``, ``sensor_e2e.py`` and ``time_dagster_materialize.py``; none of them
touches your ``data/`` or ``DAGSTER_HOME``. The environment drops ``ANTHROPIC_API_KEY`` unless a
script passes one explicitly, so nothing is ever billed by accident.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(root: Path, series: str, **env_overrides: str) -> dict[str, str]:
    """A data dir holding one sample series, a fresh DAGSTER_HOME, and the environment for both.

    ``DAGSTER_HOME`` gets ``.dagster_home/dagster.yaml`` (duckdb_writer pool limit 1, no NUX modal,
    no telemetry). The backend is forced to ``local`` unless ``env_overrides`` says otherwise.
    """
    data = root / "data"
    shutil.copytree(REPO / "data" / "books" / series, data / "books" / series)
    for sub in ("schemas", "gold"):
        if (REPO / "data" / sub).is_dir():
            shutil.copytree(REPO / "data" / sub, data / sub)
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = dict(os.environ)
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        env.pop(var, None)
    env.update(DAGSTER_HOME=str(home), FANTASY_KG_DATA_DIR=str(data), FANTASY_KG_BACKEND="local")
    env.update(env_overrides)
    return env


def materialize(env: dict[str, str], series: str, select: str = "*") -> float:
    """Run the README's ``dagster asset materialize`` command; return its wall time in seconds.

    Raises:
        subprocess.CalledProcessError: the run failed (its output is in the exception).
    """
    started = time.monotonic()
    subprocess.run(
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
            series,
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def start_dev(env: dict[str, str], port: int, log_path: Path) -> "subprocess.Popen[bytes]":
    """``dagster dev -w workspace.yaml`` on 127.0.0.1, in its own process group."""
    log = open(log_path, "wb")  # noqa: SIM115  # closed when the process is stopped
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for_server(url: str, proc: "subprocess.Popen[bytes]", timeout: float = 180.0) -> None:
    """Poll ``/server_info`` until the webserver answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1.0)
    raise TimeoutError(f"dagster dev did not answer on {url} within {timeout:.0f} s")


def stop(proc: "subprocess.Popen[bytes]") -> None:
    """Stop ``dagster dev`` and its children as Ctrl-C would, then make sure they are gone.

    SIGINT goes to the whole process group (webserver, daemon, code servers), like a terminal's
    Ctrl-C; whatever is still alive 20 seconds later is killed.
    """
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
