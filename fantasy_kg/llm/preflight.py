"""Pre-flight: every check the API would apply, run before anything is sent (invariant 4).

custom_id pattern and uniqueness, context window, output cap, schema complexity, the
100,000-request / 256 MB envelope (split into several batches above it), and the cost estimate.
Why: docs/architecture.md, "Requests and pre-flight".
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fantasy_kg.domain import answer as answer_sizing
from fantasy_kg.domain.answer import AnswerSize
from fantasy_kg.domain.catalog import ModelInfo, get_model
from fantasy_kg.domain.errors import PreflightError
from fantasy_kg.domain.pricing import Cost, TokenUsage, price_usage
from fantasy_kg.llm.prompt_tokens import PromptTokens, unmargined
from fantasy_kg.llm.request_size import BodySizer, canonical_json
from fantasy_kg.llm.request_types import (
    API_VERSION,
    BATCH_BYTES_MARGIN,
    CUSTOM_ID_RE,
    MAX_BATCH_BYTES,
    MAX_REQUESTS_PER_BATCH,
    SAMPLING_API_VERSIONS,
    PreparedRequest,
    RequestMeta,
    as_prepared,
)

#: Strict-schema limits of the API: optional and union-typed parameters across the schema.
MAX_OPTIONAL_PARAMS = 24
MAX_UNION_PARAMS = 16


@dataclass(frozen=True)
class SchemaComplexity:
    """Counts the API limits for strict schemas (24 optional, 16 union-typed parameters)."""

    optional_params: int
    union_params: int


def schema_complexity(schema: dict[str, Any]) -> SchemaComplexity:
    """Count optional and union-typed properties across a JSON schema (``$defs`` included once)."""
    optional = 0
    union = 0

    def walk(node: Any) -> None:
        nonlocal optional, union
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                required = set(node.get("required", []))
                for name, prop in props.items():
                    if name not in required:
                        optional += 1
                    if isinstance(prop, dict) and (
                        "anyOf" in prop or "oneOf" in prop or isinstance(prop.get("type"), list)
                    ):
                        union += 1
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return SchemaComplexity(optional_params=optional, union_params=union)


@dataclass
class RequestEstimate:
    """Pre-flight numbers for one request.

    ``prompt_tokens`` and ``prefix_tokens`` are plain estimates (what billing will be near); the
    window check used the same counts plus the estimate's safety margin.
    """

    custom_id: str
    prompt_tokens: int
    prefix_tokens: int
    max_tokens: int
    bytes: int
    answer: AnswerSize | None = None

    @property
    def expected_output(self) -> int:
        """Expected billed output (answer + thinking), capped at ``max_tokens``."""
        if self.answer is None:
            return min(self.max_tokens, MIN_EXPECTED_OUTPUT)
        return min(self.max_tokens, self.answer.output_tokens)


@dataclass
class PreflightReport:
    """What pre-flight found: per-request numbers, batch split, cost estimate, warnings.

    Attributes:
        model: The catalog entry checked against.
        requests: One estimate per request, in input order.
        batches: Request indices per batch (several when 100,000 / 256 MB would be exceeded).
        estimated_cost: Expected cost (batch rate, real-time beside it); see :func:`estimate_cost`.
        worst_case_cost: Cost if every request used its whole ``max_tokens`` and no cache hit.
        warnings: Non-fatal findings (e.g. a prefix too short to be cached).
        token_count_method: ``estimate`` (or what the domain estimator reports).
        output_ratio: Expected answer tokens per section token used for the answer sizes.
    """

    model: ModelInfo
    requests: list[RequestEstimate]
    batches: list[list[int]]
    estimated_cost: Cost
    worst_case_cost: Cost
    warnings: list[str] = field(default_factory=list)
    token_count_method: str = "estimate"
    output_ratio: float = answer_sizing.DEFAULT_OUTPUT_RATIO

    @property
    def total_bytes(self) -> int:
        """Bytes of all request bodies."""
        return sum(r.bytes for r in self.requests)

    @property
    def largest_answer(self) -> AnswerSize | None:
        """The request whose expected answer needs the most of its ``max_tokens``."""
        sizes = [r.answer for r in self.requests if r.answer is not None]
        return max(sizes, key=lambda a: a.required_tokens / a.max_tokens, default=None)

    @property
    def expected_output_tokens(self) -> int:
        """Expected billed output of all requests (answers plus thinking)."""
        return sum(r.expected_output for r in self.requests)

    @property
    def expected_thinking_tokens(self) -> int:
        """Expected thinking tokens of all requests (billed as output)."""
        return sum(r.answer.thinking_tokens for r in self.requests if r.answer is not None)


def _section_name(body: dict[str, Any], meta: RequestMeta | None) -> str:
    if meta is not None and meta.section_path:
        return f"section {meta.file_name} (custom_id {meta.custom_id!r})"
    return f"request custom_id {body.get('custom_id')!r}"


#: Expected output of a request with no answer estimate (a bare prompt).
MIN_EXPECTED_OUTPUT = 1024


def estimate_cost(
    estimates: Sequence[RequestEstimate], model: ModelInfo, *, cache_hit_rate: float = 0.3
) -> Cost:
    """Expected cost of the requests at the batch rate (real-time equivalent beside it).

    Assumptions, chosen to err high: the cached prefix is written once with the 1-hour TTL and
    read by only ``cache_hit_rate`` of the other requests (the batch guide reports 30-98%); the
    others write it again. Output is the expected answer plus the thinking for the request's
    effort (:func:`fantasy_kg.domain.answer.expected_answer`; thinking is billed as output),
    capped at ``max_tokens``. A prefix below the model's minimum cacheable length is priced as
    plain input (the API silently does not cache it).
    """
    total = Cost(batch_usd=0.0, realtime_usd=0.0)
    # Requests with the same token numbers cost the same: each distinct (prompt, prefix, output,
    # first-or-not) is priced once and its terms are added in the original order, so the sum
    # is bit-for-bit what pricing every request would give, without three pydantic objects each.
    terms: dict[tuple[int, int, int, bool], tuple[float, ...]] = {}
    batch_usd, realtime_usd = total.batch_usd, total.realtime_usd
    for i, est in enumerate(estimates):
        key = (est.prompt_tokens, est.prefix_tokens, est.expected_output, i > 0)
        term = terms.get(key)
        if term is None:
            term = terms[key] = _cost_terms(est, model, cache_hit_rate, i > 0)
        if len(term) == 2:
            batch_usd = batch_usd + term[0]
            realtime_usd = realtime_usd + term[1]
        else:
            batch_usd = batch_usd + term[0] + term[1]
            realtime_usd = realtime_usd + term[2] + term[3]
    return Cost(batch_usd=batch_usd, realtime_usd=realtime_usd)


def _cost_terms(
    est: RequestEstimate, model: ModelInfo, cache_hit_rate: float, later: bool
) -> tuple[float, ...]:
    """What one request adds to :func:`estimate_cost`'s sums, as the terms it adds in order.

    Two terms (batch, real-time) when the prefix is too short to be cached; otherwise four:
    the cache-read and cache-write shares of the batch sum, then of the real-time sum.
    """
    body_tokens = max(0, est.prompt_tokens - est.prefix_tokens)
    out = est.expected_output
    if est.prefix_tokens < model.min_cacheable_prefix_tokens:
        # Too short to be cached: the prefix is plain input on every request.
        cost = price_usage(model, TokenUsage(input_tokens=est.prompt_tokens, output_tokens=out))
        return (cost.batch_usd, cost.realtime_usd)
    base = TokenUsage(input_tokens=body_tokens, output_tokens=out)
    write = price_usage(model, base + TokenUsage(cache_creation_1h_input_tokens=est.prefix_tokens))
    read = price_usage(model, base + TokenUsage(cache_read_input_tokens=est.prefix_tokens))
    hit = cache_hit_rate if later else 0.0
    return (
        hit * read.batch_usd,
        (1 - hit) * write.batch_usd,
        hit * read.realtime_usd,
        (1 - hit) * write.realtime_usd,
    )


def _worst_case(estimates: Sequence[RequestEstimate], model: ModelInfo) -> Cost:
    batch = realtime = 0.0
    costs: dict[tuple[int, int, int], Cost] = {}  # same numbers, same cost: price each once
    for est in estimates:
        key = (est.prompt_tokens, est.prefix_tokens, est.max_tokens)
        cost = costs.get(key)
        if cost is None:
            usage = TokenUsage(
                input_tokens=est.prompt_tokens - est.prefix_tokens,
                cache_creation_1h_input_tokens=est.prefix_tokens,
                output_tokens=est.max_tokens,
            )
            cost = costs[key] = price_usage(model, usage)
        batch += cost.batch_usd
        realtime += cost.realtime_usd
    return Cost(batch_usd=batch, realtime_usd=realtime)


def split_into_batches(
    sizes: Sequence[int],
    *,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BATCH_BYTES - BATCH_BYTES_MARGIN,
) -> list[list[int]]:
    """Group request indices (in order) into batches under both the count and the byte limit.

    Args:
        sizes: Byte size of each request body.
        max_requests: Requests per batch (API: 100,000).
        max_bytes: Body bytes per batch (API: 256 MB, minus a margin for the envelope).

    Raises:
        PreflightError: if a single request alone is larger than ``max_bytes``.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for i, size in enumerate(sizes):
        # ``,`` between requests plus the surrounding ``{"requests":[...]}``.
        cost = size + 1
        if cost > max_bytes:
            raise PreflightError(
                f"request #{i} is {size:,} bytes, above the {max_bytes:,}-byte batch limit: "
                "split the section into smaller sections"
            )
        if current and (len(current) >= max_requests or current_bytes + cost > max_bytes):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(i)
        current_bytes += cost
    if current:
        batches.append(current)
    return batches


def preflight(
    requests: Sequence[dict[str, Any] | PreparedRequest],
    model: str,
    *,
    max_requests: int = MAX_REQUESTS_PER_BATCH,
    max_bytes: int = MAX_BATCH_BYTES - BATCH_BYTES_MARGIN,
    output_ratio: float = answer_sizing.DEFAULT_OUTPUT_RATIO,
    api_version: str = API_VERSION,
    check_answer_fit: bool = True,
) -> PreflightReport:
    """Check requests against everything the API would reject, before any is sent.

    Beyond what the API rejects, a request whose expected answer cannot fit its ``max_tokens``
    (invariant 8) is refused too: it would come back cut at ``max_tokens`` a day later and cost a
    split, a resubmission and a second batch round.

    Args:
        requests: Bodies or prepared requests.
        model: The batch's model.
        max_requests: Requests per batch.
        max_bytes: Body bytes per batch.
        output_ratio: Expected answer tokens per section token.
        api_version: The ``anthropic-version`` the client sends; 2026-10-21 rejects sampling
            parameters on every model.
        check_answer_fit: Refuse requests whose expected answer does not fit (follow-up halves
            of a cut answer are sent regardless: splitting is the repair).

    Raises:
        PreflightError: one line naming the section (or custom_id) and why: bad or duplicate
            custom_id, prompt + max_tokens over the context window, max_tokens over the output
            cap, an expected answer over max_tokens, a sampling parameter the API version
            rejects, schema over the complexity limits, a request with no messages, or a model
            in the request that differs from ``model``.
        ConfigError: unknown model.
    """
    info = get_model(model)
    if not requests:
        raise PreflightError("nothing to submit: no requests (is the sections folder empty?)")
    prepared = as_prepared(requests)
    seen: dict[str, int] = {}
    estimates: list[RequestEstimate] = []
    warnings: list[str] = []
    schema_checked: set[str] = set()
    schema_ids: set[int] = set()  # schema objects already checked (requests share one)
    tokens = PromptTokens()
    sizer = BodySizer()
    model_ids: dict[str, str] = {}  # model name in a request -> catalog id, looked up once
    for i, req in enumerate(prepared):
        body, meta = req.body, req.meta
        where = _section_name(body, meta)
        cid = body.get("custom_id")
        if not isinstance(cid, str) or not CUSTOM_ID_RE.match(cid):
            raise PreflightError(
                f"{where}: custom_id must match ^[a-zA-Z0-9_-]{{1,64}}$ "
                f"(got {len(str(cid))} characters); use make_custom_id() to shorten it"
            )
        if cid in seen:
            raise PreflightError(
                f"{where}: custom_id {cid!r} is used twice (requests #{seen[cid]} and #{i}); "
                "custom_ids must be unique within a batch"
            )
        seen[cid] = i
        params = body.get("params")
        if not isinstance(params, dict) or not params.get("messages"):
            raise PreflightError(f"{where}: params has no messages")
        req_model = str(params.get("model", ""))
        req_id = model_ids.get(req_model) if req_model else info.id
        if req_id is None:
            req_id = model_ids[req_model] = get_model(req_model).id
        if req_id != info.id:
            raise PreflightError(
                f"{where}: request model {req_model!r} differs from the batch model {model!r}"
            )
        max_tokens = params.get("max_tokens")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise PreflightError(f"{where}: max_tokens must be an integer >= 1 in a batch")
        if max_tokens > info.max_output_tokens:
            raise PreflightError(
                f"{where}: max_tokens {max_tokens:,} > {info.max_output_tokens:,}, the output cap "
                f"of {info.id}; lower --max-tokens"
            )
        for banned in ("temperature", "top_p", "top_k"):
            if banned not in params:
                continue
            if api_version not in SAMPLING_API_VERSIONS:
                raise PreflightError(
                    f"{where}: API version {api_version} rejects {banned} on every model "
                    f"(the batch would return it errored); remove {banned} from the request"
                )
            if not info.accepts_sampling_params:
                raise PreflightError(f"{where}: {info.id} rejects {banned}; remove it")
        for banned in ("stream", "speed"):
            if banned in params:
                raise PreflightError(f"{where}: {banned!r} is not supported inside a batch")
        fmt = params.get("output_config", {}).get("format")
        if (
            isinstance(fmt, dict)
            and isinstance(fmt.get("schema"), dict)
            and id(fmt["schema"]) not in schema_ids
        ):
            schema_ids.add(id(fmt["schema"]))
            key = canonical_json(fmt["schema"])
            if key not in schema_checked:
                schema_checked.add(key)
                cx = schema_complexity(fmt["schema"])
                if cx.optional_params > MAX_OPTIONAL_PARAMS or cx.union_params > MAX_UNION_PARAMS:
                    raise PreflightError(
                        f"{where}: output schema has {cx.optional_params} optional and "
                        f"{cx.union_params} union-typed parameters; the API allows "
                        f"{MAX_OPTIONAL_PARAMS} and {MAX_UNION_PARAMS}: make fields required"
                    )
        prompt_tokens = tokens.prompt(params, info)
        prefix_tokens = tokens.prefix(params, info)
        if prompt_tokens + max_tokens > info.context_window:
            raise PreflightError(
                f"{where}: prompt ~{prompt_tokens:,} tokens + max_tokens {max_tokens:,} exceeds "
                f"the {info.context_window:,}-token context window of {info.id}; re-section with "
                "a smaller budget or lower --max-tokens"
            )
        # The counts above carry the estimate's safety margin (right for the window check);
        # the answer size and the cost are expectations, so they use the plain estimate.
        billed_prompt = unmargined(prompt_tokens)
        # The format's injected prompt comes first and is cached with the prefix.
        billed_prefix = (
            unmargined(prefix_tokens + tokens.format(params, info)) if prefix_tokens else 0
        )
        fmt_cfg = params.get("output_config")
        sent_effort = fmt_cfg.get("effort") if isinstance(fmt_cfg, dict) else None
        size = answer_sizing.expected_answer(
            max(0, billed_prompt - billed_prefix),
            info,
            max_tokens=max_tokens,
            effort=answer_sizing.effective_effort(
                info, sent_effort if isinstance(sent_effort, str) else None
            ),
            output_ratio=output_ratio,
        )
        if check_answer_fit and not size.fits and not (meta is not None and meta.split_of):
            raise PreflightError(
                f"{where}: {answer_sizing.describe_answer(size, output_ratio)}: the answer "
                f"would be cut; {answer_sizing.answer_fit_hint(size, info, output_ratio)}"
            )
        if 0 < prefix_tokens < info.min_cacheable_prefix_tokens and i == 0:
            warnings.append(
                f"cached prefix ~{prefix_tokens:,} tokens is below {info.id}'s minimum of "
                f"{info.min_cacheable_prefix_tokens:,}: it will not be cached"
            )
        estimates.append(
            RequestEstimate(
                custom_id=cid,
                prompt_tokens=billed_prompt,
                prefix_tokens=billed_prefix,
                max_tokens=max_tokens,
                bytes=sizer.size(body),
                answer=size,
            )
        )
    batches = split_into_batches(
        [e.bytes for e in estimates], max_requests=max_requests, max_bytes=max_bytes
    )
    return PreflightReport(
        model=info,
        requests=estimates,
        batches=batches,
        estimated_cost=estimate_cost(estimates, info),
        worst_case_cost=_worst_case(estimates, info),
        warnings=warnings,
        output_ratio=output_ratio,
    )
