"""The guide's LLM services: batch and real-time extraction through the Anthropic SDK.

Usage example and background: docs/architecture.md, "The batch client".
"""

from fantasy_kg.llm.backend import Backend, resolve_backend
from fantasy_kg.llm.batch_provider import (
    AnthropicBatchProvider,
    BatchNotEndedError,
    BatchResultItem,
    ResultsArchivedError,
)
from fantasy_kg.llm.jobs import (
    BatchProcessingStatus,
    BatchResultType,
    FailureRecord,
    IntentRecord,
    JobRecord,
    JobStore,
    RequestCounts,
)
from fantasy_kg.llm.realtime import AnthropicProvider, UnifiedLLMService
from fantasy_kg.llm.requests import (
    PreflightReport,
    PreparedRequest,
    RequestMeta,
    build_extraction_batch_request,
    build_section_request,
    make_custom_id,
    preflight,
    split_into_batches,
)
from fantasy_kg.llm.results import Provenance, load_all_provenance, load_failures, load_provenance

__all__ = [
    "AnthropicBatchProvider",
    "AnthropicProvider",
    "Backend",
    "BatchNotEndedError",
    "BatchProcessingStatus",
    "BatchResultItem",
    "BatchResultType",
    "FailureRecord",
    "IntentRecord",
    "JobRecord",
    "JobStore",
    "PreflightReport",
    "PreparedRequest",
    "Provenance",
    "RequestCounts",
    "RequestMeta",
    "ResultsArchivedError",
    "UnifiedLLMService",
    "build_extraction_batch_request",
    "build_section_request",
    "load_all_provenance",
    "load_failures",
    "load_provenance",
    "make_custom_id",
    "preflight",
    "resolve_backend",
    "split_into_batches",
]
