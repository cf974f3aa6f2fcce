"""Rewrite the generated column tables in docs/warehouse.md from the table declarations.

Run after changing a row type in fantasy_kg/domain (``python scripts/warehouse_columns.py``);
``fantasy_kg_tests/test_docs.py`` fails while the page and the declarations disagree.
"""

import sys
from pathlib import Path

from fantasy_kg.warehouse.schema import COLUMNS_END, COLUMNS_START, with_columns_markdown

PAGE = Path(__file__).resolve().parent.parent / "docs" / "warehouse.md"

if __name__ == "__main__":
    current = PAGE.read_text(encoding="utf-8")
    if COLUMNS_START not in current or COLUMNS_END not in current:
        sys.exit(f"{PAGE}: column markers not found; add {COLUMNS_START} and {COLUMNS_END}")
    PAGE.write_text(with_columns_markdown(current), encoding="utf-8")
    print(f"wrote {PAGE}")
