"""Command ``view``: one self-contained HTML graph page per series.

Thin: :func:`fantasy_kg.pipeline.view.write_view` does the work (the Dagster ``graph_view``
asset calls the same function; its module says how the page is built). The page path and
counts go to stdout as JSON; notes go to stderr.
"""

import json
import webbrowser
from pathlib import Path

import click
from rich.console import Console

from fantasy_kg.cli.options import db_option, file_option
from fantasy_kg.domain import paths
from fantasy_kg.pipeline.view import LOCAL_NOTE, write_view


@click.command("view")
@click.option("--series", required=True, help="Series slug (as in the warehouse).")
@file_option("--output", help="HTML file to write. Default: <data>/views/<series>.html.")
@click.option(
    "--as-of-book",
    type=click.IntRange(min=1),
    default=None,
    help="Spoiler-free file: keep only facts first stated by the end of book N.",
)
@click.option("--open", "open_page", is_flag=True, help="Open the page in the default browser.")
@db_option
def view_command(
    series: str,
    output: Path | None,
    as_of_book: int | None,
    open_page: bool,
    db_path: Path | None,
) -> None:
    """Write one self-contained HTML page of a series' graph from the warehouse.

    Nodes are entities (size by mentions, colour by type), edges are relationships (colour by
    type, arrows for directed types, width by evidence quotes). The page has search by name or
    alias, type filters, an "as of book N / chapter" slider that hides every later fact, and
    details with every evidence quote. It needs no network and works from file://.

    Example: fantasy-kg view --series ashen_crown --as-of-book 1 --open
    """
    summary, _ = write_view(
        db_path or paths.warehouse_path(), series, output, as_of_book=as_of_book
    )
    err = Console(stderr=True, soft_wrap=True)
    made_by = ", ".join(LOCAL_NOTE if b == "local" else b for b in summary.backends)
    err.print(
        f"{series}: {summary.nodes} entities, {summary.edges} relationships, "
        f"{summary.evidence} quotes (made by {made_by or 'unknown'}) -> {summary.path}",
        markup=False,
        highlight=False,
    )
    if summary.skipped_edges:
        err.print(
            f"{summary.skipped_edges} orphan relationships (an endpoint is not an entity) "
            "are not drawn",
            markup=False,
            highlight=False,
        )
    if open_page:
        webbrowser.open(Path(summary.path).resolve().as_uri())
    click.echo(json.dumps(summary.as_dict(), indent=2))


COMMANDS: list[click.Command] = [view_command]
