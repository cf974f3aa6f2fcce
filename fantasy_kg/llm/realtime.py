"""Real-time extraction: the same requests through ``/v1/messages``, the same output files.

:class:`AnthropicProvider` sends one request and returns the SDK ``Message`` (SDK retries on,
which honour ``retry-after`` on 429/529). :class:`UnifiedLLMService` runs many with bounded
concurrency and hands every answer to :mod:`fantasy_kg.llm.results`, exactly as the batch path
does, so ``<custom_id>_extracted.json``, provenance and failure records cannot be told apart from
batch mode (except ``mode: realtime`` in the provenance and the price: real time costs twice the
batch rate).
"""

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anthropic
from anthropic import AsyncAnthropic
from pydantic import BaseModel

from fantasy_kg.domain.catalog import get_model
from fantasy_kg.domain.errors import UserError
from fantasy_kg.domain.pricing import Cost, TokenUsage
from fantasy_kg.domain.schemas import ExtractionResult
from fantasy_kg.llm.backend import make_async_client, resolve_backend
from fantasy_kg.llm.jobs import FailureRecord
from fantasy_kg.llm.requests import (
    API_VERSION,
    PreparedRequest,
    RequestMeta,
    as_prepared,
    build_extraction_batch_request,
    half_custom_id,
    make_custom_id,
    preflight,
    split_request,
)
from fantasy_kg.llm.results import (
    Provenance,
    cost_of,
    interpret_message,
    record_split,
    request_failure,
    try_merge,
    write_failure,
    write_result,
)

logger = logging.getLogger(__name__)

REALTIME_BATCH_ID = "realtime"

_CREATE_PARAMS = frozenset(
    name
    for name in inspect.signature(anthropic.resources.messages.AsyncMessages.create).parameters
    if name not in ("self", "extra_headers", "extra_query", "extra_body", "timeout", "stream")
)


class AnthropicProvider:
    """One-request-at-a-time client for ``POST /v1/messages`` (the guide's real-time provider).

    Args:
        api_key: Key, or ``None`` for ``ANTHROPIC_API_KEY`` / the local backend.
        base_url: API base URL.
        client: A ready ``AsyncAnthropic``.
        max_retries: SDK retries (429, 5xx, 529, connection errors; ``retry-after`` honoured).
        timeout: Seconds per request. Always explicit, which also lifts the SDK's
            "streaming required" guard for large ``max_tokens``.
        backend: ``auto`` | ``anthropic`` | ``local``.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        client: AsyncAnthropic | None = None,
        max_retries: int = 4,
        timeout: float = 600.0,
        backend: str = "auto",
    ) -> None:
        self.timeout = timeout
        if client is not None:
            self.client = client
            self.backend = backend if backend != "auto" else "anthropic"
        else:
            resolved = resolve_backend(backend, api_key=api_key, base_url=base_url)
            self.backend = resolved.name
            self.client = make_async_client(resolved, max_retries=max_retries, timeout=timeout)

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.close()

    async def create_message(self, request: dict[str, Any]) -> Any:
        """Send one request (a batch-style ``{"custom_id", "params"}`` dict or bare params).

        Keys the SDK's typed signature no longer has (``temperature`` on a client pinned to an old
        API version) travel in ``extra_body``.
        """
        params = request.get("params", request)
        known = {k: v for k, v in params.items() if k in _CREATE_PARAMS}
        extra = {k: v for k, v in params.items() if k not in _CREATE_PARAMS}
        return await self.client.messages.create(
            **known, extra_body=extra or None, timeout=self.timeout
        )

    async def extract(
        self,
        prompt: str,
        model: str,
        schema: type[BaseModel] = ExtractionResult,
        max_tokens: int = 16000,
        *,
        custom_id: str = "realtime_request",
        file_name: str = "",
        chunk_id: str = "",
    ) -> BaseModel:
        """Extract from one prompt and return the validated result (no files written).

        Raises:
            UserError: the answer was refused, truncated or invalid (the message says which).
        """
        cid = make_custom_id(custom_id)
        body = build_extraction_batch_request(cid, prompt, model, schema, max_tokens)
        message = await self.create_message(body)
        meta = RequestMeta(custom_id=cid, file_name=file_name or f"{cid}.txt", chunk_id=chunk_id)
        outcome = interpret_message(message, meta, schema=schema, batch_id=REALTIME_BATCH_ID)
        if outcome.truncated:
            raise UserError(f"answer truncated ({outcome.stop_reason}): raise max_tokens")
        if outcome.failure is not None:
            raise UserError(f"{outcome.failure.type}: {outcome.failure.message}")
        assert outcome.result is not None
        return outcome.result


def _failure_from_exception(
    exc: anthropic.APIError, meta: RequestMeta, attempt: int
) -> FailureRecord:
    if isinstance(exc, anthropic.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        inner = body.get("error", {}) if isinstance(body.get("error"), dict) else {}
        etype = str(inner.get("type") or getattr(exc, "type", "") or "api_error")
        message = str(inner.get("message") or exc.message)
        retryable = etype != "invalid_request_error" and exc.status_code not in (400, 401, 403)
    else:
        etype, message, retryable = "connection_error", type(exc).__name__, True
    return request_failure(
        meta,
        "errored",
        message,
        batch_id=REALTIME_BATCH_ID,
        attempt=attempt,
        retryable=retryable,
        error_type=etype,
    )


class UnifiedLLMService:
    """Run extraction requests in real time with bounded concurrency and write result files.

    Args:
        provider: The :class:`AnthropicProvider` to send through (built from the other
            arguments when ``None``).
        max_concurrency: Requests in flight at once (an ``asyncio.Semaphore``).
        max_attempts: Attempts per request: a retryable failure after the SDK's own retries, or a
            truncated answer split in two, counts one attempt.
        api_key: Passed to the provider when it is built here.
        base_url: Passed to the provider when it is built here.
        backend: Passed to the provider when it is built here.
    """

    def __init__(
        self,
        provider: AnthropicProvider | None = None,
        *,
        max_concurrency: int = 4,
        max_attempts: int = 2,
        api_key: str | None = None,
        base_url: str | None = None,
        backend: str = "auto",
    ) -> None:
        self.provider = provider or AnthropicProvider(api_key, base_url=base_url, backend=backend)
        self.max_concurrency = max(1, max_concurrency)
        self.max_attempts = max(1, max_attempts)

    async def close(self) -> None:
        """Close the provider's client."""
        await self.provider.close()

    async def extract(
        self,
        prompt: str,
        model: str,
        schema: type[BaseModel] = ExtractionResult,
        max_tokens: int = 16000,
        **kwargs: Any,
    ) -> BaseModel:
        """One prompt, one validated result (see :meth:`AnthropicProvider.extract`)."""
        return await self.provider.extract(prompt, model, schema, max_tokens, **kwargs)

    async def process_requests(
        self,
        requests: Sequence[dict[str, Any] | PreparedRequest],
        output_dir: str | Path,
        model: str,
        *,
        schema: type[BaseModel] = ExtractionResult,
        on_done: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Send every request, write result files and failure records like the batch path.

        Pre-flight runs first (same checks as batches). Returns the same summary keys as
        :meth:`AnthropicBatchProvider.process_results_to_files`.
        """
        info = get_model(model)
        prepared = as_prepared(requests)
        preflight(prepared, info.id)
        out_dir = Path(output_dir).expanduser().resolve()
        sem = asyncio.Semaphore(self.max_concurrency)
        written: list[str] = []
        failures: dict[str, FailureRecord] = {}
        split: list[str] = []
        usage_total = TokenUsage()
        costs: list[Cost] = []

        async def run(req: PreparedRequest, attempt: int) -> None:
            nonlocal usage_total
            meta = req.meta
            async with sem:
                try:
                    message = await self.provider.create_message(req.body)
                except anthropic.APIError as exc:
                    rec = _failure_from_exception(exc, meta, attempt)
                    message = None
            if message is None:
                if rec.retryable and attempt < self.max_attempts:
                    logger.warning("%s failed (%s); retrying", meta.custom_id, rec.error_type)
                    await run(req, attempt + 1)
                    return
                failures[meta.custom_id] = rec
                write_failure(out_dir, rec)
                return
            outcome = interpret_message(
                message, meta, schema=schema, batch_id=REALTIME_BATCH_ID, attempt=attempt
            )
            usage = outcome.usage or TokenUsage()
            cost = cost_of(info, usage)
            usage_total = usage_total + usage
            costs.append(cost)
            if outcome.truncated:
                await truncated(req, attempt, outcome.stop_reason)
                return
            if outcome.failure is not None:
                failures[meta.custom_id] = outcome.failure
                write_failure(out_dir, outcome.failure)
                return
            assert outcome.result is not None
            prov = Provenance.of_request(
                meta,
                model=info.id,
                batch_id=REALTIME_BATCH_ID,
                backend=self.provider.backend,
                mode="realtime",
                usage=usage,
                cost=cost,
                rejected=outcome.rejected,
            )
            if meta.split_of:
                write_result(out_dir, meta, outcome.result, prov, as_part=True)
                root = meta.split_root or meta.split_of
                merged = try_merge(out_dir, root, root_metas[root])
                if merged is not None:
                    written.append(str(merged))
            else:
                written.append(str(write_result(out_dir, meta, outcome.result, prov)))
            if on_done is not None:
                on_done(meta.custom_id)

        async def truncated(req: PreparedRequest, attempt: int, stop: str) -> None:
            meta = req.meta
            ids = (half_custom_id(meta.custom_id, "a"), half_custom_id(meta.custom_id, "b"))
            halves = split_request(req.body, ids) if attempt < self.max_attempts else None
            if halves is None:
                rec = request_failure(
                    meta,
                    stop,
                    f"answer truncated ({stop}); raise --max-tokens or re-section",
                    batch_id=REALTIME_BATCH_ID,
                    attempt=attempt,
                    retryable=False,
                    stop_reason=stop,
                )
                failures[meta.custom_id] = rec
                write_failure(out_dir, rec)
                return
            root = meta.split_root or meta.custom_id
            root_metas.setdefault(root, meta)
            record_split(out_dir, root, meta.custom_id, ids)
            split.append(meta.custom_id)
            half_reqs = [
                PreparedRequest(
                    body=body,
                    # The halves keep the request's effort and max_tokens: both are part of
                    # the result's identity (invariant 10), as in the batch follow-ups.
                    meta=dataclasses.replace(
                        meta,
                        custom_id=str(body["custom_id"]),
                        split_of=meta.custom_id,
                        split_root=root,
                    ),
                )
                for body in halves
            ]
            await asyncio.gather(*(run(h, attempt + 1) for h in half_reqs))

        root_metas: dict[str, RequestMeta] = {}
        await asyncio.gather(*(run(r, 1) for r in prepared))
        cost = Cost(
            batch_usd=sum(c.batch_usd for c in costs),
            realtime_usd=sum(c.realtime_usd for c in costs),
        )
        top_failed = [f for cid, f in failures.items() if cid in {r.custom_id for r in prepared}]
        logger.info(
            "real time: %d requests, %d written, %d failed (%d half-request failures); $%.4f",
            len(prepared),
            len(written),
            len(top_failed),
            len(failures) - len(top_failed),
            cost.realtime_usd,
        )
        return {
            "batch_id": REALTIME_BATCH_ID,
            "processed": len(written),
            "failed": len(failures),
            "usage": usage_total,
            "files_written": written,
            "submitted": len(prepared),
            "split": len(split),
            "retryable": sum(1 for f in failures.values() if f.retryable),
            "cost": cost,
            "failures": list(failures.values()),
        }


__all__ = ["API_VERSION", "AnthropicProvider", "UnifiedLLMService"]
