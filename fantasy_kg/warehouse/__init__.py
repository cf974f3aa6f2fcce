"""DuckDB warehouse: migrations, per-series idempotent loads and read queries."""
