"""Pure domain layer: schemas, ingestion, prompts, pricing, grounding, resolution.

Nothing here imports dagster, duckdb, click, rich or the anthropic SDK; an import-linter contract
in pyproject.toml enforces it so the same functions serve the CLI, Dagster and tests.
"""
