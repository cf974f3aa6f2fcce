"""What this machine can check of the Kubernetes deployment (no docker, no cluster here).

* The Dockerfile installs the package the way README.md does (pip from the project folder, with
  extras that pyproject.toml defines), and the build context it sees (after ``.dockerignore``)
  holds everything that install needs: a wheel is built from exactly that context.
* ``deploy/helm/values.yaml`` parses, serves the project's code location module with the
  K8sRunLauncher on PostgreSQL, and takes the API key from a Secret, never inline.
"""

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
VALUES = REPO_ROOT / "deploy" / "helm" / "values.yaml"
MODULE = "fantasy_kg.definitions"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    out = []
    for line in logical:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _pip_install_targets(command: str) -> list[str]:
    """The install targets of a ``pip install`` command line (options dropped)."""
    words = shlex.split(command)
    start = next(i for i in range(len(words) - 1) if words[i : i + 2] == ["pip", "install"])
    return [w for w in words[start + 2 :] if not w.startswith("-") and w not in ("&&", ";")]


def _readme_install_command() -> str:
    for line in (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if "pip install" in line and "'." in line:
            return line.split("#", 1)[0]
    raise AssertionError("README.md has no `pip install '.[...]'` command")


def _extras(target: str) -> tuple[str, set[str]]:
    match = re.fullmatch(r"(\.)(?:\[([a-z0-9_,-]+)\])?", target)
    assert match, f"not an install of the project folder: {target!r}"
    return match.group(1), set(filter(None, (match.group(2) or "").split(",")))


def test_dockerfile_installs_the_package_as_the_readme_does() -> None:
    steps = _instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = [args for kind, args in steps if kind == "RUN" and "pip install" in args]
    assert len(runs) == 1, runs
    image_targets = _pip_install_targets(runs[0])
    readme_targets = [t for t in _pip_install_targets(_readme_install_command()) if t != "-e"]
    assert len(image_targets) == len(readme_targets) == 1
    image_project, image_extras = _extras(image_targets[0])
    readme_project, _ = _extras(readme_targets[0])
    # The same project folder, through pip, with extras the project defines (not dev tools).
    assert image_project == readme_project == "."
    defined = set(
        tomllib.loads((REPO_ROOT / "pyproject.toml").read_text("utf-8"))["project"][
            "optional-dependencies"
        ]
    )
    assert image_extras <= defined
    assert {"postgres", "k8s"} <= image_extras and "dev" not in image_extras
    cmd = next(args for kind, args in steps if kind == "CMD")
    assert MODULE in cmd and "code-server" in cmd and "4000" in cmd
    assert ("EXPOSE", "4000") in steps


def _context_files() -> list[Path]:
    """Files docker would send as the build context, per ``.dockerignore`` (its simple rules)."""
    rules = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    kept = []
    for name in tracked:
        included = True
        for rule in rules:
            negate, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
            pattern = pattern.removeprefix("**/")
            hit = (
                fnmatch.fnmatch(name, pattern)
                or name.startswith(pattern + "/")
                or fnmatch.fnmatch(Path(name).name, pattern)
            )
            if hit:
                included = negate
        if included:
            kept.append(Path(name))
    return kept


def test_the_build_context_is_enough_to_build_the_package(tmp_path: Path) -> None:
    context = tmp_path / "context"
    files = _context_files()
    assert Path("pyproject.toml") in files and Path("README.md") in files
    assert not any(p.parts[0] in ("data", ".venv", "fantasy_kg_tests") for p in files)
    copied = {
        args.split()[0]
        for kind, args in _instructions()
        if kind == "COPY" and not args.startswith("--")
    }
    for rel in files:
        # Only what the Dockerfile COPYs reaches the image's build step.
        if rel.parts[0] in copied or str(rel) in {"pyproject.toml", "README.md"}:
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / rel, context / rel)
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps"]
    proc = subprocess.run(
        [*pip_wheel, "-q", "-w", str(tmp_path / "wheels"), str(context)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next((tmp_path / "wheels").glob("fantasy_kg-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "fantasy_kg/definitions.py" in names
    assert any(n.startswith("fantasy_kg/nlp/litbank_ner/") for n in names)


def _values() -> dict[str, Any]:
    loaded = yaml.safe_load(VALUES.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_helm_values_serve_the_code_location_on_k8s_and_postgres() -> None:
    values = _values()
    deployments = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"] is True
    (code,) = deployments
    assert code["codeServerArgs"] == ["--module-name", MODULE]
    assert code["port"] == 4000
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["dequeueUseThreads"] is True and queued["dequeueNumWorkers"] >= 1
    limits = values["concurrency"]["runs"]["tagConcurrencyLimits"]
    assert {
        "key": "dagster/partition",
        "value": {"applyLimitPerUniqueValue": True},
        "limit": 1,
    } in (limits)
    env = {e["name"]: e.get("value") for e in code["env"]}
    assert (env.get("FANTASY_KG_WAREHOUSE") or "").startswith("shards")


def test_helm_values_take_the_api_key_from_a_secret_only() -> None:
    text = VALUES.read_text(encoding="utf-8")
    values = _values()
    code = values["dagster-user-deployments"]["deployments"][0]
    assert "ANTHROPIC_API_KEY" not in {e["name"] for e in code["env"]}
    assert code["envSecrets"] and values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]
    assert not re.search(r"sk-ant-[A-Za-z0-9]", text.replace("sk-ant-...", ""))
    assert "postgresqlPassword" not in values["postgresql"]
