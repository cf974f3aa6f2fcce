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
