"""Commands ``sections`` and ``estimate`` (placeholder until the ingestion module lands)."""

import click

COMMANDS: list[click.Command] = []
