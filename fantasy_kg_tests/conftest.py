"""Shared fixtures: every test gets its own data directory and no API key from the environment."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_SERIES = "ashen_crown"
CORPUS_DIR = REPO_ROOT.parent / "shared" / "corpus"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point FANTASY_KG_DATA_DIR at a temp dir and drop real credentials and base URLs."""
    monkeypatch.setenv("FANTASY_KG_DATA_DIR", str(tmp_path / "data"))
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The test's data directory (empty, created)."""
    path = tmp_path / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def sample_data_dir(data_dir: Path) -> Iterator[Path]:
    """A data directory holding a copy of the tracked sample series, ontology and gold."""
    for sub in ("books", "schemas", "gold"):
        src = REPO_ROOT / "data" / sub
        if src.exists():
            shutil.copytree(src, data_dir / sub, dirs_exist_ok=True)
    yield data_dir


@pytest.fixture
def oz_dir() -> Path:
    """The shared Oz corpus (14 books); tests that need it skip when it is absent."""
    path = CORPUS_DIR / "oz"
    if not path.is_dir():
        pytest.skip(f"shared corpus not found at {path} (a fresh clone has no ../shared)")
    return path
