"""The ``fantasy-kg`` command line: thin commands over the same functions Dagster uses."""
