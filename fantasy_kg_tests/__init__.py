"""Tests of fantasy_kg: real SDK against loopback servers, real DuckDB files, real Dagster runs."""
