"""Token counts without a tokenizer: the offline estimate and the counter protocol.

Why it works this way: docs/architecture.md, "Text, sections and answer sizing".
"""

import math
import re
from typing import Protocol

from fantasy_kg.domain.catalog import ModelInfo

TOKENS_PER_WORD = 1.4465
"""Claude 4.5 tokens per word on the guide's Harry Potter figure (1,562,150 / ~1.08 M words)."""

PIECES_PER_WORD = 1.259
"""Pieces per whitespace-separated word measured on the shared public-domain corpus."""

TOKENS_PER_PIECE = TOKENS_PER_WORD / PIECES_PER_WORD

ESTIMATE_MARGIN = 0.10
"""Safety margin added to estimated counts for budget decisions only."""

EXACT_MARGIN = 0.01
"""Margin for exact counts: the API says a count "may differ by a small amount" from billing."""

ESTIMATE_VERSION = "estimate-v1"
COUNT_TOKENS_METHOD = "count_tokens"

_LONG_RUN_CHARS = 16


def _piece_table() -> bytes:
    """Byte map: ASCII letters and digits -> ``a``, ASCII whitespace -> space, the rest -> ``.``."""
    table = bytearray(b"." * 256)
    for byte in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789":
        table[byte] = ord("a")
    for byte in b" \t\n\r\x0b\x0c":
        table[byte] = ord(" ")
    return bytes(table)


_PIECE_TABLE = _piece_table()
_LONG_RUN = b"a" * (_LONG_RUN_CHARS + 1)
_LONG_RUN_RE = re.compile(rb"a{%d,}" % (_LONG_RUN_CHARS + 1))


def count_pieces(text: str) -> int:
    """Number of estimate pieces in ``text`` (see the module docstring for the rule).

    Implemented with byte translation and ``bytes.count`` rather than a regex: it runs on every
    paragraph of every book, and this is several times faster. Every non-ASCII code point becomes
    one ``?`` byte, i.e. one piece, as the rule says.
    """
    mapped = text.encode("ascii", "replace").translate(_PIECE_TABLE)
    runs = mapped.count(b" a") + mapped.count(b".a") + (1 if mapped[:1] == b"a" else 0)
    pieces = runs + mapped.count(b".")
    if _LONG_RUN in mapped:
        pieces += sum((len(run) - 1) // _LONG_RUN_CHARS for run in _LONG_RUN_RE.findall(mapped))
    return pieces


def estimate_tokens(text: str, tokenizer_factor: float = 1.0) -> int:
    """Estimated tokens of ``text`` for a model with the given tokenizer factor (no margin)."""
    if not text:
        return 0
    return math.ceil(count_pieces(text) * TOKENS_PER_PIECE * tokenizer_factor)


def estimate_method(tokenizer_factor: float = 1.0) -> str:
    """The ``token_count_method`` string recorded in meta files for the estimate."""
    factor = "" if tokenizer_factor == 1.0 else f" x{tokenizer_factor:g} tokenizer"
    margin = round(ESTIMATE_MARGIN * 100)
    return f"{ESTIMATE_VERSION} ({TOKENS_PER_WORD} tok/word{factor}, +{margin}% margin for budgets)"


def with_margin(tokens: int, exact: bool) -> int:
    """``tokens`` plus the safety margin that applies to this kind of count, rounded up."""
    margin = EXACT_MARGIN if exact else ESTIMATE_MARGIN
    return math.ceil(tokens * (1.0 + margin))


class TokenCounter(Protocol):
    """Something that counts the tokens of a text for a model: exact (API) or estimated.

    Sectioning only needs this protocol, so the domain stays free of the SDK; the integration
    layer provides the exact implementation (``fantasy_kg.pipeline.token_counter``).
    """

    @property
    def exact(self) -> bool:
        """True when counts come from the API's tokenizer rather than the estimate."""
        ...

    def method(self, model: ModelInfo) -> str:
        """The ``token_count_method`` recorded in meta files for counts of this model."""
        ...

    def count(self, model: ModelInfo, text: str) -> int:
        """Tokens of ``text`` for ``model``."""
        ...


class EstimateCounter:
    """The offline estimate as a :class:`TokenCounter` (what runs when no API key is set)."""

    @property
    def exact(self) -> bool:
        """Always False: these are estimates."""
        return False

    def method(self, model: ModelInfo) -> str:
        """``estimate-v1 (...)`` with the ratio, tokenizer factor and margin spelled out."""
        return estimate_method(model.tokenizer_factor)

    def count(self, model: ModelInfo, text: str) -> int:
        """Estimated tokens of ``text`` for ``model``."""
        return estimate_tokens(text, model.tokenizer_factor)
