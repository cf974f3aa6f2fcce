"""Open a ``fantasy-kg view`` page from file:// in headless Chromium and report what it drew.

Used by the browser test (fantasy_kg_tests/test_view.py) and by ``python -m bench`` (scenario
``view``), and by hand to refresh the screenshots in docs/. Prints one JSON report on stdout:

* ``console_errors`` / ``page_errors``: every console error and uncaught exception;
* ``foreign_requests``: every request whose URL is not the page itself (must be empty);
* ``drawn_nodes`` / ``drawn_edges``: elements cytoscape draws with every filter open;
* ``first_render_ms``: navigation start to the first frame drawn by cytoscape (the page's own
  ``performance.now()`` when the first render happened), ``load_wall_ms`` the same seen from here;
* ``frame_ms_mean`` / ``frame_ms_p95``: frame times while panning and zooming for 60 frames;
* ``cut_ms``: time to apply a story-time cut (slider to the middle) and back;
* with ``--alias TEXT``: ``search_results`` for that text typed into the search box;
* with ``--hidden-rel ID --book N``: whether relationship ID is drawn at "end of book N" and at
  the end of the slider;
* with ``--shots DIR``: ``view_full.png``, ``view_node.png``, ``view_edge.png``.

Needs Debian's ``/usr/bin/chromium`` (apt-get install -y chromium) and Playwright.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

_FRAMES_JS = """
async () => {
  const cy = window.fkgCy;
  const times = [];
  let last = performance.now();
  for (let i = 0; i < 60; i++) {
    if (i % 2) cy.panBy({x: 7, y: -4}); else cy.zoom({level: cy.zoom() * (i < 30 ? 1.02 : 0.98),
      renderedPosition: {x: 400, y: 300}});
    await new Promise(r => requestAnimationFrame(r));
    const now = performance.now();
    times.push(now - last);
    last = now;
  }
  return times;
}
"""


def check(
    html: Path,
    *,
    alias: str | None = None,
    hidden_rel: str | None = None,
    book: int | None = None,
    shots: Path | None = None,
    width: int = 1400,
    height: int = 860,
) -> dict[str, Any]:
    """Drive the page and return the report (see the module docstring)."""
    from playwright.sync_api import sync_playwright

    url = html.resolve().as_uri()
    report: dict[str, Any] = {"url": url}
    console_errors: list[str] = []
    page_errors: list[str] = []
    foreign: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on(
                "console",
                lambda m: console_errors.append(m.text) if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on(
                "request",
                lambda r: foreign.append(r.url) if r.url != url else None,
            )
            started = time.perf_counter()
            page.goto(url, wait_until="load")
            page.wait_for_function("window.fkg && window.fkg.ready === true", timeout=120_000)
            report["load_wall_ms"] = round((time.perf_counter() - started) * 1000, 1)
            report["first_render_ms"] = round(float(page.evaluate("window.fkgRendered")), 1)
            report["entities_in_page"] = page.evaluate("window.fkg.data.nodes.length")
            report["drawn_nodes"] = page.evaluate("window.fkg.drawnNodes()")
            report["drawn_edges"] = page.evaluate("window.fkg.drawnEdges()")
            report["made_by"] = page.inner_text("#made-by")
            if shots is not None:
                shots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shots / "view_full.png"))
            frames = [float(t) for t in page.evaluate(_FRAMES_JS)[1:]]
            report["frame_ms_mean"] = round(statistics.fmean(frames), 2)
            report["frame_ms_p95"] = round(sorted(frames)[int(len(frames) * 0.95) - 1], 2)
            points = int(page.evaluate("window.fkg.data.points.length"))
            report["cut_ms"] = round(
                float(
                    page.evaluate(
                        f"""() => {{ const t = performance.now();
                        window.fkg.setPoint({points // 2}); window.fkg.setPoint({points});
                        return performance.now() - t; }}"""
                    )
                ),
                1,
            )
            if alias is not None:
                page.fill("#search", alias)
                report["search_results"] = page.eval_on_selector_all(
                    "#results li", "els => els.map(e => e.textContent)"
                )
            if hidden_rel is not None and book is not None:
                index = page.evaluate(
                    "(b) => window.fkg.data.points.findIndex(p => p.label.startsWith("
                    "'end of Book ' + b + ':'))",
                    book,
                )
                report["cut_label"] = page.evaluate(f"window.fkg.data.points[{index}].label")
                page.evaluate(f"window.fkg.setPoint({index})")
                report["rel_drawn_at_cut"] = page.evaluate(
                    "(i) => window.fkg.isDrawn(i)", hidden_rel
                )
                report["nodes_drawn_at_cut"] = page.evaluate("window.fkg.drawnNodes()")
                page.evaluate(f"window.fkg.setPoint({points})")
                report["rel_drawn_at_end"] = page.evaluate(
                    "(i) => window.fkg.isDrawn(i)", hidden_rel
                )
            if shots is not None:
                page.fill("#search", "")
                top = page.evaluate("window.fkg.data.nodes[0].id")
                page.evaluate("(i) => window.fkg.select(i)", top)
                page.wait_for_timeout(400)
                page.screenshot(path=str(shots / "view_node.png"))
                edge = page.evaluate(
                    "(() => { const es = window.fkg.data.edges.slice().sort("
                    "(a, b) => b.evidence_count - a.evidence_count); return es[0].id; })()"
                )
                page.evaluate("(i) => window.fkg.select(i)", edge)
                page.wait_for_timeout(400)
                page.screenshot(path=str(shots / "view_edge.png"))
                report["evidence_shown"] = page.eval_on_selector_all(
                    "#evidence blockquote", "els => els.length"
                )
        finally:
            browser.close()
    report["console_errors"] = console_errors
    report["page_errors"] = page_errors
    report["foreign_requests"] = foreign
    report["ok"] = not console_errors and not page_errors and not foreign
    return report


def main(argv: list[str] | None = None) -> int:
    """Check one page and print the JSON report (exit 2 without Chromium)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("--alias")
    parser.add_argument("--hidden-rel")
    parser.add_argument("--book", type=int)
    parser.add_argument("--shots", type=Path)
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} not found: apt-get install -y chromium", file=sys.stderr)
        return 2
    report = check(
        args.html, alias=args.alias, hidden_rel=args.hidden_rel, book=args.book, shots=args.shots
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
