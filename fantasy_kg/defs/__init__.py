"""Dagster definitions: partitions, resources, assets, sensors and checks (wiring only)."""
