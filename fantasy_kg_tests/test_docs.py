"""The README and docs/ stay true: short README, links that resolve, every CLI option documented.

Links are checked the way GitHub renders them (relative to the page, ``#anchor`` = the heading's
slug), so a page that moves or a heading that is renamed breaks this test, not a reader's click.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from fantasy_kg.cli.main import cli
from fantasy_kg.warehouse.load import connect
from fantasy_kg.warehouse.schema import with_columns_markdown
from fantasy_kg_tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.S | re.M)


def _prose(text: str) -> str:
    """The page without fenced code blocks and inline code (links there are not links)."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"^#{1,6} (.+?)\s*#*$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(page: Path) -> Iterator[str]:
    for match in LINK.finditer(_prose(page.read_text(encoding="utf-8"))):
        target = match.group(1)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            yield target


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for target in _links(page):
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
            continue
        if anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{page.relative_to(REPO_ROOT)}: " + "; ".join(broken)


def test_docs_index_lists_every_page() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    linked = {(DOCS / t.partition("#")[0]).resolve() for t in _links(DOCS / "README.md")}
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "README.md":
            assert page.resolve() in linked, f"docs/README.md does not link {page.name}"
    assert "../README.md" in index


def _commands(
    command: click.Command, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from _commands(sub, (*path, name))


def _options(command: click.Command) -> list[str]:
    return [
        opt
        for param in command.params
        if isinstance(param, click.Option)
        for opt in (*param.opts, *param.secondary_opts)
    ]


def _cli_sections() -> dict[str, str]:
    """docs/cli.md cut at its ``## `fantasy-kg ...` `` headings: command → its section's text."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    parts = re.split(r"^## `(fantasy-kg[^`]*)`\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_cli_reference_documents_every_command_and_option() -> None:
    sections = _cli_sections()
    missing = []
    for path, command in _commands(cli, ("fantasy-kg",)):
        name = " ".join(path)
        if name not in sections:
            missing.append(f"{name} (no section)")
            continue
        section = sections[name]
        missing += [
            f"{name} {opt}"
            for opt in _options(command)
            if not re.search(rf"(?:`|, ){re.escape(opt)}(?=[ `,])", section)
        ]
    assert not missing, "not in docs/cli.md: " + ", ".join(missing)


def test_readme_lists_every_option_of_run() -> None:
    run = cli.commands["run"]
    readme = README.read_text(encoding="utf-8")
    table = readme[readme.index("`fantasy-kg run` options") :]
    missing = [opt for opt in _options(run) if f"`{opt}" not in table]
    assert not missing, f"README's run table lacks {missing}"


def test_readme_commands_are_the_dg_ones() -> None:
    readme = README.read_text(encoding="utf-8")
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", readme, flags=re.S))
    assert "dg launch --assets" in blocks and "--partition" in blocks
    assert re.search(r"^dg dev\b", blocks, flags=re.M)
    # Superseded forms print a SupersessionWarning; the README must not teach them.
    assert "dagster asset materialize" not in blocks
    assert "dagster dev" not in blocks
    assert "cp " not in blocks  # no instance file copied by hand


def test_warehouse_page_lists_every_table_and_column(tmp_path: Path) -> None:
    """Every column of a fresh warehouse is on the page; the generated tables are current."""
    conn = connect(tmp_path / "fresh.duckdb")  # creates the file and runs every migration
    try:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'main' ORDER BY table_name, ordinal_position"
        ).fetchall()
    finally:
        conn.close()
    text = (DOCS / "warehouse.md").read_text(encoding="utf-8")
    assert with_columns_markdown(text) == text, (
        "docs/warehouse.md column tables are stale: run python scripts/warehouse_columns.py"
    )
    views = {
        match.group(1): match.group(2)
        for match in re.finditer(r"^\| `(\w+)` \(view\) \| (.*) \|$", text, flags=re.M)
    }
    tables = {
        match.group(1): text[match.end() : text.find("\n### ", match.end())]
        for match in re.finditer(r"^### `(\w+)`$", text, flags=re.M)
    }
    listed = {**tables, **views, "schema_migrations": "`version` `name` `applied_at` "}
    missing = [
        f"{table}.{column}"
        for table, column in rows
        if table not in listed
        or (f"`{column}` " not in listed[table] and f"| `{column}` |" not in listed[table])
    ]
    assert not missing, "docs/warehouse.md 'Every column' lacks " + ", ".join(missing)
