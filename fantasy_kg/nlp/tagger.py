"""Load the shipped LitBank tagger and tag text with it (offline, no download, ~1 s load).

The model directory ``fantasy_kg/nlp/litbank_ner`` is a spaCy pipeline (blank English tokenizer +
a CNN ``tok2vec`` + transition-based ``ner``) written by :mod:`fantasy_kg.nlp.train`. It is loaded
once per process and shared; spaCy pipelines are not thread-safe for concurrent ``__call__``, so
calls are serialized with a lock.
"""

import logging
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from fantasy_kg.domain.baseline.litbank import is_named
from fantasy_kg.domain.baseline.tagging import TaggedSpan, postprocess

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Span

MODEL_DIR = Path(__file__).with_name("litbank_ner")
# spaCy's own limit guards memory for parsers; our sections are bounded by the token budget,
# and the NER is linear in length, so a generous ceiling is safe.
MAX_CHARS = 5_000_000
TAGGER_ENV = "FANTASY_KG_TAGGER"
_DETERMINERS = frozenset({"the", "a", "an"})
_LOCK = threading.Lock()
logger = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def load_model(path: Path = MODEL_DIR) -> "Language":
    """The spaCy pipeline at ``path`` (cached: one load per process).

    Raises:
        FileNotFoundError: When ``path`` holds no trained model (say how to make one).
    """
    if not (path / "config.cfg").is_file():
        raise FileNotFoundError(
            f"no entity model at {path}: train one with `python -m fantasy_kg.nlp.train`"
        )
    import spacy  # deferred: importing spaCy costs ~0.5 s, only pay it when tagging

    nlp = spacy.load(path)
    nlp.max_length = MAX_CHARS
    return nlp


class SpacyTagger:
    """The :class:`~fantasy_kg.domain.baseline.tagging.Tagger` backed by the shipped model."""

    def __init__(self, path: Path = MODEL_DIR) -> None:
        """Load (or reuse) the model at ``path``."""
        self._nlp = load_model(path)

    def tag(self, text: str) -> list[TaggedSpan]:
        """Named entity spans of ``text``: character offsets and LitBank labels.

        The model's spans are made consistent over the whole text by
        :func:`~fantasy_kg.domain.baseline.tagging.propagate`.
        """
        with _LOCK:
            doc = self._nlp(text)
        out = []
        for ent in doc.ents:
            span = named_span(ent)
            if span is not None:
                out.append(TaggedSpan(span.start_char, span.end_char, ent.label_))
        return postprocess(text, out)


def named_span(ent: "Span") -> "Span | None":
    """The name in a predicted entity span, or ``None`` for a common-noun phrase.

    The model is trained on names and on common-noun entities ("the village"), which teach it
    types from context; only names go on. A leading determiner is dropped when a name follows
    ("the Scarecrow" → "Scarecrow"), as LitBank writes such names without it, and so is
    punctuation at either end.
    """
    start, end = ent.start, ent.end
    while start < end and ent.doc[start].lower_ in _DETERMINERS:
        start += 1
    # A name neither starts nor ends with punctuation ("New York ," from a comma the model took in).
    while start < end and not any(c.isalnum() for c in ent.doc[start].text):
        start += 1
    while end > start and not any(c.isalnum() for c in ent.doc[end - 1].text):
        end -= 1
    words = [t.text for t in ent.doc[start:end]]
    if not words or not is_named(words):
        return None
    return ent.doc[start:end]


def shared_tagger() -> SpacyTagger | None:
    """The shipped tagger (loaded once per process), or ``None`` for the rules alone.

    ``FANTASY_KG_TAGGER=off`` switches it off (to compare with the rules, or to save the ~1 s
    load in a process that only serves stray prompts); it is read at every call. A missing model
    is not an error either: the extractor then runs the rules alone, as before the tagger
    existed, and says so in logs.
    """
    if os.environ.get(TAGGER_ENV, "").strip().lower() in ("off", "0", "false", "no"):
        return None
    return _loaded_tagger()


@lru_cache(maxsize=1)
def _loaded_tagger() -> SpacyTagger | None:
    try:
        return SpacyTagger()
    except (FileNotFoundError, ImportError) as exc:
        logger.warning("entity tagger unavailable, the baseline runs on rules alone: %s", exc)
        return None
