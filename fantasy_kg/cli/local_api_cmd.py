"""Command ``local-api``: run the embedded Anthropic-compatible server in the foreground.

Backend selection starts the same server in-process on demand; running it on its own is useful
to point other tools (``ANTHROPIC_BASE_URL``) or several CLI runs at one long-lived instance, and
to keep batches processing between CLI calls.
"""

import json
from pathlib import Path

import click

from fantasy_kg.local_api import LocalServer


@click.command("local-api")
@click.option("--port", type=int, default=0, show_default=True, help="Port on 127.0.0.1 (0: free).")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Batch state directory [default: <data dir>/local_api].",
)
@click.option(
    "--min-processing-seconds",
    type=float,
    default=0.0,
    show_default=True,
    help="Keep new batches in_progress at least this long (to watch the lifecycle).",
)
def local_api(port: int, state_dir: Path | None, min_processing_seconds: float) -> None:
    """Serve the local Anthropic-compatible API on 127.0.0.1 until Ctrl-C.

    Its "model" is the deterministic baseline extractor, not Claude. Prints the base URL as JSON
    on stdout; point the SDK or the CLI at it with ANTHROPIC_BASE_URL. Fault injection for
    testers: FANTASY_KG_LOCAL_API_FAULTS (inline JSON or a file path).
    """
    server = LocalServer(state_dir, port, min_processing_seconds=min_processing_seconds)
    click.echo(json.dumps({"base_url": server.base_url, "state_dir": str(server.state_dir)}))
    click.echo(
        f"local API (baseline extractor, not Claude) at {server.base_url}; "
        f"export ANTHROPIC_BASE_URL={server.base_url} ; Ctrl-C to stop",
        err=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("local API stopped; batches stay in " + str(server.state_dir), err=True)


COMMANDS: list[click.Command] = [local_api]
