"""Entry point of ``fantasy-kg`` and ``python -m fantasy_kg``.

Commands live in one module per area and are attached here. The group turns every
:class:`~fantasy_kg.domain.errors.UserError` into one line on stderr and exit code 2, so users see
what to fix rather than a traceback; stdout is reserved for each command's result (JSON or a
table) so it can be piped.
"""

import logging
import sys
from typing import Any

import click

from fantasy_kg import __version__
from fantasy_kg.domain.errors import UserError


class _FriendlyGroup(click.Group):
    """A click group that reports user errors in one line and exits with code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; state on disk is consistent, re-run to resume", err=True)
            ctx.exit(130)


@click.group(cls=_FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fantasy-kg")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
def cli(verbose: bool) -> None:
    """Turn fantasy book series into knowledge graphs with Claude (batch or real time) and DuckDB.

    Backend: 'anthropic' when ANTHROPIC_API_KEY is set, otherwise the embedded 'local' backend
    (a deterministic baseline extractor behind an Anthropic-compatible API on 127.0.0.1).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The SDK's HTTP client logs every request at INFO; keep stderr for our own progress.
    for noisy in ("httpx", "httpx2", "anthropic", "httpcore", "httpcore2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _register() -> None:
    from fantasy_kg.cli import commands

    for command in commands.all_commands():
        cli.add_command(command)


_register()


def main() -> None:
    """Run the CLI (console script entry point)."""
    cli(prog_name="fantasy-kg")
