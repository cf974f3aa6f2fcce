"""The local Anthropic-compatible HTTP server (127.0.0.1 only), in-process or standalone.

Why it works this way: docs/architecture.md, "The local backend".
"""

import atexit
import json
import logging
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fantasy_kg.domain.catalog import catalog
from fantasy_kg.domain.errors import ConfigError
from fantasy_kg.domain.paths import local_api_dir
from fantasy_kg.local_api.claude_like import ClaudeLikeResponder
from fantasy_kg.local_api.engine import (
    Answerer,
    BatchCache,
    CallContext,
    Responder,
    TimedCache,
    batch_result,
    count_tokens,
    default_responder,
    resolve_model,
    validate_params,
)
from fantasy_kg.local_api.faults import (
    REQUEST_LOG_ENV,
    REQUEST_LOG_FILE,
    Fault,
    FaultInjector,
    FaultPlan,
    LoggedRequest,
    RequestLog,
    redact_headers,
)
from fantasy_kg.local_api.protocol import (
    API_VERSIONS,
    ApiError,
    Clock,
    invalid_request,
    new_id,
    not_found,
    utc_now,
)
from fantasy_kg.local_api.routes import model_object, page, page_limit, route
from fantasy_kg.local_api.store import (
    MAX_REQUESTS,
    BatchOptions,
    BatchStore,
    default_queue_seconds,
    validate_create_body,
)

log = logging.getLogger(__name__)

LOCAL_HOST = "127.0.0.1"
MAX_BATCH_BODY_BYTES = 256 * 1024 * 1024
MAX_MESSAGES_BODY_BYTES = 32 * 1024 * 1024
_MAX_OTHER_BODY_BYTES = 1024 * 1024
_DRAIN_CHUNK = 1024 * 1024
_BANNER = "local Anthropic-compatible API listening on {url} ({mode}, not Claude)"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128  # real-time mode opens many connections at once

    def __init__(self, app: "LocalServer", port: int) -> None:
        self.app = app
        super().__init__((LOCAL_HOST, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout, SIGKILL) is routine here: no traceback on stderr."""
        if isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            log.debug("local API: client %s went away before the answer", client_address)
            return
        super().handle_error(request, client_address)


class _Dropped(Exception):
    """Close the connection without an answer."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fantasy-kg-local-api"
    timeout = 120  # idle keep-alive connections are closed after this many seconds
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    # ---- plumbing -----------------------------------------------------------------------------

    def _send(self, status: int, payload: Any, request_id: str, headers: dict[str, str]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("request-id", request_id)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _send_error(self, error: ApiError, request_id: str) -> None:
        self._send(error.status, error.body(request_id), request_id, error.headers)

    def _stream_lines(self, lines: list[bytes], request_id: str, cut_after: int | None) -> None:
        """Send JSONL with chunked encoding; with ``cut_after``, close after that many lines."""
        self.send_response(200)
        self.send_header("content-type", "application/x-jsonl")
        self.send_header("request-id", request_id)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        chunk: list[bytes] = []
        size = 0
        for i, line in enumerate(lines):
            if cut_after is not None and i >= cut_after:
                break
            chunk.append(line)
            size += len(line)
            if cut_after is not None or size >= 64 * 1024:
                self._write_chunk(b"".join(chunk))
                chunk, size = [], 0
        if cut_after is not None:
            self.wfile.flush()
            self.close_connection = True
            return
        if chunk:
            self._write_chunk(b"".join(chunk))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _drain(self, length: int) -> None:
        remaining = length
        while remaining > 0:
            got = self.rfile.read(min(_DRAIN_CHUNK, remaining))
            if not got:
                break
            remaining -= len(got)

    # ---- the request cycle --------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        app = self.server.app
        request_id = new_id("req_")
        if app.stopped:
            self.close_connection = True
            return
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        headers: dict[str, str] = {}
        for name in self.headers:
            # Repeated headers (``anthropic-beta`` may be) are joined like HTTP says they may be.
            if name not in headers:
                headers[name] = ", ".join(self.headers.get_all(name) or [])
        routed = route(method, url.path)
        endpoint, path_id = routed if routed else ("unknown", None)
        length = int(self.headers.get("content-length") or 0)
        limit = app.body_limit(endpoint)
        entry = LoggedRequest(
            endpoint=endpoint,
            method=method,
            path=url.path,
            query=query,
            headers=redact_headers(headers),
            body=None,
            call_index=-1,
        )
        if length > limit:
            # Like Cloudflare in front of the real API: rejected before the API sees it.
            self._drain(length)
            self.close_connection = True
            entry.status = 413
            app.request_log.add(entry)
            self._send_error(
                ApiError(
                    413,
                    f"Request exceeds the maximum allowed number of bytes ({limit}) for this "
                    "endpoint",
                    "request_too_large",
                ),
                request_id,
            )
            return
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        body_error: ApiError | None = None
        if raw:
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                body_error = invalid_request(
                    "There was an issue with your request body: invalid JSON"
                )
        entry.body = body
        entry.call_index, fault = app.faults.next_call(endpoint)
        entry.fault = fault.kind if fault else None
        try:
            if fault and fault.kind == "slow":
                time.sleep(fault.seconds)
            if fault and fault.kind == "drop":
                raise _Dropped
            if fault and fault.kind == "error":
                raise fault.api_error()
            if routed is None:
                raise not_found(f"Not found: {method} {url.path}")
            app.check_auth(headers)
            version = app.check_version(headers)
            if body_error is not None:
                raise body_error
            result = app.dispatch(endpoint, path_id, query, body, headers, version, fault)
            if fault and fault.kind == "accept_then_drop":
                raise _Dropped
            if fault and fault.kind == "accept_then_error":
                raise fault.api_error()
        except _Dropped:
            self.close_connection = True
            app.request_log.add(entry)
            return
        except ApiError as exc:
            entry.status = exc.status
            app.request_log.add(entry)
            self._send_error(exc, request_id)
            return
        except Exception:
            log.exception("local API: %s %s failed", method, url.path)
            entry.status = 500
            app.request_log.add(entry)
            self._send_error(ApiError(500, "Internal server error"), request_id)
            return
        entry.status = 200
        app.request_log.add(entry)
        if isinstance(result, _Lines):
            cut = fault.lines if fault and fault.kind == "cut_stream" else None
            self._stream_lines(result.lines, request_id, cut)
        else:
            self._send(200, result, request_id, {})


class _Lines:
    """A JSONL response (streamed with chunked encoding)."""

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines


class LocalServer:
    """One running instance of the local API (use :func:`start_local_server`).

    Args:
        state_dir: Batch state directory (default: ``<data dir>/local_api``).
        port: TCP port on 127.0.0.1 (0 = a free port).
        faults: Fault plan; ``None`` reads ``FANTASY_KG_LOCAL_API_FAULTS`` (unset = no faults).
        responder: Where answers come from (default: the fault plan's choice, i.e. the
            baseline extractor, or the Claude-like responder when the plan sets ``claude_like``).
        host: Must be ``127.0.0.1``; anything else is refused.
        clock: Current time, injectable for expiry and archive tests.
        require_key: When set, only this API key is accepted (others get 401).
        min_processing_seconds: Batches do not end before this long after creation.
        queue_seconds: No request of a batch runs before this long after creation (a cancel
            until then cancels every request). ``None``: half of ``min_processing_seconds``, at
            most 2 s, and 0 with an injected ``clock`` (see :func:`default_queue_seconds`).
        per_request_seconds: Simulated processing time per batch request (real sleep).
        max_batch_body_bytes: 413 above this create body size (256 MB like the real API).
        max_batch_requests: 400 above this many requests (100,000 like the real API).
        process_batches: Whether this instance answers batch requests (False: only ends batches
            on cancel/expiry; lets tests hold a batch in progress).
        advance_on_read_seconds: How long a retrieve may spend processing the polled batch, so a
            short-lived CLI process still sees progress.
        log_requests_to_file: Mirror the request log to ``<state_dir>/requests_log.jsonl``
            (default: when ``FANTASY_KG_LOCAL_API_LOG`` is set or the faults come from the env).
        record_requests: Keep the request log in memory (``.requests_log``); long-lived
            production servers turn it off so request bodies do not pile up.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        port: int = 0,
        faults: FaultPlan | None = None,
        responder: Responder | None = None,
        *,
        host: str = LOCAL_HOST,
        clock: Clock = utc_now,
        require_key: str | None = None,
        min_processing_seconds: float = 0.0,
        per_request_seconds: float = 0.0,
        queue_seconds: float | None = None,
        max_batch_body_bytes: int = MAX_BATCH_BODY_BYTES,
        max_batch_requests: int = MAX_REQUESTS,
        process_batches: bool = True,
        advance_on_read_seconds: float = 1.0,
        log_requests_to_file: bool | None = None,
        record_requests: bool = True,
        worker_poll_seconds: float = 0.05,
    ) -> None:
        if host != LOCAL_HOST:
            raise ConfigError(
                f"refusing to bind the local API to {host!r}: it only listens on {LOCAL_HOST}"
            )
        self.state_dir = (state_dir or local_api_dir()).expanduser().resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        from_env = faults is None and FaultPlan.from_env() is not None
        plan = faults if faults is not None else FaultPlan.from_env()
        self.faults = FaultInjector(plan, self.state_dir)
        self.clock = clock
        self.store = BatchStore(self.state_dir, clock)
        self._responder_given = responder is not None
        self.answerer = Answerer(
            responder or plan_responder(self.faults.plan), self.faults.plan.thinking
        )
        self.timed_cache = TimedCache(clock)
        self.require_key = require_key
        if queue_seconds is None:
            queue_seconds = default_queue_seconds(
                min_processing_seconds, wall_clock=clock is utc_now
            )
        self.options = BatchOptions(min_processing_seconds, per_request_seconds, queue_seconds)
        self.max_batch_body_bytes = max_batch_body_bytes
        self.max_batch_requests = max_batch_requests
        self.process_batches = process_batches
        self.advance_on_read_seconds = advance_on_read_seconds
        self.worker_poll_seconds = worker_poll_seconds
        if log_requests_to_file is None:
            env_log = os.environ.get(REQUEST_LOG_ENV, "").strip()
            log_requests_to_file = from_env or env_log not in ("", "0")
        self.request_log = RequestLog(
            self.state_dir / REQUEST_LOG_FILE if log_requests_to_file else None,
            keep_in_memory=record_requests,
        )
        self.stopped = False
        self._stop = threading.Event()
        self._httpd = _HTTPServer(self, port)
        self.port: int = self._httpd.server_address[1]
        self.base_url = f"http://{LOCAL_HOST}:{self.port}"
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> "LocalServer":
        """Serve in daemon threads (HTTP + batch worker) and announce it in the log."""
        serve = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"local-api-{self.port}",
            daemon=True,
        )
        worker = threading.Thread(
            target=self._worker_loop, name=f"local-api-worker-{self.port}", daemon=True
        )
        self._threads = [serve, worker]
        for thread in self._threads:
            thread.start()
        log.info(_BANNER.format(url=self.base_url, mode=self.mode))
        return self

    def stop(self) -> None:
        """Stop serving (idempotent). Batches on disk stay; another instance can continue them."""
        if self.stopped:
            return
        self.stopped = True
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Run in the foreground until interrupted (``fantasy-kg local-api``)."""
        self.start()
        try:
            while not self._stop.wait(0.5):
                pass
        finally:
            self.stop()

    # ---- test helpers -------------------------------------------------------------------------

    @property
    def requests_log(self) -> list[LoggedRequest]:
        """Every request this instance received, oldest first (credentials removed)."""
        return self.request_log.entries()

    def requests_to(self, endpoint: str) -> list[LoggedRequest]:
        """Requests to one endpoint (e.g. ``batches.create``)."""
        return self.request_log.entries(endpoint)

    def set_faults(self, plan: FaultPlan | None) -> None:
        """Replace the fault plan on a running server (call counts restart at 0)."""
        self.faults = FaultInjector(plan, self.state_dir)
        self.answerer.thinking_always = self.faults.plan.thinking
        if not self._responder_given:
            self.answerer.responder = plan_responder(self.faults.plan)

    @property
    def mode(self) -> str:
        """What answers: ``baseline extractor``, ``Claude-like emulation (output ratio r)``, ..."""
        responder = self.answerer.responder
        if isinstance(responder, ClaudeLikeResponder):
            return f"Claude-like emulation, output ratio {responder.output_ratio:g}"
        if responder is default_responder:
            return "baseline extractor"
        return "custom responder"

    def billed_usage(self) -> dict[str, dict[str, int]]:
        """Usage this instance billed, per model (see :meth:`Answerer.billed_usage`).

        Counts what this process answered: real-time calls, and batch requests its worker
        processed (another server sharing the state directory may have processed some).
        """
        return self.answerer.billed_usage()

    # ---- request handling ---------------------------------------------------------------------

    def body_limit(self, endpoint: str) -> int:
        """Largest body accepted by an endpoint (the real API's per-endpoint limits)."""
        if endpoint == "batches.create":
            return self.max_batch_body_bytes
        if endpoint in ("messages.create", "messages.count_tokens"):
            return MAX_MESSAGES_BODY_BYTES
        return _MAX_OTHER_BODY_BYTES

    def check_auth(self, headers: dict[str, str]) -> None:
        """Accept ``x-api-key`` or ``Authorization: Bearer``; any non-empty key unless pinned.

        Raises:
            ApiError: 401 ``authentication_error`` (the key itself is never echoed).
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        key = lowered.get("x-api-key", "").strip()
        auth = lowered.get("authorization", "").strip()
        if not key and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
        if not key:
            raise ApiError(
                401,
                "x-api-key header is required (or Authorization: Bearer <key>)",
                "authentication_error",
            )
        if self.require_key is not None and key != self.require_key:
            raise ApiError(401, "invalid x-api-key", "authentication_error")

    def check_version(self, headers: dict[str, str]) -> str:
        """Return the request's ``anthropic-version`` if supported.

        Raises:
            ApiError: 400 when missing or unknown.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        version = lowered.get("anthropic-version", "").strip()
        if not version:
            raise invalid_request("anthropic-version: header is required")
        if version not in API_VERSIONS:
            raise invalid_request(
                f"anthropic-version: {version!r} is not a valid version; use one of "
                f"{', '.join(API_VERSIONS)}"
            )
        return version

    def dispatch(
        self,
        endpoint: str,
        path_id: str | None,
        query: dict[str, str],
        body: Any,
        headers: dict[str, str],
        version: str,
        fault: Fault | None,
    ) -> "dict[str, Any] | _Lines":
        """Run one endpoint; raises :class:`ApiError` for API errors."""
        lowered = {k.lower(): v for k, v in headers.items()}
        betas = tuple(b.strip() for b in lowered.get("anthropic-beta", "").split(",") if b.strip())
        if endpoint == "messages.create":
            ctx = CallContext(version, betas, in_batch=False)
            model, shape = validate_params(body, ctx)
            override = fault.result.to_json() if fault and fault.result else None
            return self.answerer.message(body, model, shape, self.timed_cache, "standard", override)
        if endpoint == "messages.count_tokens":
            return {"input_tokens": count_tokens(body, CallContext(version, betas))}
        if endpoint == "models.list":
            return self._models_page(query)
        if endpoint == "models.retrieve":
            return model_object(resolve_model(path_id))
        if endpoint == "batches.create":
            requests = validate_create_body(body, self.max_batch_requests)
            ids = [r["custom_id"] for r in requests]
            overrides = self.faults.take_result_overrides(ids)
            if self.faults.plan.thinking:
                for cid in ids:
                    overrides.setdefault(cid, {"kind": "thinking"})
            record = self.store.create(
                requests,
                api_version=version,
                betas=betas,
                options=self.options,
                overrides=overrides,
            )
            return self.store.public(record, self.base_url)
        if endpoint == "batches.list":
            return self._batches_page(query)
        assert path_id is not None
        if endpoint == "batches.retrieve":
            self.store.advance(
                path_id,
                self._process,
                budget_seconds=self.advance_on_read_seconds,
                process_requests=self.process_batches,
            )
            return self.store.public(self.store.load(path_id), self.base_url)
        if endpoint == "batches.cancel":
            record = self.store.cancel(path_id)
            return self.store.public(record, self.base_url)
        if endpoint == "batches.delete":
            self.store.delete(path_id)
            return {"id": path_id, "type": "message_batch_deleted"}
        if endpoint == "batches.results":
            self.store.advance(
                path_id, self._process, budget_seconds=0.0, process_requests=self.process_batches
            )
            return _Lines(self.store.result_lines(path_id))
        raise not_found(f"Not found: {endpoint}")

    def _models_page(self, query: dict[str, str]) -> dict[str, Any]:
        limit = page_limit(query)
        models = [model_object(m) for m in catalog().models]
        ids = [m["id"] for m in models]
        after, before = query.get("after_id"), query.get("before_id")
        if after:
            if after not in ids:
                raise invalid_request(f"after_id: unknown model id {after!r}")
            start = ids.index(after) + 1
            chunk = models[start : start + limit]
            return page(chunk, start + limit < len(models))
        if before:
            if before not in ids:
                raise invalid_request(f"before_id: unknown model id {before!r}")
            end = ids.index(before)
            return page(models[max(0, end - limit) : end], end - limit > 0)
        return page(models[:limit], limit < len(models))

    def _batches_page(self, query: dict[str, str]) -> dict[str, Any]:
        limit = page_limit(query)
        records, has_more = self.store.list_page(
            after_id=query.get("after_id"), before_id=query.get("before_id"), limit=limit
        )
        data = []
        for record in records:
            if record["processing_status"] != "ended":
                self.store.advance(
                    record["id"],
                    self._process,
                    budget_seconds=0.0,
                    process_requests=self.process_batches,
                )
                record = self.store.load(record["id"])
            data.append(self.store.public(record, self.base_url))
        return page(data, has_more)

    def _process(
        self, record: dict[str, Any], request: dict[str, Any], cache: BatchCache
    ) -> dict[str, Any]:
        ctx = CallContext(str(record["api_version"]), tuple(record.get("betas") or ()), True)
        override = (record.get("overrides") or {}).get(request["custom_id"])
        label = f"custom_id {request.get('custom_id')}"
        return batch_result(self.answerer, request.get("params"), ctx, cache, override, label)

    def _worker_loop(self) -> None:
        """Claim unfinished batches (any process's) and process them until stopped."""
        try:
            self.store.rescan()
        except OSError:
            log.exception("local API: rescan of %s failed", self.state_dir)
        while not self._stop.is_set():
            progressed = False
            try:
                for batch_id in self.store.active_ids():
                    if self._stop.is_set():
                        break
                    progressed |= self.store.advance(
                        batch_id,
                        self._process,
                        budget_seconds=0.5,
                        process_requests=self.process_batches,
                        should_stop=self._stop.is_set,
                    )
            except Exception:
                log.exception("local API worker: unexpected error; continuing")
            if not progressed:
                self._stop.wait(self.worker_poll_seconds)


def plan_responder(plan: FaultPlan) -> Responder:
    """The responder a fault plan asks for: Claude-like at its ratio, else the baseline."""
    if plan.claude_like is not None:
        return ClaudeLikeResponder(plan.claude_like)
    return default_responder


def start_local_server(
    state_dir: Path | None = None,
    port: int = 0,
    faults: FaultPlan | None = None,
    responder: Responder | None = None,
    **options: Any,
) -> LocalServer:
    """Start a local API server in daemon threads and return it (also a context manager).

    Args:
        state_dir: Batch state directory (default ``<data dir>/local_api``).
        port: Port on 127.0.0.1; 0 picks a free one (see ``.base_url``).
        faults: Fault plan (``None``: from ``FANTASY_KG_LOCAL_API_FAULTS`` if set).
        responder: Answer source (default: the baseline extractor, or Claude-like when the
            fault plan sets ``claude_like``).
        **options: Further :class:`LocalServer` keyword options (``clock``, ``require_key``,
            ``min_processing_seconds``, ``per_request_seconds``, ``max_batch_body_bytes``, ...).

    Returns:
        The running server: ``.base_url``, ``.requests_log``, ``.stop()``.
    """
    return LocalServer(state_dir, port, faults, responder, **options).start()


_SINGLETONS: dict[Path, LocalServer] = {}
_SINGLETON_LOCK = threading.Lock()


def ensure_local_server(data_dir: Path | None = None) -> str:
    """Base URL of this process's local server for a data directory, started on first use.

    Backend selection calls this when no API key is configured: the server runs in this process
    on a free port, keeps its batches under ``<data_dir>/local_api`` and stops at exit (batches
    survive on disk for the next process).
    """
    state_dir = local_api_dir(data_dir).expanduser().resolve()
    with _SINGLETON_LOCK:
        server = _SINGLETONS.get(state_dir)
        if server is None or server.stopped:
            server = start_local_server(state_dir, record_requests=False)
            _SINGLETONS[state_dir] = server
            atexit.register(server.stop)
        return server.base_url
