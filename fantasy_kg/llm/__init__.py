"""The guide's LLM services: batch and real-time extraction through the Anthropic SDK."""
