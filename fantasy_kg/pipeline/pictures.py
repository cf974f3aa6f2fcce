"""Static pictures for Dagster metadata: the main characters' network and planned vs actual cost.

The Dagster UI renders Markdown metadata (images included) but not charts from data, and no
browser runs inside a materialization, so the pictures are drawn here as PNG with matplotlib's
Agg backend (no display, no network) and shown as inline ``data:`` images in Markdown metadata;
the same bytes are written next to the view so the file path works too.
"""

import base64
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from fantasy_kg.pipeline.view import force_layout

PERSON_TYPES = ("Character", "Person")
"""Entity types that count as characters (the ``character_network`` view uses the same)."""


def _pyplot() -> ModuleType:
    """Matplotlib's pyplot on the Agg backend, imported on first use.

    Imported lazily because this module is loaded with the code location: every run worker and
    ``dg check defs`` would otherwise pay matplotlib's import (~0.3-0.6 s) for two pictures that
    only ``graph_view`` and ``cost_summary`` draw.
    """
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return buf.getvalue()


def markdown_image(png: bytes, alt: str) -> str:
    """A Markdown image whose source is the PNG itself (``data:`` URI), for Dagster metadata."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def network_png(payload: dict[str, Any], *, top: int = 25) -> bytes:
    """The main characters' network of a view payload as a PNG.

    The ``top`` characters by mentions (all entity types when the series has no characters),
    linked by every relationship between them; node area follows mentions, edge width the
    number of evidence quotes, edge colour the relationship type (as on the HTML page).
    """
    nodes = [n for n in payload["nodes"] if n["type"] in PERSON_TYPES] or list(payload["nodes"])
    chosen = sorted(nodes, key=lambda n: (-n["mentions"], n["name"]))[:top]
    index = {n["id"]: i for i, n in enumerate(chosen)}
    colors = {t["name"]: t["color"] for t in payload["relationship_types"]}
    weight: dict[tuple[int, int], int] = defaultdict(int)
    kinds: dict[tuple[int, int], str] = {}
    for e in payload["edges"]:
        a, b = index.get(e["source"]), index.get(e["target"])
        if a is None or b is None or a == b:
            continue
        key = (min(a, b), max(a, b))
        weight[key] += max(1, int(e["evidence_count"]))
        kinds.setdefault(key, e["type"])
    links = [(a, b, 1.0 + math.log1p(w)) for (a, b), w in sorted(weight.items())]
    xy = force_layout(len(chosen), links, seed=len(chosen), iterations=120)
    from matplotlib.lines import Line2D

    fig, ax = _pyplot().subplots(figsize=(9, 6.5))
    ax.set_axis_off()
    title = f"{payload['series']}: main characters ({len(chosen)} of {len(payload['nodes'])})"
    ax.set_title(title + f" — made by {payload['made_by']}", fontsize=10)
    if not chosen:
        ax.text(0.5, 0.5, "no entities", ha="center", va="center")
        return _png(fig)
    for (a, b), w in sorted(weight.items()):
        ax.plot(
            [xy[a, 0], xy[b, 0]],
            [xy[a, 1], xy[b, 1]],
            color=colors.get(kinds[(a, b)], "#999999"),
            linewidth=0.8 + 1.5 * math.log1p(w),
            alpha=0.7,
            zorder=1,
        )
    most = max(1, max(n["mentions"] for n in chosen))
    ax.scatter(
        xy[:, 0],
        xy[:, 1],
        s=[60 + 900 * n["mentions"] / most for n in chosen],
        c="#4e79a7",
        edgecolors="white",
        linewidths=1.0,
        zorder=2,
    )
    for i, n in enumerate(chosen):
        ax.annotate(
            n["name"],
            (float(xy[i, 0]), float(xy[i, 1])),
            textcoords="offset points",
            xytext=(0, -14),
            ha="center",
            fontsize=8,
            zorder=3,
        )
    used = sorted({kinds[k] for k in weight})
    if used:
        ax.legend(
            handles=[Line2D([0], [0], color=colors.get(t, "#999999"), lw=2, label=t) for t in used],
            loc="lower left",
            fontsize=7,
            frameon=False,
        )
    ax.margins(0.08)
    return _png(fig)


@dataclass(frozen=True)
class CostBar:
    """Planned and actual dollars of one model's attempt (one batch round of a series)."""

    model: str
    attempt: int
    planned_usd: float
    actual_usd: float
    billed: bool


def cost_chart_png(bars: Sequence[CostBar], *, series: str) -> bytes:
    """Planned (pre-flight) vs actual cost per model and attempt as a grouped bar chart."""
    from matplotlib.patches import Patch

    fig, ax = _pyplot().subplots(figsize=(max(5.0, 1.4 * len(bars) + 2), 3.6))
    labels = [f"{b.model}\nattempt {b.attempt}" for b in bars]
    x = list(range(len(bars)))
    planned = [b.planned_usd for b in bars]
    actual = [b.actual_usd for b in bars]
    ax.bar([i - 0.2 for i in x], planned, width=0.4, color="#bab0ac", label="planned")
    ax.bar(
        [i + 0.2 for i in x],
        actual,
        width=0.4,
        color=["#4e79a7" if b.billed else "#f28e2b" for b in bars],
        label="actual",
    )
    for i, (p, a) in enumerate(zip(planned, actual, strict=True)):
        ax.annotate(f"${p:,.4f}", (i - 0.2, p), ha="center", va="bottom", fontsize=7)
        ax.annotate(f"${a:,.4f}", (i + 0.2, a), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("USD")
    local = any(not b.billed for b in bars)
    ax.set_title(
        f"{series}: planned vs actual cost"
        + (" (orange: local backend, priced as the model, not billed)" if local else ""),
        fontsize=9,
    )
    handles = [Patch(color="#bab0ac", label="planned (pre-flight)")]
    handles.append(Patch(color="#4e79a7", label="actual (billed)"))
    if local:
        handles.append(Patch(color="#f28e2b", label="actual (local, not billed)"))
    ax.legend(handles=handles, fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    if not bars:
        ax.text(0.5, 0.5, "no batches yet", ha="center", va="center", transform=ax.transAxes)
    return _png(fig)
