"""Scenario 2, request building at the batch limit: 100,000 requests against ``json.dumps``.

Subject: what ``AnthropicBatchProvider.create_batches`` does before anything leaves the machine:
``build_section_request`` for every section (prompt with the cached prefix, structured-output
schema) and ``preflight`` (custom_ids, context window, output cap, schema limits, token and cost
estimate, and the split into batches under 100,000 requests and 256 MB).
Baseline: ``json.dumps`` of the very same request bodies, the least any client must do to send
them.

"Realistic size": each request carries the sample series' real prompt prefix and ontology, the
real output schema, and about 8,000 characters (~2,000 tokens) of Oz prose. With 100,000
requests that is well above 256 MB, so the split is exercised. Larger sections would mean fewer
requests for the same library; 100,000 small ones is the worst case for per-request overhead.
"""

import json
import re
from typing import Any

from bench import corpus
from bench.harness import REPO_ROOT, Case, Context, Target, Variant

NAME = "requests"
TITLE = "Request building"
FULL_REQUESTS = 100_000
QUICK_REQUESTS = 5_000
CHUNK_CHARS = 8_000
SERIES = "bench_shelf"
TARGET = Target(metric="ratio", limit=2.0, text="≤ 2× json.dumps")


def _chunks(text: str, size: int) -> list[str]:
    """Cut prose into pieces of about ``size`` characters at paragraph boundaries."""
    out: list[str] = []
    current: list[str] = []
    length = 0
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        current.append(para)
        length += len(para) + 2
        if length >= size:
            out.append("\n\n".join(current))
            current, length = [], 0
    if current:
        out.append("\n\n".join(current))
    return [c for c in out if len(c) >= size // 2]


def prepare(ctx: Context) -> dict[str, Any]:
    """Cut Oz (or synthetic prose when the corpus is absent) into ~8,000-character texts."""
    base = ctx.scenario_dir(NAME)
    oz = corpus.oz_dir()
    if oz is not None:
        text = "\n\n".join(p.read_text(encoding="utf-8") for p in corpus.book_files(oz))
        source = "Oz"
    else:
        from bench import synth

        plan = synth.SectionPlan("synthetic", "Synthetic", 1, 400_000)
        text, _ = synth.build_section(plan, synth.make_cast("synthetic"))
        source = "synthetic prose"
    chunks = _chunks(text, CHUNK_CHARS)
    (base / "chunks.json").write_text(json.dumps(chunks), encoding="utf-8")
    info = {"source": source, "chunks": len(chunks)}
    (base / "prepared.json").write_text(json.dumps(info), encoding="utf-8")
    return info


def cases(ctx: Context) -> list[Case]:
    """One case: 100,000 requests (10,000 in quick mode)."""
    info = json.loads((ctx.scenario_dir(NAME) / "prepared.json").read_text(encoding="utf-8"))
    n = QUICK_REQUESTS if ctx.quick else FULL_REQUESTS
    return [
        Case(
            scenario=NAME,
            name=f"{n:,} requests" + (" (quick: 5 % of the full case)" if ctx.quick else ""),
            input_desc=f"{n:,} sections of ~{CHUNK_CHARS:,} chars of {info['source']}",
            size=float(n),
            unit="req",
            targets=[TARGET],
            repeats_full=3,
            repeats_quick=1,
            params={"requests": n},
            subject_label="build_section_request + preflight",
            baseline_label="json.dumps",
        )
    ]


def _ontology() -> Any:
    from fantasy_kg.domain.schemas import default_ontology, load_ontology

    path = REPO_ROOT / "data" / "schemas" / "ashen_crown_schema.json"
    return load_ontology(path) if path.is_file() else default_ontology(SERIES)


def _sections(n: int, ctx: Context) -> list[Any]:
    """``n`` in-memory section files cycling over the prepared texts (built untimed)."""
    from fantasy_kg.domain.sections import SectionFile, SectionMeta, text_sha256
    from fantasy_kg.domain.text.tokens import estimate_method, estimate_tokens

    texts = json.loads((ctx.scenario_dir(NAME) / "chunks.json").read_text(encoding="utf-8"))
    facts = [(estimate_tokens(t), text_sha256(t)) for t in texts]
    method = estimate_method()
    folder = ctx.scenario_dir(NAME) / "sections"
    out = []
    for i in range(1, n + 1):
        k = (i - 1) % len(texts)
        tokens, sha = facts[k]
        meta = SectionMeta(
            series=SERIES,
            series_name="Bench Shelf",
            section=i,
            books=[f"Book {1 + (i - 1) // 500}"],
            input_tokens=tokens,
            token_count_method=method,
            sha256=sha,
            chars=len(texts[k]),
        )
        out.append(
            SectionFile(meta=meta, text=texts[k], path=folder / f"{SERIES}_section_{i:06d}.txt")
        )
    return out


def variants(case: Case, ctx: Context) -> dict[str, Variant]:
    """Subject builds and pre-flights; baseline serializes the subject's bodies."""
    from fantasy_kg.domain.catalog import default_model, get_model
    from fantasy_kg.llm.requests import MAX_BATCH_BYTES, build_section_request, preflight
    from fantasy_kg.pipeline.sections import default_max_tokens

    model = default_model()
    max_tokens = default_max_tokens(get_model(model))
    ontology = _ontology()
    sections = _sections(case.params["requests"], ctx)

    def build() -> list[Any]:
        return [build_section_request(s, ontology, model, max_tokens) for s in sections]

    def subject(_: None) -> dict[str, Any]:
        prepared = build()
        report = preflight(prepared, model)
        batch_bytes = [sum(report.requests[i].bytes for i in b) for b in report.batches]
        assert max(batch_bytes) < MAX_BATCH_BYTES
        return {
            "requests": len(prepared),
            "batches": len(report.batches),
            "total_bytes": report.total_bytes,
            "largest_batch_bytes": max(batch_bytes),
            "largest_batch_requests": max(len(b) for b in report.batches),
            "estimated_batch_usd": round(report.estimated_cost.batch_usd, 2),
        }

    cached: list[Any] = []

    def baseline_setup() -> list[Any]:
        if not cached:
            cached.extend(p.body for p in build())
        return cached

    def baseline(bodies: list[Any]) -> dict[str, Any]:
        total = 0
        for body in bodies:
            total += len(json.dumps(body))
        return {"requests": len(bodies), "total_chars": total}

    return {
        "subject": Variant(run=subject, label=case.subject_label),
        "baseline": Variant(run=baseline, setup=baseline_setup, label=case.baseline_label),
    }
