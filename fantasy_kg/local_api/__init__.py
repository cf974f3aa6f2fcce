"""Embedded Anthropic-compatible API on 127.0.0.1: the local backend and the test emulator.

The local backend answers with a deterministic baseline extractor, not Claude. The official SDK
is pointed at it by ``base_url`` and cannot tell the difference in protocol: Messages,
count_tokens, Models and Message Batches (create, retrieve, list, cancel, delete, results).

Usage for tests (the batch client's and everyone else's)::

    import anthropic
    from fantasy_kg.local_api import Fault, FaultPlan, ResultOverride, start_local_server

    plan = FaultPlan(
        faults=(
            Fault.overloaded("batches.create", calls=(0,)),  # 1st create → 529, SDK retries
            Fault.accept_then_drop("batches.create", calls=(1,)),  # created, answer lost
            Fault.cut_stream(lines=2),  # 1st results download cut after 2 lines
        ),
        results={
            "sec_01": ResultOverride.errored("overloaded_error", times=1),  # only 1st batch
            "sec_02": ResultOverride("max_tokens"),  # truncated JSON
        },
    )
    with start_local_server(state_dir=tmp_path / "api", faults=plan) as server:
        client = anthropic.Anthropic(api_key="test-key", base_url=server.base_url)
        ...
        creates = server.requests_to("batches.create")  # what the SDK really sent
        assert all("temperature" not in r["params"] for r in creates[0].body["requests"])

Endpoint names for faults and the log: ``messages.create``, ``messages.count_tokens``,
``models.list``, ``models.retrieve``, ``batches.create``, ``batches.retrieve``, ``batches.list``,
``batches.cancel``, ``batches.delete``, ``batches.results`` (``*`` = any). Call indexes are
0-based per endpoint; every SDK retry is a new call.

Subprocess servers (a CLI run, a Dagster materialization) read the same plan from
``FANTASY_KG_LOCAL_API_FAULTS`` (inline JSON from ``plan.to_json_text()`` or a file path) and
append their request log to ``<state_dir>/requests_log.jsonl``; read it with
:func:`read_request_log`. Set ``persist_counts=True`` in the plan so call indexes count across
processes ("fail the first create ever", not "in every process").

Useful server options (``start_local_server(..., **options)``): ``clock`` (inject time for
24-hour expiry / 29-day archive), ``min_processing_seconds`` (stay ``in_progress`` that long; with
the wall clock the first half of it, at most 2 s, is spent queued with no request answered, so a
cancel then cancels every request: ``queue_seconds`` overrides),
``per_request_seconds`` (slow processing, for cancel tests), ``process_batches=False`` (hold
batches in progress), ``require_key`` (401 for other keys), ``max_batch_body_bytes`` /
``max_batch_requests`` (small limits for 413/400 tests).

Claude-like mode (answers at the size Claude's would have: ``output_ratio`` x the section's
tokens plus thinking for the effort, cut at ``max_tokens``): ``responder=ClaudeLikeResponder(0.15)``
or ``FaultPlan(claude_like=0.15)`` (also via the environment), or
``fantasy-kg local-api --claude-like``. ``server.billed_usage()`` sums what it billed per model.
Every model that thinks (catalog ``thinking_default`` not ``off``) gets emulated thinking tokens
in ``usage`` whatever the responder (:mod:`fantasy_kg.domain.answer`), and every answer longer
than ``max_tokens`` is cut there with ``stop_reason: "max_tokens"`` and a warning in the log.

Production: :func:`ensure_local_server` returns the base URL of a process-wide server for the data
directory (state in ``<data_dir>/local_api``); ``fantasy-kg local-api`` runs one in the foreground.
"""

from fantasy_kg.local_api.claude_like import ClaudeLikeResponder
from fantasy_kg.local_api.engine import Responder, ResponderAnswer, default_responder
from fantasy_kg.local_api.faults import (
    FAULTS_ENV,
    REQUEST_LOG_ENV,
    Fault,
    FaultPlan,
    LoggedRequest,
    ResultOverride,
    read_request_log,
)
from fantasy_kg.local_api.server import LocalServer, ensure_local_server, start_local_server
from fantasy_kg.local_api.store import BatchOptions, BatchStore

__all__ = [
    "FAULTS_ENV",
    "REQUEST_LOG_ENV",
    "BatchOptions",
    "BatchStore",
    "ClaudeLikeResponder",
    "Fault",
    "FaultPlan",
    "LocalServer",
    "LoggedRequest",
    "Responder",
    "ResponderAnswer",
    "ResultOverride",
    "default_responder",
    "ensure_local_server",
    "read_request_log",
    "start_local_server",
]
