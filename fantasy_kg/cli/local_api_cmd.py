"""Command ``local-api``: run the embedded Anthropic-compatible server in the foreground.

Backend selection starts the same server in-process on demand; running it on its own is useful
to point other tools (``ANTHROPIC_BASE_URL``) or several CLI runs at one long-lived instance, and
to keep batches processing between CLI calls.
"""

import json
from pathlib import Path

import click

from fantasy_kg.domain.estimate import DEFAULT_OUTPUT_RATIO
from fantasy_kg.local_api import LocalServer
from fantasy_kg.local_api.claude_like import ClaudeLikeResponder, check_output_ratio


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
@click.option(
    "--claude-like",
    is_flag=True,
    help="Answer at the size Claude would (output ratio x section tokens, plus thinking for the "
    "effort, cut at max_tokens) instead of with the baseline's short answers: for sizing and "
    "cost checks with a fake key (ANTHROPIC_API_KEY=fake ANTHROPIC_BASE_URL=<url>).",
)
@click.option(
    "--output-ratio",
    type=float,
    default=DEFAULT_OUTPUT_RATIO,
    show_default=True,
    help="With --claude-like: answer tokens per section token.",
)
def local_api(
    port: int,
    state_dir: Path | None,
    min_processing_seconds: float,
    claude_like: bool,
    output_ratio: float,
) -> None:
    """Serve the local Anthropic-compatible API on 127.0.0.1 until Ctrl-C.

    Its "model" is the deterministic baseline extractor, not Claude; with --claude-like it sizes
    that answer (padded or trimmed) to what Claude's would be, so the plan, the split path and
    the cost estimate can be checked without a key. Prints the base URL as JSON on stdout;
    point the SDK or the CLI at it with ANTHROPIC_BASE_URL. Fault injection for testers:
    FANTASY_KG_LOCAL_API_FAULTS (inline JSON or a file path; "claude_like": 0.15 there does the
    same as --claude-like).
    """
    responder = ClaudeLikeResponder(check_output_ratio(output_ratio)) if claude_like else None
    server = LocalServer(
        state_dir, port, responder=responder, min_processing_seconds=min_processing_seconds
    )
    click.echo(
        json.dumps(
            {"base_url": server.base_url, "state_dir": str(server.state_dir), "mode": server.mode}
        )
    )
    click.echo(
        f"local API ({server.mode}, not Claude) at {server.base_url}; "
        f"export ANTHROPIC_BASE_URL={server.base_url} ; Ctrl-C to stop",
        err=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("local API stopped; batches stay in " + str(server.state_dir), err=True)


COMMANDS: list[click.Command] = [local_api]
