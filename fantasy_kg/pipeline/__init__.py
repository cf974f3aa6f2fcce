"""Pipeline steps shared by the CLI and Dagster: each one a function over paths and clients."""
