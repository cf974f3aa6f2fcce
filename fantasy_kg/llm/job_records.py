"""The records the batch client keeps on disk: job files and intents (pydantic models).

:class:`JobRecord` is the guide's job file plus what exactly-once, retries and cost accounting
need; :class:`IntentRecord` is written before a create call. Where they live and how they are
read: :mod:`fantasy_kg.llm.jobs`. The API key is never part of any of them.
"""

from dataclasses import asdict
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fantasy_kg.domain.pricing import Cost, TokenUsage
from fantasy_kg.llm.request_types import RequestMeta


class BatchProcessingStatus(StrEnum):
    """``processing_status`` of a Message Batch."""

    IN_PROGRESS = "in_progress"
    CANCELING = "canceling"
    ENDED = "ended"


class BatchResultType(StrEnum):
    """``result.type`` of one line of a batch's results."""

    SUCCEEDED = "succeeded"
    ERRORED = "errored"
    CANCELED = "canceled"
    EXPIRED = "expired"


def utcnow() -> datetime:
    """Now, timezone-aware UTC (the API's timestamps are RFC 3339 UTC)."""
    return datetime.now(UTC)


def iso(dt: datetime | None) -> str | None:
    """RFC 3339 text of ``dt`` or ``None``."""
    return dt.isoformat() if dt is not None else None


class _ItemAccess(BaseModel):
    """Lets code written for the guide's dict-shaped job files use ``job["id"]`` too."""

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError as exc:
            raise KeyError(key) from exc

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style ``get``."""
        return getattr(self, key, default)


class RequestCounts(_ItemAccess):
    """The API's ``request_counts``; they sum to the number of requests in the batch."""

    model_config = ConfigDict(extra="ignore")

    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @property
    def total(self) -> int:
        """All requests of the batch."""
        return self.processing + self.succeeded + self.errored + self.canceled + self.expired


FailureType = Literal[
    "errored",
    "expired",
    "canceled",
    "refusal",
    "max_tokens",
    "model_context_window_exceeded",
    "invalid_json",
    "schema_mismatch",
    "no_text_block",
    "missing_result",
    "archived",
    "split_incomplete",
]


class FailureRecord(_ItemAccess):
    """Why one custom_id did not end as a result file.

    Attributes:
        custom_id: The request.
        batch_id: The batch it ran in (``realtime`` for real-time mode).
        type: What went wrong (see :data:`FailureType`).
        error_type: The API's ``error.type`` for errored results (``invalid_request_error``, ...).
        message: The API's message or the validation error, one line, no secrets.
        retryable: Whether resubmitting the same request can succeed.
        attempt: Attempt number of the batch that produced it (1 = first submission).
        resubmitted_in: Batch id of the follow-up that retries it, once created.
        file_name: Section file of the request.
        series: Series slug.
        stop_reason: The message's ``stop_reason`` for succeeded-but-unusable results.
        recorded_at: When it was recorded.
    """

    model_config = ConfigDict(extra="ignore")

    custom_id: str
    batch_id: str
    type: str
    error_type: str = ""
    message: str = ""
    retryable: bool = False
    attempt: int = 1
    resubmitted_in: str | None = None
    file_name: str = ""
    series: str = ""
    stop_reason: str = ""
    recorded_at: str = Field(default_factory=lambda: utcnow().isoformat())


class InputRef(_ItemAccess):
    """One request's section and idempotency key (section sha256 + prompt version + model)."""

    model_config = ConfigDict(extra="ignore")

    file_name: str
    chunk_id: str
    series: str = ""
    section_path: str = ""
    sha256: str = ""
    prompt_version: str = ""
    split_of: str = ""
    split_root: str = ""
    effort: str = ""
    max_tokens: int = 0

    @classmethod
    def from_meta(cls, meta: RequestMeta) -> "InputRef":
        """Copy a request's metadata; its custom_id is the key the ref is stored under.

        Every field of the ref is a field of :class:`RequestMeta` of the same name, so the two
        are copied by name rather than listed twice (``extra="ignore"`` drops ``custom_id``).
        """
        return cls.model_validate(asdict(meta))

    def to_meta(self, custom_id: str) -> RequestMeta:
        """Back to request metadata."""
        return RequestMeta(custom_id=custom_id, **self.model_dump())


class RequestUsage(BaseModel):
    """Usage and cost of one succeeded request (only succeeded results are billed)."""

    usage: TokenUsage
    cost: Cost


class ResultCounts(_ItemAccess):
    """How every submitted custom_id ended (``submitted == written + parts + failed + split``)."""

    submitted: int = 0
    written: int = 0
    parts_written: int = 0
    failed: int = 0
    retryable: int = 0
    split: int = 0
    unexpected: int = 0


class UnprovenCandidate(_ItemAccess):
    """A batch that may be a late create of ours, or anybody's: reported, never touched.

    Attributes:
        batch_id: The server's id.
        created_at: Its ``created_at``.
        request_count: Its number of requests (the manifest's).
        seen_at: When it was first seen.
    """

    model_config = ConfigDict(extra="ignore")

    batch_id: str
    created_at: str | None = None
    request_count: int = 0
    seen_at: str = Field(default_factory=lambda: utcnow().isoformat())


class JobRecord(_ItemAccess):
    """The job file ``<jobs_dir>/<batch_id>.json``.

    The first fields are the guide's (``id``, ``processing_status``, ``request_counts``,
    ``created_at``, ``expires_at``, ``local_request_mapping``, ``output_dir``, ``model``,
    ``series_name``); the rest make retries, idempotency and cost accounting possible from any
    process. Unknown fields written by newer versions are kept.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    type: str = "message_batch"
    processing_status: str = BatchProcessingStatus.IN_PROGRESS.value
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    created_at: str | None = None
    expires_at: str | None = None
    ended_at: str | None = None
    cancel_initiated_at: str | None = None
    archived_at: str | None = None
    results_url: str | None = None
    local_request_mapping: dict[str, str] = Field(default_factory=dict)
    output_dir: str
    model: str
    series_name: str | None = None
    series: str = ""
    backend: str = "anthropic"
    manifest_hash: str = ""
    payload_file: str = ""
    prompt_version: str = ""
    inputs: dict[str, InputRef] = Field(default_factory=dict)
    attempt: int = 1
    max_attempts: int = 2
    parent_batch_id: str | None = None
    retry_batch_ids: list[str] = Field(default_factory=list)
    sibling_batch_ids: list[str] = Field(default_factory=list)
    reconciled: bool = False
    #: Batches the server created for this job's manifest besides this one (a timed-out create
    #: that landed late): canceled, never processed, never counted in cost.
    duplicate_batch_ids: list[str] = Field(default_factory=list)
    submitted_at: str | None = None
    updated_at: str | None = None
    estimated_cost: Cost | None = None
    failures: dict[str, FailureRecord] = Field(default_factory=dict)
    splits: dict[str, list[str]] = Field(default_factory=dict)
    results_processed_at: str | None = None
    result_counts: ResultCounts | None = None
    followup_state: Literal["none", "pending", "created", "exhausted"] = "none"
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost: Cost = Field(default_factory=lambda: Cost(batch_usd=0.0, realtime_usd=0.0))
    request_usage: dict[str, RequestUsage] = Field(default_factory=dict)
    #: Random nonce of the submission this batch was created for; every custom_id sent carries
    #: it (see :mod:`fantasy_kg.llm.ownership`). Empty in job files from before nonces.
    nonce: str = ""
    #: Section custom_id -> custom_id sent on the wire. Every other field (``inputs``,
    #: ``local_request_mapping``, ``failures``, result file names) uses the section id; a
    #: section missing here was sent under its own id.
    wire_custom_ids: dict[str, str] = Field(default_factory=dict)
    #: Whose batch this is: ``created`` (the create call returned it), ``provisional`` (found by
    #: reconciliation after an ambiguous create: nothing proves it is ours until its results
    #: are read), ``proven`` (its results carried this submission's custom_ids) or ``released``
    #: (they did not: someone else's batch; nothing of it is written or counted, and its
    #: sections went out again in ``replaced_by``).
    ownership: Literal["created", "provisional", "proven", "released"] = "created"
    released_at: str | None = None
    release_reason: str = ""
    replaced_by: str | None = None
    #: Batches seen while looking for a late create of this job's manifest (same size, inside the
    #: window) that nothing proves to be ours: left alone (never canceled, never adopted).
    unproven_candidates: list[UnprovenCandidate] = Field(default_factory=list)

    @property
    def is_released(self) -> bool:
        """Reconciliation adopted someone else's batch by mistake and let it go again."""
        return self.ownership == "released"

    def wire_id(self, custom_id: str) -> str:
        """The custom_id that section ``custom_id`` was sent under."""
        return self.wire_custom_ids.get(custom_id, custom_id)

    def sections_by_wire_id(self) -> dict[str, str]:
        """``wire custom_id -> section custom_id`` for every input of the job."""
        return {self.wire_id(cid): cid for cid in self.inputs}

    @property
    def is_ended(self) -> bool:
        """The batch has finished processing (which does not mean every request succeeded)."""
        return self.processing_status == BatchProcessingStatus.ENDED.value

    @property
    def is_settled(self) -> bool:
        """Ended and every result handled: nothing more to do for this batch itself."""
        return self.is_ended and self.results_processed_at is not None

    def update_from_batch(self, batch: Any) -> None:
        """Copy the server's view of the batch (an SDK ``MessageBatch``) into the record."""
        self.processing_status = str(batch.processing_status)
        self.request_counts = RequestCounts.model_validate(batch.request_counts.model_dump())
        self.created_at = _ts(batch.created_at) or self.created_at
        self.expires_at = _ts(batch.expires_at) or self.expires_at
        self.ended_at = _ts(batch.ended_at)
        self.cancel_initiated_at = _ts(batch.cancel_initiated_at)
        self.archived_at = _ts(batch.archived_at)
        self.results_url = batch.results_url
        self.updated_at = utcnow().isoformat()


def _ts(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


IntentState = Literal["pending", "created", "failed", "done", "released"]


class IntentRecord(BaseModel):
    """What is about to be submitted, written before the create call (invariant 1).

    Attributes:
        manifest_hash: Hash of model + every (custom_id, params) pair: same work, same hash.
        custom_ids: The requests of the manifest.
        model: Model id.
        series: Series slug.
        request_count: How many requests; reconciliation matches it against ``request_counts``.
        window_start: Wall-clock time just before the (latest) create call.
        window_end: Time the create call returned or failed; ``None`` when the process died.
        state: pending (create may or may not have happened), created (``batch_id`` known),
            failed (definitely not created), done (batch settled; a new submission is new work).
        batch_id: The batch created for this manifest.
        create_attempts: Create calls made so far.
        output_dir: Where results go.
        parent_batch_id: For follow-up batches: the batch whose failures they retry.
        attempt: Attempt number of the batch.
        late_possible: Failed create calls that may still create a batch on the server later
            (a timeout, a dropped connection: the request may be landing after the client gave
            up) and whose batch has not been found yet; while above 0, status, poll, retrieve
            and re-runs look for such a batch until ``watch_until`` and cancel it.
        watch_until: When to stop looking for a late batch.
        duplicate_batch_ids: Batches found besides ``batch_id`` for this manifest: canceled
            duplicates, never adopted or processed (only with a dedicated workspace).
        nonce: Random nonce every custom_id of this submission carries on the wire; kept when an
            interrupted or released submission is sent again, so whichever of its creates landed
            is still recognized as ours.
        provisional: ``batch_id`` was adopted by reconciliation and is not proven ours yet.
        released_batch_ids: Batches adopted by reconciliation whose results proved them not
            ours: never adopted again, never canceled.
        unproven_batch_ids: Batches of the manifest's size seen inside its window that nothing
            proves to be ours: left alone and reported.
    """

    model_config = ConfigDict(extra="allow")

    manifest_hash: str
    custom_ids: list[str]
    model: str
    series: str = ""
    request_count: int
    window_start: str
    window_end: str | None = None
    state: IntentState = "pending"
    batch_id: str | None = None
    create_attempts: int = 0
    output_dir: str = ""
    parent_batch_id: str | None = None
    attempt: int = 1
    history: list[dict[str, Any]] = Field(default_factory=list)
    late_possible: int = 0
    watch_until: str | None = None
    duplicate_batch_ids: list[str] = Field(default_factory=list)
    nonce: str = ""
    provisional: bool = False
    released_batch_ids: list[str] = Field(default_factory=list)
    unproven_batch_ids: list[str] = Field(default_factory=list)

    def claimed_batch_ids(self) -> set[str]:
        """Batches this intent has settled: current, earlier, duplicates and released ones.

        Reconciliation never adopts (and never cancels) any of them again.
        """
        ids = {str(h.get("batch_id")) for h in self.history if h.get("batch_id")}
        ids.update(self.duplicate_batch_ids)
        ids.update(self.released_batch_ids)
        if self.batch_id:
            ids.add(self.batch_id)
        return ids
