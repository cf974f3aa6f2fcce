"""The list of commands attached to the ``fantasy-kg`` group, one module per area."""

import click


def all_commands() -> list[click.Command]:
    """Import each command module and return its commands, in help order."""
    from fantasy_kg.cli import (
        extract_cmd,
        local_api_cmd,
        run_cmd,
        sections_cmd,
        view_cmd,
        warehouse_cmd,
    )

    return [
        *run_cmd.COMMANDS,
        *sections_cmd.COMMANDS,
        *extract_cmd.COMMANDS,
        *warehouse_cmd.COMMANDS,
        *view_cmd.COMMANDS,
        *local_api_cmd.COMMANDS,
    ]
