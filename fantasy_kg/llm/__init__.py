"""The guide's LLM services: batch and real-time extraction through the Anthropic SDK.

The guide's ``src.services.llm`` is this package; its names are kept::

    from fantasy_kg.llm import AnthropicBatchProvider, build_extraction_batch_request
    from fantasy_kg.schemas import ExtractionResult

    request = build_extraction_batch_request(
        "ashen_crown_section_01", prompt, "claude-sonnet-5-5", ExtractionResult, 16000
    )
    provider = AnthropicBatchProvider(jobs_dir="data/batch_jobs")
    job = await provider.create_batch([request], "data/extracted", "claude-sonnet-5-5")
    await provider.poll_until_complete(job.id, poll_interval_seconds=60)
    summary = await provider.process_results_to_files(job.id, ExtractionResult)
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
