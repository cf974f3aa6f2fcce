"""Turn token counts into dollars with the catalog's prices (batch discount, cache tiers, bands).

One function prices real usage (what the API reported for a request); the estimate functions price
planned work. Both use the same formula so "estimate vs actual" compares like with like.
"""

from pydantic import BaseModel, Field

from fantasy_kg.domain.catalog import ModelInfo

_MTOK = 1_000_000


class TokenUsage(BaseModel):
    """Token counts of one request or a sum of requests, as the API's ``usage`` reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_5m_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    thinking_tokens: int = 0
    """The share of ``output_tokens`` spent thinking (``output_tokens_details``); priced as
    output already, kept apart so cost tables can show what thinking cost."""

    @property
    def prompt_tokens(self) -> int:
        """All input tokens: uncached + cache writes + cache reads."""
        return (
            self.input_tokens
            + self.cache_creation_5m_input_tokens
            + self.cache_creation_1h_input_tokens
            + self.cache_read_input_tokens
        )

    @property
    def total_tokens(self) -> int:
        """Prompt plus output tokens (the guide's ``usage.total_tokens``)."""
        return self.prompt_tokens + self.output_tokens

    def __add__(self, other: "TokenUsage") -> "TokenUsage":
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_5m_input_tokens=self.cache_creation_5m_input_tokens
            + other.cache_creation_5m_input_tokens,
            cache_creation_1h_input_tokens=self.cache_creation_1h_input_tokens
            + other.cache_creation_1h_input_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            thinking_tokens=self.thinking_tokens + other.thinking_tokens,
        )


class Cost(BaseModel):
    """Dollars for some usage, at batch and real-time rates side by side."""

    batch_usd: float = Field(description="Price through the Message Batches API.")
    realtime_usd: float = Field(description="Price of the same tokens through /v1/messages.")

    @property
    def savings_usd(self) -> float:
        """What the batch discount saves."""
        return self.realtime_usd - self.batch_usd


def price_usage(model: ModelInfo, usage: TokenUsage) -> Cost:
    """Price one request's usage (or a sum of requests of similar size) at both rates.

    The price band is chosen by the request's whole prompt, as the API does for Haiku 5.5.
    Batch prices are the real-time prices times ``batch_discount``, cache multipliers included.
    """
    p = model.prices_for_prompt(usage.prompt_tokens)
    realtime = (
        usage.input_tokens * p.input
        + usage.cache_creation_5m_input_tokens * p.cache_write_5m
        + usage.cache_creation_1h_input_tokens * p.cache_write_1h
        + usage.cache_read_input_tokens * p.cache_read
        + usage.output_tokens * p.output
    ) / _MTOK
    return Cost(batch_usd=realtime * model.batch_discount, realtime_usd=realtime)
