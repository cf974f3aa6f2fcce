"""Check the Dagster UI in a real browser and save screenshots of it under ``docs/``.

What it does, on a throw-away copy of the sample data (your ``data/`` and ``DAGSTER_HOME`` are not
touched, and the local backend is forced so no API key is ever used):

1. ``dagster asset materialize -m fantasy_kg.definitions --select '*' --partition ashen_crown``
   with a fresh ``DAGSTER_HOME`` (``.dagster_home/dagster.yaml``: no NUX modal, no telemetry),
   timed;
2. ``dagster dev -w workspace.yaml -h 127.0.0.1 -p <free port>``;
3. headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright) opens the asset
   lineage, waits until the six assets are drawn, counts the drawn edges against the asset
   graph's dependencies, then opens the materialized partition of ``knowledge_graph`` and waits
   for its metadata, then that of ``graph_view`` and waits until its inline PNG preview of the
   main characters' network is decoded;
4. saves ``docs/dagster_lineage.png``, ``docs/dagster_asset_metadata.png`` and
   ``docs/dagster_graph_view.png`` and prints a JSON report (and exits 1 if something is
   missing).

Usage::

    python scripts/ui_screenshot.py [--out-dir docs] [--port 3999] [--series ashen_crown]

Install the browser with ``apt-get install -y chromium`` if it is missing.
"""

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import dagster_sandbox as sandbox

REPO = sandbox.REPO
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ASSETS = (
    "book_sections",
    "extraction_batch",
    "extraction_results",
    "knowledge_graph",
    "cost_summary",
    "graph_view",
)
LINEAGE_PATH = "/assets/extraction_results?view=lineage&lineageDepth=2"
EDGE_SELECTOR = "svg[class*='AssetNodeLineageGraph'] path[marker-end]"
METADATA_TEXTS = ("grounding_rate", "top_entities", "local (local baseline extractor, not Claude)")


@dataclass
class UiReport:
    """What the browser saw."""

    materialize_seconds: float = 0.0
    server_ready_seconds: float = 0.0
    assets_drawn: list[str] = field(default_factory=list)
    edges_drawn: int = 0
    edges_expected: int = 0
    metadata_found: list[str] = field(default_factory=list)
    view_preview_px: list[int] = field(default_factory=list)
    screenshots: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every asset, every edge and the metadata were on screen."""
        return (
            sorted(self.assets_drawn) == sorted(ASSETS)
            and self.edges_drawn == self.edges_expected > 0
            and sorted(self.metadata_found) == sorted(METADATA_TEXTS)
            and len(self.view_preview_px) == 2
            and min(self.view_preview_px) > 100
        )


def expected_edges() -> int:
    """Dependencies in the asset graph: what the lineage page must draw."""
    from fantasy_kg.defs import build_definitions

    graph = build_definitions(REPO / "data").resolve_asset_graph()
    return sum(len(graph.get(key).parent_keys) for key in graph.get_all_asset_keys())


def browse(url: str, series: str, out_dir: Path, report: UiReport) -> None:
    """Open the lineage and the partition's metadata, check what is drawn, take screenshots."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            # The UI keeps polling, so "networkidle" never comes: wait for the nodes' text.
            page.goto(url + LINEAGE_PATH)
            for name in ASSETS:
                page.get_by_text(name, exact=True).first.wait_for(timeout=90_000)
                report.assets_drawn.append(name)
            page.wait_for_function(
                "([sel, n]) => document.querySelectorAll(sel).length >= n",
                arg=[EDGE_SELECTOR, report.edges_expected],
                timeout=30_000,
            )
            page.wait_for_timeout(1500)  # let the layout settle before the screenshot
            report.edges_drawn = page.locator(EDGE_SELECTOR).count()
            lineage = out_dir / "dagster_lineage.png"
            page.screenshot(path=str(lineage))
            report.screenshots.append(str(lineage))

            page.set_viewport_size({"width": 1600, "height": 1300})
            page.goto(f"{url}/assets/knowledge_graph?view=partitions&partition={series}")
            for text in METADATA_TEXTS:
                page.get_by_text(text, exact=True).first.wait_for(timeout=60_000)
                report.metadata_found.append(text)
            page.wait_for_timeout(1000)
            metadata = out_dir / "dagster_asset_metadata.png"
            page.screenshot(path=str(metadata))
            report.screenshots.append(str(metadata))

            # graph_view: the PNG preview is inline Markdown metadata; it must be decoded and drawn.
            page.goto(f"{url}/assets/graph_view?view=partitions&partition={series}")
            page.get_by_text("preview_path", exact=True).first.wait_for(timeout=60_000)
            # Markdown metadata opens in a dialog from the entry's "[Show Markdown]" link.
            row = page.locator("tr", has=page.get_by_text("preview", exact=True)).first
            row.get_by_text("[Show", exact=False).first.click()
            preview = page.locator("img[src^='data:image/png']").first
            preview.wait_for(timeout=60_000)
            preview.scroll_into_view_if_needed()
            page.wait_for_function(
                "() => { const i = document.querySelector(\"img[src^='data:image/png']\");"
                " return i && i.complete && i.naturalWidth > 0; }",
                timeout=30_000,
            )
            size = preview.evaluate("i => [i.naturalWidth, i.naturalHeight]")
            report.view_preview_px = [int(v) for v in size]
            shot = out_dir / "dagster_graph_view.png"
            page.screenshot(path=str(shot))
            report.screenshots.append(str(shot))
        finally:
            browser.close()


def capture(out_dir: Path, *, series: str = "ashen_crown", port: int | None = None) -> UiReport:
    """Materialize the sample partition, serve it with ``dagster dev`` and check it in Chromium."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} not found: apt-get install -y chromium")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = UiReport(edges_expected=expected_edges())
    with tempfile.TemporaryDirectory(prefix="fantasy_kg_ui_") as tmp:
        root = Path(tmp)
        env = sandbox.prepare(root, series)
        report.materialize_seconds = round(sandbox.materialize(env, series), 2)
        port = port or sandbox.free_port()
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        proc = sandbox.start_dev(env, port, root / "dagster_dev.log")
        try:
            sandbox.wait_for_server(url, proc)
            report.server_ready_seconds = round(time.monotonic() - started, 2)
            browse(url, series, out_dir, report)
        finally:
            sandbox.stop(proc)
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the report as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=REPO / "docs")
    parser.add_argument("--series", default="ashen_crown")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    report = capture(args.out_dir, series=args.series, port=args.port)
    print(json.dumps(asdict(report) | {"ok": report.ok}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
