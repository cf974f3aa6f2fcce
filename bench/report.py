"""Render results as tables: rich on a terminal, Markdown for the README, plain text otherwise.

Two tables: timed rows (wall time, throughput, memory, baseline, ratio, target) and cost rows
(dollars per series and model at real-time, batch, and batch with the shared prefix cached).
"""

import math
from pathlib import Path
from typing import Any

TIMED_COLUMNS = [
    "scenario",
    "case",
    "input",
    "wall (median)",
    "throughput",
    "peak RSS",
    "baseline",
    "ratio",
    "target",
    "met",
]
COST_COLUMNS = [
    "series",
    "model",
    "sections",
    "input tok",
    "output tok (est.)",
    "real-time",
    "batch",
    "batch + cache",
    "vs real-time",
    "check",
]


def fmt_seconds(value: Any) -> str:
    """``0.042`` → ``42 ms``; ``3.21`` → ``3.21 s``; ``95`` → ``95.0 s``."""
    if not isinstance(value, int | float) or math.isnan(value):
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 10:
        return f"{value:.2f} s"
    return f"{value:.1f} s"


def fmt_number(value: Any, digits: int = 0) -> str:
    """Thousands separators; ``—`` for missing values."""
    if not isinstance(value, int | float) or math.isnan(value):
        return "—"
    return f"{value:,.{digits}f}"


def fmt_usd(value: Any) -> str:
    """Dollars with cents, more digits below one cent so tiny costs are not shown as $0.00."""
    if not isinstance(value, int | float):
        return "—"
    if value == 0:
        return "$0.00"
    if abs(value) < 0.01:
        return f"${value:.4f}"
    return f"${value:,.2f}"


def _throughput(row: dict[str, Any]) -> str:
    value = row.get("throughput")
    if not isinstance(value, int | float):
        return "—"
    unit = row.get("throughput_unit", "")
    if unit == "MB/s" and value < 1:
        value, unit = value * 1000, "KB/s"
    digits = 1 if value < 100 else 0
    return f"{fmt_number(value, digits)} {unit}".strip()


def _baseline(row: dict[str, Any]) -> str:
    base = row.get("baseline") or {}
    name = base.get("name", "")
    if "wall_s" in base:
        return f"{name}: {fmt_seconds(base['wall_s'])}"
    if "usd" in base:
        return f"{name}: {fmt_usd(base['usd'])}"
    if "value" in base:
        return f"{name}: {base['value']}"
    if base.get("message"):
        return f"{name}: {base.get('status', '')} ({base['message']})"
    return name or "—"


def _met(row: dict[str, Any]) -> str:
    if row.get("status") not in (None, "ok"):
        return str(row.get("status"))
    words = {True: "met", False: "MISSED", None: "—"}
    targets = row.get("targets", [])
    if len(targets) > 1:
        return "; ".join(words[t.get("met")] for t in targets)
    return words[row.get("target_met")]


def _target(row: dict[str, Any]) -> str:
    return "; ".join(t["text"] for t in row.get("targets", [])) or "—"


def _ratio(row: dict[str, Any]) -> str:
    ratio = row.get("ratio")
    return f"{ratio:.2f}×" if isinstance(ratio, int | float) else "—"


def timed_cells(row: dict[str, Any]) -> list[str]:
    """One timed row as table cells."""
    if row.get("status") not in (None, "ok"):
        return [
            row["scenario"],
            row.get("case", ""),
            row.get("input", ""),
            f"{row.get('status')}: {row.get('message', '')}",
            "",
            "",
            "",
            "",
            _target(row),
            _met(row),
        ]
    wall = fmt_seconds(row.get("wall_s"))
    if row.get("value_text"):
        wall = row["value_text"]
    rss = row.get("peak_rss_mb")
    return [
        row["scenario"],
        row.get("case", ""),
        row.get("input", ""),
        wall,
        _throughput(row),
        f"{rss:,.0f} MB" if isinstance(rss, int | float) else "—",
        _baseline(row),
        _ratio(row),
        _target(row),
        _met(row),
    ]


def cost_cells(row: dict[str, Any]) -> list[str]:
    """One cost row as table cells."""
    d = row.get("details", {})
    if row.get("status") not in (None, "ok"):
        return [row.get("case", ""), "", "", "", "", f"{row['status']}: {row.get('message')}"] + [
            ""
        ] * 4
    check = _met(row) if row.get("targets") else ""
    return [
        d.get("series", row.get("case", "")),
        d.get("model", ""),
        fmt_number(d.get("sections")),
        fmt_number(d.get("input_tokens")),
        fmt_number(d.get("output_tokens")),
        fmt_usd(d.get("realtime_usd")),
        fmt_usd(d.get("batch_usd")),
        fmt_usd(d.get("batch_cached_usd")),
        _ratio(row),
        check,
    ]


def split_rows(results: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Timed rows and cost rows (cost rows carry ``kind == 'cost'``)."""
    rows = results.get("rows", [])
    cost = [r for r in rows if r.get("kind") == "cost"]
    timed = [r for r in rows if r.get("kind") != "cost"]
    return timed, cost


def _notes(results: dict[str, Any]) -> list[str]:
    notes = []
    for row in results.get("rows", []):
        where = f"{row['scenario']} / {row.get('case', '')}"
        if row.get("note"):
            notes.append(f"{where}: {row['note']}")
        for ref in row.get("references", []):
            if "wall_s" not in ref:
                notes.append(f"{where}: reference {ref['name']}: {ref.get('message', '')}")
                continue
            parts = [f"{fmt_seconds(ref['wall_s'])}"]
            if "baseline_ratio" in ref:
                parts.append(f"{ref['baseline_ratio']:.2f}× the baseline")
            if "subject_ratio" in ref:
                parts.append(f"the subject is {ref['subject_ratio']:.2f}× this")
            notes.append(f"{where}: reference '{ref['name']}': " + ", ".join(parts))
    return notes


def markdown(results: dict[str, Any]) -> str:
    """Both tables as GitHub Markdown, with the machine and mode above them."""
    timed, cost = split_rows(results)
    m = results.get("machine", {})
    modes = sorted({r.get("mode", "?") for r in results.get("rows", [])})
    lines = [
        f"Run {results.get('generated_at', '?')} — mode: {', '.join(modes)} — "
        f"{m.get('cpus', '?')} CPUs, {m.get('memory_gb', '?')} GB RAM, "
        f"Python {m.get('python', '?')}, load average {m.get('load_avg_1m_at_start', '?')} → "
        f"{m.get('load_avg_1m_at_end', '?')} — total {results.get('elapsed_s', '?')} s",
        "",
    ]

    def table(columns: list[str], body: list[list[str]]) -> None:
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "|".join("---" for _ in columns) + "|")
        for cells in body:
            safe = [c.replace("|", "\\|").replace("\n", " ") for c in cells]
            lines.append("| " + " | ".join(safe) + " |")
        lines.append("")

    if timed:
        table(TIMED_COLUMNS, [timed_cells(r) for r in timed])
    if cost:
        table(COST_COLUMNS, [cost_cells(r) for r in cost])
    notes = _notes(results)
    if notes:
        lines.append("Notes:")
        lines.extend(f"- {n}" for n in notes)
        lines.append("")
    return "\n".join(lines)


def print_tables(results: dict[str, Any]) -> None:
    """Print both tables on stdout with rich (plain text when rich is unavailable)."""
    timed, cost = split_rows(results)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich is a dependency; this keeps the benchmark usable without it
        print(markdown(results))
        return
    console = Console(width=max(160, Console().width))
    if timed:
        t = Table(title="fantasy_kg benchmark: speed and memory", show_lines=False)
        for col in TIMED_COLUMNS:
            t.add_column(col, overflow="fold")
        for r in timed:
            cells = timed_cells(r)
            style = "red" if r.get("target_met") is False else None
            t.add_row(*cells, style=style)
        console.print(t)
    if cost:
        c = Table(title="fantasy_kg benchmark: planned spend")
        for col in COST_COLUMNS:
            c.add_column(col, overflow="fold")
        for r in cost:
            c.add_row(*cost_cells(r))
        console.print(c)
    for note in _notes(results):
        console.print(f"note: {note}")


BEGIN = "<!-- BEGIN TABLE (python -m bench.report) -->"
END = "<!-- END TABLE -->"


def update_file(path: Path, table: str) -> bool:
    """Replace the text between the table markers of ``path``; False when it has no markers."""
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}", encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.report [results.json] [--update-readme]``: the results as Markdown.

    ``--update-readme`` writes the tables between the markers of ``bench/README.md`` and
    ``docs/benchmarks.md`` instead of printing them.
    """
    import argparse
    import json
    import sys

    from bench.harness import BENCH_DIR, DEFAULT_RESULTS, REPO_ROOT

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("results", nargs="?", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument(
        "--update-readme", action="store_true", help="rewrite the tables in the READMEs"
    )
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        parser.exit(2, f"cannot read {args.results}: {exc}; run python -m bench first\n")
    table = markdown(results)
    if not args.update_readme:
        print(table)
        return 0
    for target in (BENCH_DIR / "README.md", REPO_ROOT / "docs" / "benchmarks.md"):
        if target.exists() and update_file(target, table):
            print(f"updated {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
