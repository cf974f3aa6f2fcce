"""Output helpers shared by commands: one JSON document on stdout, progress on stderr."""

import json
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from fantasy_kg.llm.jobs import JobRecord


def emit(doc: dict[str, Any]) -> None:
    """Print ``doc`` as the command's single JSON result on stdout."""
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))


class PollProgress:
    """A rich progress bar on stderr, fed by ``on_status`` after every poll."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[state]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> "PollProgress":
        # Started at the first poll: a run that fails or has nothing to poll leaves no empty
        # bar line behind (before an ``error:`` line, say).
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tasks:
            self.progress.stop()

    def update(self, job: "JobRecord") -> None:
        """Show the batch's progress: requests no longer processing out of all requests."""
        c = job.request_counts
        done = c.total - c.processing
        state = (
            f"{job.processing_status}: {c.succeeded} ok, {c.errored} errored, "
            f"{c.expired} expired, {c.canceled} canceled"
        )
        if not self.tasks:
            self.progress.start()
        if job.id not in self.tasks:
            self.tasks[job.id] = self.progress.add_task(
                f"batch {job.id[-12:]}", total=max(1, c.total), state=state
            )
        self.progress.update(self.tasks[job.id], completed=done, state=state)
