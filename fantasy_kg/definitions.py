"""The Dagster code location (placeholder until the Dagster plugin lands)."""

import dagster as dg

defs = dg.Definitions()
