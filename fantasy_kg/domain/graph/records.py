"""Entity instances and merge decisions: what entity resolution reads and explains."""

from dataclasses import dataclass


@dataclass(slots=True)
class EntityRecord:
    """One entity instance as extracted from one section, in story order.

    A compact copy of the parsed :class:`~fantasy_kg.domain.schemas.EntityInstance` (the pydantic
    object is dropped after ingestion to keep large series in bounded memory).
    """

    index: int
    section_pos: int
    section_id: str
    custom_id: str
    id: str
    type: str
    name: str
    aliases: tuple[str, ...] = ()
    surfaces: tuple[str, ...] = ()
    confidence: float = 1.0
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """``raw_id@section`` for merge explanations."""
        return f"{self.id}@{self.section_id}"


@dataclass(slots=True)
class MergeDecision:
    """A union (or a refused one) between the clusters of two instances."""

    decision: str  # merged | kept_apart
    rule: str
    key: str
    left: int
    right: int
    detail: str = ""
