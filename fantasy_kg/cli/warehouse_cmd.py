"""Commands ``load``, ``sql`` and ``ontology proposals|accept``: the warehouse side of the CLI.

All three are thin: ``load`` calls :func:`fantasy_kg.pipeline.graph.load_series_from_files` (the
same function the Dagster ``knowledge_graph`` asset calls), ``sql`` calls
:func:`fantasy_kg.pipeline.graph.run_sql`, and ``ontology accept`` applies
:func:`fantasy_kg.domain.graph.accept_proposals` to the proposals stored in the warehouse.
Progress and notes go to stderr; stdout carries only the result (JSON, a table or CSV).
"""

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from fantasy_kg.cli.options import (
    db_option,
    dir_option,
    file_option,
    format_option,
    mixed_backends_option,
)
from fantasy_kg.domain import paths
from fantasy_kg.domain.errors import ConfigError, InputFileError
from fantasy_kg.domain.graph.models import ProposalRow, column_names
from fantasy_kg.domain.graph.proposals import accept_proposals
from fantasy_kg.domain.schemas import default_ontology, load_ontology
from fantasy_kg.pipeline.graph import (
    NoResultsError,
    list_series,
    load_series_from_files,
    run_sql,
)

_PHASES = {"read": "reading results", "load": "loading tables"}


def _dump(value: Any) -> Any:
    """JSON-safe cell values (dates, decimals, UUIDs as text)."""
    if isinstance(value, list | tuple):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _dump(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(_dump(value), ensure_ascii=False)
    return str(value)


def _print_rows(columns: Sequence[str], rows: Sequence[tuple[Any, ...]], fmt: str) -> None:
    if fmt == "json":
        data = [{c: _dump(v) for c, v in zip(columns, row, strict=True)} for row in rows]
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(v) for v in row])
    else:
        out = Console(file=sys.stdout, soft_wrap=True)
        if not out.is_terminal:
            out = Console(file=sys.stdout, width=10_000, soft_wrap=True)
        table = Table(show_lines=False)
        for c in columns:
            table.add_column(c, overflow="fold")
        for row in rows:
            table.add_row(*(_cell(v) for v in row))
        out.print(table, markup=False, highlight=False)
        Console(stderr=True).print(f"({len(rows)} rows)", markup=False, highlight=False)


class _SeriesProgress:
    """One progress bar per phase of one series' load."""

    def __init__(self, bar: Progress, slug: str) -> None:
        self.bar = bar
        self.slug = slug
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            label = f"{self.slug}: {_PHASES.get(phase, phase)}"
            self.tasks[phase] = self.bar.add_task(label, total=total)
        self.bar.update(self.tasks[phase], completed=done, total=total)

    def close(self) -> None:
        for task in self.tasks.values():
            self.bar.remove_task(task)


@click.command("load")
@dir_option(
    "--input-dir", help="Folder of <series>_section_NN.txt + .meta.json. Default: <data>/sections."
)
@dir_option(
    "--extracted-dir",
    help="Folder of <custom_id>_extracted.json result files. Default: <data>/extracted.",
)
@click.option("--series", default=None, help="Only this series (default: every series found).")
@db_option
@dir_option(
    "--jobs-dir",
    help="Batch job files (batch ids, prompt versions, costs). Default: <data>/batch_jobs.",
)
@file_option(
    "--ontology",
    "ontology_path",
    help="Ontology file (one series only). Default: <data>/schemas/<series>_schema.json.",
)
@mixed_backends_option
@click.option(
    "--lock-wait",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help=(
        "Wait this long for another process's lock on the DuckDB file (a line on stderr every "
        "few seconds), then fail. Default: $FANTASY_KG_LOCK_WAIT_SECONDS or 120."
    ),
)
def load_command(
    input_dir: Path | None,
    extracted_dir: Path | None,
    series: str | None,
    db_path: Path | None,
    jobs_dir: Path | None,
    ontology_path: Path | None,
    allow_mixed_backends: bool,
    lock_wait: float | None,
) -> None:
    """Build the knowledge graph of each series and load it into DuckDB, replacing its rows.

    Without --series every series with section files is loaded (series without result files
    yet are skipped with a note on stderr).

    Every mention and evidence quote is re-found in the section text (exact, normalized, fuzzy);
    entities are resolved across the whole series; the series' rows are replaced in one
    transaction, so loading twice never duplicates and an interrupted load changes nothing.
    Prints one JSON summary per series (grounding rate, orphans, proposals, row counts).

    Example: fantasy-kg load --input-dir data/sections --extracted-dir data/extracted
    """
    err = Console(stderr=True, soft_wrap=True)
    sections = input_dir or paths.sections_dir()
    results = extracted_dir or paths.extracted_dir()
    db = db_path or paths.warehouse_path()
    wanted = [series] if series else list_series(sections)
    if not wanted:
        raise InputFileError(f"no section files in {sections} (run `fantasy-kg sections`)")
    if ontology_path is not None and len(wanted) > 1:
        raise ConfigError("--ontology applies to one series: add --series SLUG")
    summaries = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        for slug in wanted:
            progress = _SeriesProgress(bar, slug)
            try:
                summary = load_series_from_files(
                    sections,
                    results,
                    slug,
                    db,
                    jobs_dir=jobs_dir,
                    ontology_path=ontology_path,
                    progress=progress,
                    allow_mixed_backends=allow_mixed_backends,
                    lock_wait=lock_wait,
                )
            except NoResultsError as exc:
                if series:  # asked for this series by name: that is an error
                    raise
                err.print(f"skipped {slug}: {exc.message}", markup=False, highlight=False)
                continue
            finally:
                progress.close()
            summaries.append(summary.as_dict())
            err.print(
                f"{slug}: {summary.entities} entities, {summary.relationships} relationships, "
                f"grounding {summary.grounding_rate:.1%}, {summary.orphan_relationships} orphan "
                f"and {summary.ungrounded_relationships} ungrounded relationships, "
                f"{summary.pending_proposals} pending proposals -> {db}",
                markup=False,
                highlight=False,
            )
    click.echo(json.dumps({"loads": summaries}, indent=2))


@click.command("sql")
@click.argument("query")
@db_option
@format_option
@click.option(
    "--param",
    "params",
    multiple=True,
    help="Value for a ? placeholder (repeat in order); values are bound, never spliced.",
)
def sql_command(query: str, db_path: Path | None, fmt: str, params: tuple[str, ...]) -> None:
    """Run a SQL query against the warehouse (read-only unless the statement writes).

    Tables: sections, batch_jobs, costs, entities, entity_aliases, entity_attributes,
    entity_merges, mentions, relationships, evidence, schema_proposals, extraction_failures,
    load_runs. Views: character_network, entity_summary, relationship_evidence.

    Example: fantasy-kg sql "SELECT name, aliases FROM entity_summary WHERE name = ?"
    --param "Mira Thorne"
    """
    columns, rows = run_sql(db_path or paths.warehouse_path(), query, list(params))
    _print_rows(columns, rows, fmt)


@click.group("ontology")
def ontology_group() -> None:
    """Review schema proposals and accept some into a new ontology version."""


@ontology_group.command("proposals")
@click.option("--series", required=True, help="Series slug.")
@db_option
@click.option("--all", "show_all", is_flag=True, help="Include proposals already in the ontology.")
@format_option
def proposals_command(series: str, db_path: Path | None, show_all: bool, fmt: str) -> None:
    """List a series' aggregated schema proposals, most frequent first.

    Example: fantasy-kg ontology proposals --series ashen_crown
    """
    status = "" if show_all else " AND status = 'pending'"
    columns, rows = run_sql(
        db_path or paths.warehouse_path(),
        "SELECT proposal_type, name, origin, status, instance_count, section_count, "
        "source_types, target_types, description, examples[1] AS example "
        f"FROM schema_proposals WHERE series = ?{status} "
        "ORDER BY instance_count DESC, proposal_type, name",
        [series],
    )
    _print_rows(columns, rows, fmt)


@ontology_group.command("accept")
@click.option("--series", required=True, help="Series slug.")
@click.option("--name", "names", multiple=True, required=True, help="Proposal name (repeatable).")
@file_option(
    "--ontology",
    "ontology_path",
    help="Ontology file to update. Default: <data>/schemas/<series>_schema.json.",
)
@file_option(
    "--db", "db_path", help="DuckDB file holding the proposals. Default: <data>/fantasy_kg.duckdb."
)
def accept_command(
    series: str, names: tuple[str, ...], ontology_path: Path | None, db_path: Path | None
) -> None:
    """Accept proposals into a new version of the series' ontology file.

    The version is bumped (1.0.0 -> 1.1.0), the previous file is kept as
    <series>_schema.v<old>.json, and the new one is written atomically. Sections extracted
    with the old ontology are re-extracted on the next run (the ontology is part of the
    prompt version).

    Example: fantasy-kg ontology accept --series ashen_crown --name MENTOR_OF
    """
    path = ontology_path or paths.confined(paths.ontology_dir(), f"{series}_schema.json")
    existed = path.is_file()
    ontology = load_ontology(path) if existed else default_ontology(series)
    names_of = column_names(ProposalRow)
    columns, rows = run_sql(
        db_path or paths.warehouse_path(),
        f"SELECT {', '.join(names_of)} FROM schema_proposals WHERE series = ?",
        [series],
    )
    proposals = [ProposalRow(**dict(zip(columns, row, strict=True))) for row in rows]
    new = accept_proposals(ontology, list(names), proposals)
    backup: Path | None = None
    if existed:
        backup = paths.confined(path.parent, f"{series}_schema.v{ontology.version}.json")
        paths.atomic_write_text(backup, path.read_text(encoding="utf-8"))
    paths.atomic_write_text(path, new.model_dump_json(indent=2) + "\n")
    Console(stderr=True).print(
        f"{series}: ontology {ontology.version} -> {new.version} ({', '.join(names)}) in {path}",
        markup=False,
        highlight=False,
    )
    click.echo(
        json.dumps(
            {
                "series": series,
                "accepted": list(names),
                "previous_version": ontology.version,
                "version": new.version,
                "path": str(path),
                "backup": str(backup) if backup else None,
            },
            indent=2,
        )
    )


COMMANDS: list[click.Command] = [load_command, sql_command, ontology_group]
