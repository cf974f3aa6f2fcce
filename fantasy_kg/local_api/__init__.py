"""Embedded Anthropic-compatible API on 127.0.0.1: the local backend and the test emulator.

The local backend answers with a deterministic baseline extractor, not Claude. The official SDK
is pointed at it by ``base_url`` and cannot tell the difference in protocol: Messages,
count_tokens, Models and Message Batches (create, retrieve, list, cancel, delete, results).

Usage (faults, options, Claude-like mode) and background: docs/architecture.md, "The local
backend".
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
