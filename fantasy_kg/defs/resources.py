"""Dagster resources: the Message Batches backend and the DuckDB warehouse.

Why it works this way: docs/architecture.md, "Dagster definitions".
"""

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import dagster as dg
from pydantic import Field, PrivateAttr

from fantasy_kg.domain import paths
from fantasy_kg.domain.answer import DEFAULT_OUTPUT_RATIO, effective_effort, request_effort
from fantasy_kg.domain.catalog import default_model, get_model
from fantasy_kg.llm.backend import (
    LOCAL_API_KEY,
    LOCAL_BANNER,
    Backend,
    backend_name,
    make_async_client,
    resolve_backend,
)
from fantasy_kg.llm.batch_provider import AnthropicBatchProvider
from fantasy_kg.llm.jobs import JobStore
from fantasy_kg.llm.results import ResultIdentity
from fantasy_kg.local_api import LocalServer, start_local_server
from fantasy_kg.pipeline.extraction import default_max_tokens

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCAL_BACKEND_NOTE = "local baseline extractor, not Claude"
"""Said wherever results of the local backend show up (metadata, logs): they are a baseline."""


# The type parameter is the resource's value; a ConfigurableResource is its own value, which
# cannot be spelled before the class exists.
class AnthropicBatchResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Submits, polls and retrieves Message Batches for one data directory.

    ``backend="auto"`` uses the Anthropic API when a key is configured and otherwise the embedded
    local backend (an Anthropic-compatible server on 127.0.0.1 whose "model" is a deterministic
    baseline extractor), so a fresh machine materializes every asset with no account.

    The backend is resolved on first use (for ``local`` without ``base_url``, that starts a server
    on a free loopback port) and torn down after the step or sensor tick, so a tick with nothing
    to poll starts nothing. An operation opens its SDK client inside its own event loop, so no
    connection outlives the loop it was made in; :meth:`session` shares one loop and one client
    between many operations (a sensor tick).

    Examples:
        .. code-block:: python

            defs = dg.Definitions(
                resources={
                    "anthropic_batches": AnthropicBatchResource(
                        api_key=dg.EnvVar("ANTHROPIC_API_KEY"),
                        data_dir="/srv/fantasy_kg/data",
                        max_cost_usd=25.0,
                    )
                }
            )
    """

    api_key: str | None = Field(
        default=None,
        description=(
            "Anthropic API key; pass dg.EnvVar('ANTHROPIC_API_KEY'). Empty: the local backend "
            "(with backend='auto'). Never logged or stored."
        ),
    )
    backend: Literal["auto", "anthropic", "local"] = Field(
        default="auto",
        description=(
            "'anthropic' (needs a key), 'local' (embedded baseline extractor on 127.0.0.1, not "
            "Claude) or 'auto' (anthropic when a key is set, else local)."
        ),
    )
    model: str = Field(
        default_factory=default_model,
        description="Model id or alias from the catalog (fantasy_kg/data/models.json).",
    )
    max_tokens: int | None = Field(
        default=None,
        description="max_tokens per extraction request; empty: 32,000 capped at the model's limit.",
    )
    max_section_tokens: int | None = Field(
        default=None,
        description=(
            "Cap on each section's text tokens; empty: 16,000, lowered until the expected answer "
            "(output_ratio x section + thinking for the effort, x1.5) fits max_tokens. A cap too "
            "large for the answer is refused by the pre-flight before anything is sent."
        ),
    )
    effort: str | None = Field(
        default=None,
        description=(
            "output_config.effort on models that think (low|medium|high|xhigh|max); empty: "
            "'low' (extraction is reading, "
            "and thinking is billed as output). Ignored on models without thinking."
        ),
    )
    output_ratio: float = Field(
        default=DEFAULT_OUTPUT_RATIO,
        gt=0,
        le=2,
        description="Expected answer tokens per section token: sizes sections, checks fit, prices.",
    )
    allow_mixed_backends: bool = Field(
        default=False,
        description=(
            "Let knowledge_graph load a series whose results come from different backends "
            "(the local baseline and Claude) into one graph; refused by default."
        ),
    )
    force: bool = Field(
        default=False,
        description=(
            "Extract again sections that already have a result for these settings (a result "
            "made by another backend, model, effort or max_tokens is re-extracted anyway)."
        ),
    )
    base_url: str | None = Field(
        default=None,
        description=(
            "API base URL: a proxy or gateway for 'anthropic', an already running local server "
            "for 'local' (empty: start one in-process on a free port)."
        ),
    )
    data_dir: str = Field(
        description="Absolute data directory: books/, sections/, extracted/, batch_jobs/, ...",
    )
    jobs_dir: str | None = Field(
        default=None,
        description="Folder of batch job files <batch_id>.json; empty: <data_dir>/batch_jobs.",
    )
    max_cost_usd: float | None = Field(
        default=None,
        description=(
            "Budget cap in USD per submission (pre-flight batch estimate) and for the actual "
            "cost check; empty: no cap."
        ),
    )
    max_attempts: int = Field(
        default=2,
        ge=1,
        description="Batches per section, follow-ups for retryable failures included.",
    )
    wait_inline: bool | None = Field(
        default=None,
        description=(
            "Whether extraction_batch waits for its batch to end inside the run. Empty: only "
            "with the local backend (seconds), never with Anthropic (up to 24 h: the completion "
            "sensor picks the batch up instead)."
        ),
    )
    poll_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between status polls while waiting inline for a local batch.",
    )
    max_wait_seconds: float = Field(
        default=900.0,
        gt=0,
        description="Give up waiting inline after this long; the sensor takes over from there.",
    )
    dedicated_workspace: bool = Field(
        default=False,
        description=(
            "The Anthropic workspace runs only this project from this data folder. Then a batch "
            "of a submission's size created right after a create that timed out is canceled as "
            "a duplicate although nothing proves it ours (saves its cost). Risk: in a shared "
            "workspace that cancels a colleague's batch. False: such batches are left alone and "
            "reported (FANTASY_KG_DEDICATED_WORKSPACE=1 also opts in)."
        ),
    )

    lock_wait_seconds: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Seconds a load waits for another process's lock on the DuckDB file (a line in "
            "the run's log every 5 s); then the step fails and its RetryPolicy retries it. "
            "Empty: $FANTASY_KG_LOCK_WAIT_SECONDS or 120."
        ),
    )

    _backend: Backend | None = PrivateAttr(default=None)
    _server: LocalServer | None = PrivateAttr(default=None)
    _log: Any = PrivateAttr(default=None)

    # --- lifecycle -------------------------------------------------------------------------

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Keep Dagster's logger, so the backend is announced in the run's or tick's log.

        The backend itself is resolved on first use: a sensor tick with no batch to poll starts no
        local server, and a missing Anthropic key fails the step that needs it (with one line)
        while sectioning still works without a key.
        """
        self._log = context.log

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Stop the local server this resource started (its batches stay on disk)."""
        if self._server is not None:
            self._server.stop()
        self._server = None
        self._backend = None
        self._log = None

    # --- configuration, resolved -----------------------------------------------------------

    @property
    def root(self) -> Path:
        """The data directory as an absolute path."""
        return Path(self.data_dir).expanduser().resolve()

    @property
    def books_path(self) -> Path:
        """``<data_dir>/books``: one folder per series partition."""
        return paths.books_dir(self.root)

    @property
    def sections_path(self) -> Path:
        """``<data_dir>/sections``: section files of every series."""
        return paths.sections_dir(self.root)

    @property
    def extracted_path(self) -> Path:
        """``<data_dir>/extracted``: one ``<custom_id>_extracted.json`` per section."""
        return paths.extracted_dir(self.root)

    @property
    def jobs_path(self) -> Path:
        """Folder of job files (``jobs_dir`` or ``<data_dir>/batch_jobs``)."""
        if self.jobs_dir:
            return Path(self.jobs_dir).expanduser().resolve()
        return paths.jobs_dir(self.root)

    @property
    def model_id(self) -> str:
        """The catalog id of ``model`` (aliases resolved)."""
        return get_model(self.model).id

    @property
    def request_max_tokens(self) -> int:
        """``max_tokens`` of each request."""
        return self.max_tokens or default_max_tokens(get_model(self.model))

    @property
    def identity(self) -> ResultIdentity:
        """What a result must have been made by to be reused (invariant 10)."""
        info = get_model(self.model)
        effort = effective_effort(info, request_effort(info, self.effort))
        return ResultIdentity(
            backend=backend_name(self.backend, api_key=self.api_key),
            model=info.id,
            effort=effort or "",
            max_tokens=self.request_max_tokens,
        )

    def job_store(self) -> JobStore:
        """The job files of this data directory (read by the sensor and the checks)."""
        return JobStore(self.jobs_path)

    def ontology_path(self, series: str) -> Path | None:
        """``<data_dir>/schemas/<series>_schema.json`` if it exists (else the default ontology)."""
        path = paths.confined(paths.ontology_dir(self.root), f"{series}_schema.json")
        return path if path.is_file() else None

    def resolved_backend(self) -> Backend:
        """The backend requests go to; for ``local`` without ``base_url``, starts a server.

        Raises:
            ConfigError: ``backend='anthropic'`` without a key, or an unknown backend.
        """
        if self._backend is not None:
            return self._backend
        if self._wants_local():
            url = self.base_url
            if not url:
                self._server = start_local_server(paths.local_api_dir(self.root))
                url = self._server.base_url
            self._backend = Backend(name="local", base_url=url, api_key=LOCAL_API_KEY)
            # INFO, not WARNING: choosing the local backend without a key is the documented
            # default, and the materialization metadata says "not Claude" on every batch.
            (self._log or log).info(f"{LOCAL_BANNER} ({url})")
        else:
            self._backend = resolve_backend(
                "anthropic", api_key=self.api_key or None, base_url=self.base_url
            )
        return self._backend

    def _wants_local(self) -> bool:
        # Like the CLI, "auto" also honours ANTHROPIC_API_KEY when no key was configured.
        key = self.api_key or os.environ.get("ANTHROPIC_API_KEY")
        return self.backend == "local" or (self.backend == "auto" and not key)

    @property
    def backend_name(self) -> str:
        """``anthropic`` or ``local``."""
        return self.resolved_backend().name

    @property
    def waits_inline(self) -> bool:
        """Whether the batch asset waits for its batch (see ``wait_inline``)."""
        if self.wait_inline is not None:
            return self.wait_inline
        return self.backend_name == "local"

    # --- running pipeline functions --------------------------------------------------------

    def run(self, operation: Callable[[AnthropicBatchProvider], Awaitable[T]]) -> T:
        """Run one async pipeline operation with a provider for this backend, then close it.

        A provider (and its HTTP client) lives exactly as long as one event loop: reusing an
        async client across ``asyncio.run`` calls breaks its pooled connections.
        """
        with self.session() as session:
            return session.run(operation)

    @contextmanager
    def session(self) -> Iterator["ProviderSession"]:
        """One event loop and one provider (one HTTP client) for many operations.

        The completion sensor polls many batches per tick: one client per tick, not one per poll.
        """
        session = ProviderSession(self._make_provider)
        try:
            yield session
        finally:
            session.close()

    def _make_provider(self) -> AnthropicBatchProvider:
        backend = self.resolved_backend()
        # The client is built from the backend resolved (and announced in the run's log) above;
        # letting the provider resolve it again would print the local-backend banner a second time.
        return AnthropicBatchProvider(
            jobs_dir=self.jobs_path,
            client=make_async_client(backend),
            backend=backend.name,
            max_attempts=self.max_attempts,
            dedicated_workspace=True if self.dedicated_workspace else None,
        )


class ProviderSession:
    """An event loop that stays open across calls, and the provider made inside it on first use.

    Attributes:
        providers_made: Providers (HTTP clients) created; at most 1 per session.
    """

    def __init__(self, factory: Callable[[], AnthropicBatchProvider]) -> None:
        self._factory = factory
        self._runner = asyncio.Runner()
        self._provider: AnthropicBatchProvider | None = None
        self.providers_made = 0

    def run(self, operation: Callable[[AnthropicBatchProvider], Awaitable[T]]) -> T:
        """Run ``operation`` with the session's provider on the session's loop."""

        async def _call() -> T:
            if self._provider is None:
                self._provider = self._factory()
                self.providers_made += 1
            return await operation(self._provider)

        return self._runner.run(_call())

    def close(self) -> None:
        """Close the provider (if one was made) and the loop."""
        try:
            if self._provider is not None:
                self._runner.run(self._provider.close())
        finally:
            self._provider = None
            self._runner.close()
