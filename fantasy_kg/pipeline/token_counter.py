"""Exact token counts from the API's free ``count_tokens`` endpoint, cached on disk.

Why it works this way: docs/architecture.md, "Extraction steps".
"""

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fantasy_kg.domain.catalog import ModelInfo
from fantasy_kg.domain.errors import ConfigError
from fantasy_kg.domain.paths import atomic_write_text, confined, data_dir, slugify
from fantasy_kg.domain.sections import text_sha256
from fantasy_kg.domain.text.tokens import COUNT_TOKENS_METHOD, EstimateCounter, TokenCounter

if TYPE_CHECKING:  # the SDK takes seconds to import; the estimate path never needs it
    import anthropic

CountMode = Literal["auto", "api", "estimate"]

CACHE_DIR_NAME = "token_counts"


def token_cache_dir(root: Path | None = None) -> Path:
    """Where exact counts are cached (under the data directory)."""
    return (root or data_dir()) / CACHE_DIR_NAME


class CountTokensCounter:
    """A :class:`~fantasy_kg.domain.text.tokens.TokenCounter` backed by ``count_tokens``.

    Args:
        client: An SDK client (its key and base URL come from the caller or the environment).
        cache_dir: Folder of cached counts; :func:`token_cache_dir` by default.

    Attributes:
        calls: Number of API calls made (cache misses), for summaries and tests.
    """

    def __init__(self, client: "anthropic.Anthropic", cache_dir: Path | None = None) -> None:
        self._client = client
        self._cache_dir = cache_dir or token_cache_dir()
        self.calls = 0

    @property
    def exact(self) -> bool:
        """Always True: counts come from the model's own tokenizer."""
        return True

    def method(self, model: ModelInfo) -> str:
        """``count_tokens``, as recorded in meta files."""
        return COUNT_TOKENS_METHOD

    def _cache_path(self, model: ModelInfo, digest: str) -> Path:
        return confined(self._cache_dir, slugify(model.id), f"{digest}.json")

    def count(self, model: ModelInfo, text: str) -> int:
        """Tokens of ``text`` as one user message for ``model``; from the cache when known.

        Raises:
            ConfigError: the API refused or could not be reached; one line that never contains
                the key, with the way out (``--token-count estimate``).
        """
        if not text:
            return 0
        digest = text_sha256(text)
        path = self._cache_path(model, digest)
        cached = _read_cached(path)
        if cached is not None:
            return cached
        import anthropic

        try:
            response = self._client.messages.count_tokens(
                model=model.id, messages=[{"role": "user", "content": text}]
            )
        except anthropic.APIStatusError as exc:
            raise ConfigError(
                f"count_tokens failed for {model.id}: HTTP {exc.status_code} "
                f"{_one_line(exc.message)}; use --token-count estimate to work offline"
            ) from exc
        except anthropic.APIConnectionError as exc:
            raise ConfigError(
                f"count_tokens could not reach the API for {model.id} ({type(exc).__name__}); "
                "check the network or use --token-count estimate"
            ) from exc
        self.calls += 1
        tokens = int(response.input_tokens)
        record = {"model": model.id, "sha256": digest, "input_tokens": tokens}
        atomic_write_text(path, json.dumps(record) + "\n")
        return tokens


def _read_cached(path: Path) -> int | None:
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        value = data["input_tokens"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) and value >= 0 else None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:200]


def make_counter(
    mode: CountMode = "auto",
    *,
    client: "anthropic.Anthropic | None" = None,
    cache_dir: Path | None = None,
) -> TokenCounter:
    """Pick the token counter: exact when a key (or a client) is available, else the estimate.

    Args:
        mode: ``auto`` (exact if ``ANTHROPIC_API_KEY`` is set or ``client`` is given),
            ``api`` (exact, error without a key) or ``estimate`` (never call the API).
        client: A ready SDK client (tests point one at a loopback server).
        cache_dir: Cache folder for exact counts.

    Raises:
        ConfigError: ``mode="api"`` with neither a client nor ``ANTHROPIC_API_KEY``.
    """
    if mode == "estimate":
        return EstimateCounter()
    if client is None:
        if not os.environ.get("ANTHROPIC_API_KEY"):
            if mode == "api":
                raise ConfigError(
                    "--token-count api needs ANTHROPIC_API_KEY; set it or use --token-count "
                    "estimate"
                )
            return EstimateCounter()
        import anthropic

        client = anthropic.Anthropic()
    return CountTokensCounter(client, cache_dir)
