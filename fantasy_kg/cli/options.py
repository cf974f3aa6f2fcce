"""Option declarations shared by commands, so every folder and file option behaves the same."""

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def dir_option(*decls: str, help: str) -> Callable[[F], F]:
    """A ``--...-dir`` option: a folder path (never a file), ``None`` when omitted."""
    return click.option(
        *decls, type=click.Path(path_type=Path, file_okay=False), default=None, help=help
    )


def file_option(*decls: str, help: str) -> Callable[[F], F]:
    """A file path option (never a folder), ``None`` when omitted."""
    return click.option(
        *decls, type=click.Path(path_type=Path, dir_okay=False), default=None, help=help
    )


def dedicated_workspace_option() -> Callable[[F], F]:
    """``--dedicated-workspace``: the opt-in to cancel batches not proven to be ours.

    Also read from ``FANTASY_KG_DEDICATED_WORKSPACE`` (``1``/``true``).
    """
    return click.option(
        "--dedicated-workspace",
        is_flag=True,
        envvar="FANTASY_KG_DEDICATED_WORKSPACE",
        help=(
            "The Anthropic workspace runs only this project from this data folder: a batch of "
            "a submission's size created just after a create that timed out is canceled as a "
            "duplicate although nothing proves it ours. Risk: in a shared workspace this can "
            "cancel a colleague's batch. Default: such batches are left alone and reported."
        ),
    )
