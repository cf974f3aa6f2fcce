"""The model catalog: context windows, output caps, prices and quirks, from one data file.

Prices and limits change with every model release, so they live in ``fantasy_kg/data/models.json``
rather than in code. Everything that needs a window, a cap, a price or a capability (sectioning,
pre-flight checks, cost estimates, the local backend's ``/v1/models``) asks this module.
"""

import json
from functools import cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fantasy_kg.domain.errors import ConfigError


class Prices(BaseModel):
    """Standard (real-time) USD per million tokens; batch applies ``batch_discount`` on top."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float
    output: float
    cache_write_5m: float
    cache_write_1h: float
    cache_read: float


class PriceBand(BaseModel):
    """Higher prices for every token of a request whose prompt exceeds a threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    above_prompt_tokens: int
    price_per_mtok: Prices


class ModelInfo(BaseModel):
    """One model of the catalog."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    aliases: list[str] = Field(default_factory=list)
    display_name: str
    status: str = Field(description="current | legacy | deprecated")
    retires: str | None = None
    context_window: int
    max_output_tokens: int
    max_output_tokens_batch_extended: int | None = None
    price_per_mtok: Prices
    batch_discount: float = 0.5
    price_bands: list[PriceBand] = Field(default_factory=list)
    accepts_sampling_params: bool
    accepts_forced_tool_choice: bool
    min_cacheable_prefix_tokens: int
    thinking_default: str = Field(description="off | adaptive | always")
    default_effort: str | None = None
    tokenizer_factor: float = Field(
        description="Tokens of this model per token of the Claude 4.5 tokenizer (estimates only)."
    )

    @property
    def names(self) -> list[str]:
        """The id and every alias."""
        return [self.id, *self.aliases]

    def prices_for_prompt(self, prompt_tokens: int) -> Prices:
        """Prices that apply to a request whose total prompt is ``prompt_tokens`` long."""
        applicable = [b for b in self.price_bands if prompt_tokens > b.above_prompt_tokens]
        if not applicable:
            return self.price_per_mtok
        return max(applicable, key=lambda b: b.above_prompt_tokens).price_per_mtok


class Catalog(BaseModel):
    """The whole catalog file."""

    model_config = ConfigDict(extra="allow", frozen=True)

    default_model: str
    models: list[ModelInfo]


@cache
def catalog() -> Catalog:
    """Load the packaged catalog once per process."""
    raw: Any = json.loads(
        resources.files("fantasy_kg").joinpath("data/models.json").read_text(encoding="utf-8")
    )
    return Catalog.model_validate(raw)


def known_model_names() -> list[str]:
    """Every id and alias the catalog knows, for help texts and error messages."""
    return [name for m in catalog().models for name in m.names]


def get_model(name: str) -> ModelInfo:
    """Find a model by id or alias.

    Raises:
        ConfigError: one line that names the unknown model and lists the known ones.
    """
    wanted = name.strip()
    for info in catalog().models:
        if wanted in info.names:
            return info
    known = ", ".join(m.id for m in catalog().models)
    raise ConfigError(f"unknown model {name!r}; known models: {known}")


def default_model() -> str:
    """The default model: current and not about to retire."""
    return catalog().default_model
