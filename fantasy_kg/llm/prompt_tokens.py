"""Token estimates for requests when no count is available (pre-flight, budgets).

Uses the domain's calibrated estimator plus its safety margin; :class:`PromptTokens` counts each
part shared between requests (prefix, schema) once.
"""

import json
import math
from typing import Any

from fantasy_kg.domain.catalog import ModelInfo
from fantasy_kg.domain.text import tokens as token_estimates


def estimate_tokens(text: str, model: ModelInfo) -> int:
    """Conservative token estimate for ``text`` on ``model`` when no count is available.

    Uses the domain's calibrated estimate (``fantasy_kg.domain.text.tokens``) plus its safety
    margin for budget decisions; without it, chars/3 (the Claude 4.5 tokenizer averages about 3.5
    characters per token on English prose) times the model's tokenizer factor, which errs high.
    """
    module = domain_tokens()
    if module is not None:
        raw = int(module.estimate_tokens(text, model.tokenizer_factor))
        return int(module.with_margin(raw, False))
    return math.ceil(len(text) / 3 * model.tokenizer_factor)


def domain_tokens() -> Any:
    """The domain's calibrated token estimator (:mod:`fantasy_kg.domain.text.tokens`)."""
    return token_estimates


def request_text(params: dict[str, Any]) -> str:
    """All text of a request that counts as prompt: system, messages and output schema."""
    chunks: list[str] = []
    system = params.get("system")
    if isinstance(system, str):
        chunks.append(system)
    elif isinstance(system, list):
        chunks.extend(str(b.get("text", "")) for b in system if isinstance(b, dict))
    for msg in params.get("messages", []):
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            chunks.append(content)
        elif isinstance(content, list):
            chunks.extend(str(b.get("text", "")) for b in content if isinstance(b, dict))
    fmt = params.get("output_config", {}).get("format")
    if fmt:
        chunks.append(json.dumps(fmt))
    return "\n".join(chunks)


class PromptTokens:
    """Prompt and prefix token estimates for pre-flight, each shared part counted once.

    Every request of a series carries the same prefix string and the same output-schema object,
    so re-estimating them per request (as ``estimate_tokens(request_text(params))`` does) spends
    most of pre-flight on text already counted. The estimate counts "pieces" additively (a part
    joined with a newline adds exactly its own pieces), so summing memoized per-part counts gives
    the same number as estimating the joined text. Without the domain estimator it falls back to
    estimating the joined text.
    """

    def __init__(self) -> None:
        self._module = domain_tokens()
        self._exact_parts = self._module is not None and hasattr(self._module, "count_pieces")
        self._texts: dict[str, int] = {}
        self._formats: dict[tuple[Any, ...], int] = {}

    def _shared(self, text: str) -> int:
        hit = self._texts.get(text)
        if hit is None:
            hit = self._texts[text] = int(self._module.count_pieces(text))
        return hit

    def _format(self, fmt: dict[str, Any]) -> int:
        key = tuple((k, id(v) if isinstance(v, dict | list) else v) for k, v in fmt.items())
        hit = self._formats.get(key)
        if hit is None:
            hit = self._formats[key] = int(self._module.count_pieces(json.dumps(fmt)))
        return hit

    def _tokens(self, pieces: int, model: ModelInfo) -> int:
        module = self._module
        raw = math.ceil(pieces * module.TOKENS_PER_PIECE * model.tokenizer_factor) if pieces else 0
        return int(module.with_margin(raw, False))

    def prompt(self, params: dict[str, Any], model: ModelInfo) -> int:
        """``estimate_tokens(request_text(params), model)``, without re-counting shared parts."""
        if not self._exact_parts:
            return estimate_tokens(request_text(params), model)
        pieces = 0
        system = params.get("system")
        if isinstance(system, str):
            pieces += self._shared(system)
        elif isinstance(system, list):
            pieces += sum(
                self._shared(str(b.get("text", ""))) for b in system if isinstance(b, dict)
            )
        for msg in params.get("messages", []):
            content = msg.get("content") if isinstance(msg, dict) else None
            if isinstance(content, str):
                pieces += self._module.count_pieces(content)
            elif isinstance(content, list):
                for b in content:
                    if isinstance(b, dict):
                        pieces += self._module.count_pieces(str(b.get("text", "")))
        fmt = params.get("output_config", {}).get("format")
        if fmt:
            pieces += self._format(fmt) if isinstance(fmt, dict) else self._shared(json.dumps(fmt))
        return self._tokens(pieces, model)

    def format(self, params: dict[str, Any], model: ModelInfo) -> int:
        """Tokens of the structured-output format (the schema the API explains in its prompt)."""
        fmt = params.get("output_config", {}).get("format")
        if not fmt:
            return 0
        if not self._exact_parts:
            return estimate_tokens(json.dumps(fmt), model)
        pieces = self._format(fmt) if isinstance(fmt, dict) else self._shared(json.dumps(fmt))
        return self._tokens(pieces, model)

    def prefix(self, params: dict[str, Any], model: ModelInfo) -> int:
        """``estimate_tokens(prefix_text(params), model)``, memoized on the prefix text."""
        text = prefix_text(params)
        if not self._exact_parts:
            return estimate_tokens(text, model)
        return self._tokens(self._shared(text), model)


def prefix_text(params: dict[str, Any]) -> str:
    """The cached prefix of a request: the system blocks marked with ``cache_control``."""
    system = params.get("system")
    if isinstance(system, list):
        return "\n".join(
            str(b.get("text", ""))
            for b in system
            if isinstance(b, dict) and b.get("cache_control") is not None
        )
    return ""


def unmargined(tokens: int) -> int:
    """An estimated count without the estimate's safety margin (what billing will be near)."""
    module = domain_tokens()
    margin = float(module.ESTIMATE_MARGIN) if module is not None else 0.0
    return int(tokens / (1.0 + margin))
