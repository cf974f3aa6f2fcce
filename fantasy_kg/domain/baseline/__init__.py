"""The local backend's deterministic rule-based extractor (a baseline, not Claude).

``respond(params)`` answers an Anthropic Messages request body; ``extract(text, ontology)``
is the extractor itself. :mod:`.quality` scores its output against gold annotations.
"""

from fantasy_kg.domain.baseline.extractor import extract
from fantasy_kg.domain.baseline.respond import BASELINE_NOTICE, respond

__all__ = ["BASELINE_NOTICE", "extract", "respond"]
