"""Fault injection and the request log of the local API server.

Why it works this way: docs/architecture.md, "The local backend".
"""

import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from fantasy_kg.domain.errors import ConfigError
from fantasy_kg.domain.paths import atomic_write_text
from fantasy_kg.local_api.locks import file_lock
from fantasy_kg.local_api.protocol import ApiError, error_type_for_status

FAULTS_ENV = "FANTASY_KG_LOCAL_API_FAULTS"
"""Inline JSON or a path to a JSON file holding a :class:`FaultPlan` (:meth:`FaultPlan.to_json`)."""

REQUEST_LOG_ENV = "FANTASY_KG_LOCAL_API_LOG"
"""When set to a non-empty value other than ``0``, servers also append their request log to
``<state_dir>/requests_log.jsonl`` (always on when a fault plan comes from the environment)."""

REQUEST_LOG_FILE = "requests_log.jsonl"

ENDPOINTS = (
    "messages.create",
    "messages.count_tokens",
    "models.list",
    "models.retrieve",
    "batches.create",
    "batches.retrieve",
    "batches.list",
    "batches.cancel",
    "batches.delete",
    "batches.results",
)
"""Names used to address endpoints in fault plans and the request log (``*`` matches any)."""

FaultKind = Literal[
    "error", "slow", "drop", "accept_then_error", "accept_then_drop", "cut_stream", "answer"
]
_FAULT_KINDS = (
    "error",
    "slow",
    "drop",
    "accept_then_error",
    "accept_then_drop",
    "cut_stream",
    "answer",
)

OverrideKind = Literal[
    "errored",
    "expired",
    "canceled",
    "max_tokens",
    "refusal",
    "model_context_window_exceeded",
    "invalid_json",
    "schema_invalid",
    "thinking",
    "text",
]
_OVERRIDE_KINDS: tuple[str, ...] = get_args(OverrideKind)

#: The submission nonce fantasy_kg appends to each custom_id it sends (the format of
#: ``fantasy_kg.llm.ownership.wire_custom_id``, repeated so the server need not import the SDK).
_SUBMISSION_NONCE = re.compile(r"-[0-9a-f]{12}$")

_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "proxy-authorization"})


@dataclass(frozen=True)
class ResultOverride:
    """Replace the normal answer for one request (a batch ``custom_id`` or a messages call).

    Kinds: ``errored`` (``error_type``/``message``), ``expired``, ``canceled``, ``max_tokens``
    (the answer cut in half, truncated JSON), ``refusal`` (no text, ``stop_details``),
    ``model_context_window_exceeded`` (truncated), ``invalid_json``, ``schema_invalid`` (valid
    JSON that breaks the output schema), ``thinking`` (a thinking block before the normal text)
    and ``text`` (exactly ``text`` with ``stop_reason``, for hostile-output tests).

    Attributes:
        kind: One of the kinds above.
        error_type: For ``errored``: the ``error.type`` (``api_error``, ``overloaded_error``, ...).
        message: For ``errored``: the message; a default is used when empty.
        text: For ``text`` (and optionally ``refusal``/``invalid_json``/``schema_invalid``).
        stop_reason: For ``text``: the stop reason to report (default ``end_turn``).
        times: How many batches get this override for the custom_id (``None`` = every batch), so a
            retry of the same custom_id in a follow-up batch can succeed.
    """

    kind: OverrideKind
    error_type: str = "api_error"
    message: str | None = None
    text: str | None = None
    stop_reason: str | None = None
    times: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _OVERRIDE_KINDS:
            kinds = ", ".join(_OVERRIDE_KINDS)
            raise ConfigError(f"unknown result override kind {self.kind!r}; use one of {kinds}")

    @classmethod
    def errored(
        cls, error_type: str = "api_error", message: str | None = None, times: int | None = None
    ) -> "ResultOverride":
        """An ``errored`` result line with the given error type."""
        return cls("errored", error_type=error_type, message=message, times=times)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict without the defaults."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "ResultOverride":
        """Inverse of :meth:`to_json`."""
        return cls(**raw)


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour of one endpoint at given call indexes.

    Kinds:
        ``error``: answer with ``status`` (and ``error_type``/``message``/``error_code``), plus
            ``retry-after`` / ``retry-after-ms`` / ``x-should-retry`` headers when set.
        ``slow``: sleep ``seconds`` then answer normally.
        ``drop``: read the request, then close the connection without answering.
        ``accept_then_error``: process the request (a batch create really creates the batch), then
            answer with the error described by ``status``/``error_type``/``message``.
        ``accept_then_drop``: process the request, then close without answering.
        ``cut_stream``: for ``batches.results``: send ``lines`` result lines, then close.
        ``answer``: for ``messages.create``: answer with ``result`` instead of the responder's.

    Attributes:
        endpoint: One of :data:`ENDPOINTS` or ``*``.
        kind: One of the kinds above.
        calls: 0-based call indexes of that endpoint to affect; ``None`` = every call.
    """

    endpoint: str
    kind: FaultKind
    calls: tuple[int, ...] | None = (0,)
    status: int = 500
    error_type: str | None = None
    message: str | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    should_retry: bool | None = None
    error_code: str | None = None
    seconds: float = 0.0
    lines: int = 0
    result: ResultOverride | None = None

    def __post_init__(self) -> None:
        if self.endpoint != "*" and self.endpoint not in ENDPOINTS:
            raise ConfigError(
                f"unknown endpoint {self.endpoint!r} in fault plan; use one of "
                f"{', '.join(ENDPOINTS)} or '*'"
            )
        if self.kind not in _FAULT_KINDS:
            raise ConfigError(
                f"unknown fault kind {self.kind!r}; use one of {', '.join(_FAULT_KINDS)}"
            )
        if self.kind == "answer" and self.result is None:
            raise ConfigError("fault kind 'answer' needs a 'result' override")

    # ---- presets ------------------------------------------------------------------------------

    @classmethod
    def rate_limit(
        cls,
        endpoint: str,
        calls: tuple[int, ...] | None = (0,),
        retry_after: float | None = None,
        retry_after_ms: int | None = None,
    ) -> "Fault":
        """429 ``rate_limit_error``, with ``retry-after`` when given."""
        return cls(
            endpoint,
            "error",
            calls,
            status=429,
            message="Number of request tokens has exceeded your per-minute rate limit",
            retry_after=retry_after,
            retry_after_ms=retry_after_ms,
        )

    @classmethod
    def spend_limit(cls, endpoint: str, calls: tuple[int, ...] | None = None) -> "Fault":
        """429 for a reached spend cap: ``error_code`` set, no ``retry-after`` (keeps failing)."""
        return cls(
            endpoint,
            "error",
            calls,
            status=429,
            message="You have reached your specified workspace API usage limits. "
            "You will regain access on the first of next month.",
            error_code="enforced_spend_limit_reached",
        )

    @classmethod
    def overloaded(cls, endpoint: str, calls: tuple[int, ...] | None = (0,)) -> "Fault":
        """529 ``overloaded_error``."""
        return cls(endpoint, "error", calls, status=529, message="Overloaded")

    @classmethod
    def server_error(
        cls, endpoint: str, calls: tuple[int, ...] | None = (0,), should_retry: bool | None = None
    ) -> "Fault":
        """500 ``api_error``, optionally with ``x-should-retry``."""
        return cls(
            endpoint,
            "error",
            calls,
            status=500,
            message="Internal server error",
            should_retry=should_retry,
        )

    @classmethod
    def status_error(
        cls, endpoint: str, status: int, calls: tuple[int, ...] | None = (0,)
    ) -> "Fault":
        """Any status with its standard error type (401, 403, 413, 504, ...)."""
        messages = {
            401: "invalid x-api-key",
            403: "Your API key does not have permission to use the specified resource.",
            413: "Request exceeds the maximum allowed number of bytes.",
        }
        return cls(endpoint, "error", calls, status=status, message=messages.get(status))

    @classmethod
    def slow(cls, endpoint: str, seconds: float, calls: tuple[int, ...] | None = (0,)) -> "Fault":
        """Sleep ``seconds`` before answering normally."""
        return cls(endpoint, "slow", calls, seconds=seconds)

    @classmethod
    def drop(cls, endpoint: str, calls: tuple[int, ...] | None = (0,)) -> "Fault":
        """Close the connection without any answer."""
        return cls(endpoint, "drop", calls)

    @classmethod
    def accept_then_error(
        cls, endpoint: str, calls: tuple[int, ...] | None = (0,), status: int = 500
    ) -> "Fault":
        """Do the work (e.g. create the batch), then answer with an error status."""
        return cls(endpoint, "accept_then_error", calls, status=status)

    @classmethod
    def accept_then_drop(cls, endpoint: str, calls: tuple[int, ...] | None = (0,)) -> "Fault":
        """Do the work (e.g. create the batch), then close without answering."""
        return cls(endpoint, "accept_then_drop", calls)

    @classmethod
    def cut_stream(cls, lines: int, calls: tuple[int, ...] | None = (0,)) -> "Fault":
        """Send only ``lines`` lines of the results JSONL, then close the connection."""
        return cls("batches.results", "cut_stream", calls, lines=lines)

    @classmethod
    def answer(cls, result: ResultOverride, calls: tuple[int, ...] | None = (0,)) -> "Fault":
        """Make ``messages.create`` answer with ``result`` at the given calls."""
        return cls("messages.create", "answer", calls, result=result)

    # ---- behaviour ----------------------------------------------------------------------------

    def matches(self, endpoint: str, index: int) -> bool:
        """Whether this fault applies to call ``index`` of ``endpoint``."""
        if self.endpoint not in ("*", endpoint):
            return False
        return self.calls is None or index in self.calls

    def api_error(self) -> ApiError:
        """The error to send for ``error`` and ``accept_then_error`` faults."""
        error_type = self.error_type or error_type_for_status(self.status)
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["retry-after"] = f"{self.retry_after:g}"
        if self.retry_after_ms is not None:
            headers["retry-after-ms"] = str(self.retry_after_ms)
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"
        details = {"error_code": self.error_code} if self.error_code else None
        message = self.message or f"injected {self.status} {error_type}"
        return ApiError(self.status, message, error_type, details=details, headers=headers)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (defaults omitted)."""
        raw: dict[str, Any] = {"endpoint": self.endpoint, "kind": self.kind}
        raw["calls"] = None if self.calls is None else list(self.calls)
        defaults = Fault("*", "error")
        for name in (
            "status",
            "error_type",
            "message",
            "retry_after",
            "retry_after_ms",
            "should_retry",
            "error_code",
            "seconds",
            "lines",
        ):
            value = getattr(self, name)
            if value != getattr(defaults, name):
                raw[name] = value
        if self.result is not None:
            raw["result"] = self.result.to_json()
        return raw

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "Fault":
        """Inverse of :meth:`to_json`."""
        data = dict(raw)
        calls = data.pop("calls", [0])
        result = data.pop("result", None)
        return cls(
            calls=None if calls is None else tuple(int(c) for c in calls),
            result=None if result is None else ResultOverride.from_json(result),
            **data,
        )


@dataclass(frozen=True)
class FaultPlan:
    """Everything a test wants the server to do wrong.

    Attributes:
        faults: Endpoint-level faults, checked in order (the first match wins).
        results: Per-``custom_id`` result overrides for batch requests.
        thinking: Put a thinking block before the text of every answer (clients must select
            content blocks by type).
        persist_counts: Keep call counts in the state directory (shared by every process on it).
        claude_like: Answer like Claude at scale instead of with the baseline: this output ratio
            (answer tokens per section token, e.g. 0.15) plus thinking for the effort, cut at
            ``max_tokens`` (see :mod:`fantasy_kg.local_api.claude_like`). ``None``: the baseline.
            A responder passed to the server explicitly wins over this.
    """

    faults: tuple[Fault, ...] = ()
    results: dict[str, ResultOverride] = field(default_factory=dict)
    thinking: bool = False
    persist_counts: bool = False
    claude_like: float | None = None

    def __post_init__(self) -> None:
        if self.claude_like is not None and not 0.0 < self.claude_like <= 10.0:
            raise ConfigError(
                f"fault plan claude_like={self.claude_like} is outside (0, 10]; try 0.15"
            )

    def to_json(self) -> dict[str, Any]:
        """The JSON form accepted by ``FANTASY_KG_LOCAL_API_FAULTS``."""
        return {
            "faults": [f.to_json() for f in self.faults],
            "results": {cid: o.to_json() for cid, o in self.results.items()},
            "thinking": self.thinking,
            "persist_counts": self.persist_counts,
            "claude_like": self.claude_like,
        }

    def to_json_text(self) -> str:
        """:meth:`to_json` as a string, ready for the environment variable."""
        return json.dumps(self.to_json())

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "FaultPlan":
        """Build a plan from its JSON form.

        Raises:
            ConfigError: on unknown keys, kinds or endpoints.
        """
        unknown = set(raw) - {"faults", "results", "thinking", "persist_counts", "claude_like"}
        if unknown:
            raise ConfigError(f"unknown keys in fault plan: {', '.join(sorted(unknown))}")
        try:
            return cls(
                faults=tuple(Fault.from_json(f) for f in raw.get("faults", [])),
                results={
                    str(cid): ResultOverride.from_json(o)
                    for cid, o in raw.get("results", {}).items()
                },
                thinking=bool(raw.get("thinking", False)),
                persist_counts=bool(raw.get("persist_counts", False)),
                claude_like=None if raw.get("claude_like") is None else float(raw["claude_like"]),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad fault plan: {exc}") from None

    @classmethod
    def load(cls, spec: str) -> "FaultPlan":
        """Parse inline JSON (starts with ``{``) or read the JSON file at path ``spec``.

        Raises:
            ConfigError: when the file is missing or the JSON is malformed.
        """
        text = spec.strip()
        if not text.startswith("{"):
            path = Path(text).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"cannot read fault plan {path} ({FAULTS_ENV}): {exc.strerror}"
                ) from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"fault plan ({FAULTS_ENV}) is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"fault plan ({FAULTS_ENV}) must be a JSON object")
        return cls.from_json(raw)

    @classmethod
    def from_env(cls) -> "FaultPlan | None":
        """The plan in ``FANTASY_KG_LOCAL_API_FAULTS``, or ``None`` when unset/empty."""
        spec = os.environ.get(FAULTS_ENV, "").strip()
        return cls.load(spec) if spec else None


class FaultInjector:
    """Runtime side of a :class:`FaultPlan`: counts calls and decides which fault applies."""

    def __init__(self, plan: FaultPlan | None, state_dir: Path) -> None:
        self.plan = plan or FaultPlan()
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._counts_file = state_dir / "fault_counts.json"
        self._counts_lock = state_dir / "fault_counts.lock"

    @contextmanager
    def _persisted(self) -> Iterator[dict[str, int]]:
        """The shared counter table, read-modify-written under a file lock."""
        self._counts_file.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self._counts_lock):
            try:
                counts: dict[str, int] = json.loads(self._counts_file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                counts = {}
            yield counts
            atomic_write_text(self._counts_file, json.dumps(counts))

    def _bump(self, key: str) -> int:
        """Return the current count for ``key`` and increment it."""
        if self.plan.persist_counts:
            with self._persisted() as counts:
                value = counts.get(key, 0)
                counts[key] = value + 1
                return value
        with self._lock:
            value = self._counts.get(key, 0)
            self._counts[key] = value + 1
            return value

    def next_call(self, endpoint: str) -> tuple[int, Fault | None]:
        """Count a call of ``endpoint``; return its index and the fault to apply, if any."""
        index = self._bump(f"call:{endpoint}")
        for fault in self.plan.faults:
            if fault.matches(endpoint, index):
                return index, fault
        return index, None

    def take_result_overrides(self, custom_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Overrides for the custom_ids of a new batch, consuming one use of each ``times``."""
        if not self.plan.results:
            return {}
        taken: dict[str, dict[str, Any]] = {}
        for cid in custom_ids:
            # fantasy_kg sends ``<section id>-<submission nonce>``; plans name the section.
            key = cid if cid in self.plan.results else _SUBMISSION_NONCE.sub("", cid)
            override = self.plan.results.get(key)
            if override is None:
                continue
            if override.times is not None and self._bump(f"result:{key}") >= override.times:
                continue
            taken[cid] = replace(override, times=None).to_json()
        return taken


@dataclass
class LoggedRequest:
    """One request as the server received it (credentials removed).

    Attributes:
        endpoint: Endpoint name (see :data:`ENDPOINTS`), or ``unknown``.
        method: HTTP method.
        path: URL path without the query.
        query: Parsed query parameters (last value wins).
        headers: Request headers, lower-cased names, without credentials.
        body: Parsed JSON body (``None`` for GET or unparsable bodies).
        call_index: 0-based index of this call for its endpoint.
        fault: The fault kind applied, if any.
        status: HTTP status sent (``None`` when the connection was dropped).
        pid: Process id of the server that answered (several processes may share a log file).
    """

    endpoint: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    call_index: int
    fault: str | None = None
    status: int | None = None
    pid: int = field(default_factory=os.getpid)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    """Lower-case header names and drop every header that can carry a credential."""
    return {k.lower(): v for k, v in headers.items() if k.lower() not in _SECRET_HEADERS}


class RequestLog:
    """Thread-safe in-memory request log, optionally mirrored to a JSONL file."""

    def __init__(self, file: Path | None = None, *, keep_in_memory: bool = True) -> None:
        self._entries: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self.file = file
        self.keep_in_memory = keep_in_memory

    def add(self, entry: LoggedRequest) -> None:
        """Record a finished request (called once its status is known)."""
        with self._lock:
            if self.keep_in_memory:
                self._entries.append(entry)
            if self.file is not None:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                line = json.dumps(entry.to_json(), default=str) + "\n"
                with (
                    file_lock(self.file.with_name(self.file.name + ".lock")),
                    open(self.file, "a", encoding="utf-8") as fh,
                ):
                    fh.write(line)

    def entries(self, endpoint: str | None = None) -> list[LoggedRequest]:
        """A copy of the log, optionally only one endpoint's requests."""
        with self._lock:
            items = list(self._entries)
        return [e for e in items if endpoint is None or e.endpoint == endpoint]

    def clear(self) -> None:
        """Forget the in-memory entries (the file, if any, is kept)."""
        with self._lock:
            self._entries.clear()


def read_request_log(state_dir: Path, endpoint: str | None = None) -> list[dict[str, Any]]:
    """Read ``<state_dir>/requests_log.jsonl`` written by servers in other processes.

    Args:
        state_dir: The server's state directory.
        endpoint: Keep only this endpoint's requests.

    Returns:
        The logged requests (dicts with the fields of :class:`LoggedRequest`), oldest first.
    """
    path = state_dir / REQUEST_LOG_FILE
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue  # a process killed mid-write leaves at most one partial line
        if endpoint is None or item.get("endpoint") == endpoint:
            out.append(item)
    return out
