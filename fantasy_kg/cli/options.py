"""Option declarations shared by commands, so every folder and file option behaves the same."""

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from fantasy_kg.domain.answer import (
    DEFAULT_EFFORT,
    DEFAULT_MAX_SECTION_TOKENS,
    DEFAULT_OUTPUT_RATIO,
    EFFORT_LEVELS,
)

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


def db_option(fn: F) -> F:
    """``--db``: the DuckDB file (``db_path``); the data directory's warehouse when omitted."""
    return file_option("--db", "db_path", help="DuckDB file. Default: <data>/fantasy_kg.duckdb.")(
        fn
    )


def extracted_output_option(fn: F) -> F:
    """``--output-dir`` of the extraction commands: where result files are written."""
    return dir_option(
        "--output-dir", help="Where <custom_id>_extracted.json files go. Default: <data>/extracted."
    )(fn)


# Same values as fantasy_kg.llm.backend.BACKEND_CHOICES; repeated so that `fantasy-kg --help` does
# not import the SDK (a test keeps the two equal).
BACKEND_CHOICES = ("auto", "anthropic", "local")


def model_option(fn: F) -> F:
    """``--model``: a model id or alias from the catalog."""
    return click.option(
        "--model", default=None, help="Model id or alias. Default: the catalog's default."
    )(fn)


def backend_option(fn: F) -> F:
    """``--backend``: Claude or the embedded local backend; ``auto`` follows the key."""
    return click.option(
        "--backend",
        type=click.Choice(BACKEND_CHOICES),
        default="auto",
        show_default=True,
        help="anthropic needs ANTHROPIC_API_KEY; auto = anthropic if a key is set, else local.",
    )(fn)


def max_cost_option(what: str) -> Callable[[F], F]:
    """``--max-cost``: the budget cap checked against the pre-flight estimate before any spend.

    Args:
        what: Which estimate and which action, e.g. "the pre-flight batch estimate" / "submit".
    """
    return click.option(
        "--max-cost",
        type=click.FloatRange(min=0.0),
        default=None,
        help=f"Refuse to {what} (USD) is above this (exit 2).",
    )


def format_option(fn: F) -> F:
    """``--format``: how rows are printed on stdout (a table for people, csv/json for tools)."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["table", "csv", "json"]),
        default="table",
        show_default=True,
        help="Output format on stdout.",
    )(fn)


def max_tokens_option(fn: F) -> F:
    """``--max-tokens``: the extraction requests' output budget (thinking included)."""
    return click.option(
        "--max-tokens",
        type=click.IntRange(min=1),
        default=None,
        help="max_tokens of each request, thinking included. Default: 32000 capped at the "
        "model's output limit.",
    )(fn)


def effort_option(fn: F) -> F:
    """``--effort``: ``output_config.effort`` on models that think."""
    return click.option(
        "--effort",
        type=click.Choice(list(EFFORT_LEVELS)),
        default=None,
        help=f"output_config.effort on models that think (thinking is billed as output). "
        f"Default: {DEFAULT_EFFORT}.",
    )(fn)


def sizing_options(fn: F) -> F:
    """The settings that size sections for the answer: max tokens, section cap, effort, ratio."""
    fn = max_tokens_option(fn)
    fn = click.option(
        "--max-section-tokens",
        type=click.IntRange(min=1),
        default=None,
        help=f"Cap on each section's text tokens. Default: {DEFAULT_MAX_SECTION_TOKENS:,}, "
        "lowered until the expected answer fits --max-tokens.",
    )(fn)
    fn = effort_option(fn)
    return click.option(
        "--output-ratio",
        type=click.FloatRange(min=0.0, min_open=True, max=2.0),
        default=DEFAULT_OUTPUT_RATIO,
        show_default=True,
        help="Expected answer tokens per section token (sizes sections, checks fit, prices).",
    )(fn)


def mixed_backends_option(fn: F) -> F:
    """``--allow-mixed-backends``: load results of two backends into one graph."""
    return click.option(
        "--allow-mixed-backends",
        is_flag=True,
        help="Load a series whose results come from different backends (e.g. local and Claude) "
        "into one graph; refused by default.",
    )(fn)


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
