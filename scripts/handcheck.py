"""Print what a hand-check of one series judges: top entities, a seeded sample of relationships.

Every evidence quote of the sampled relationships is printed and checked verbatim against the
books.

Usage::

    python scripts/handcheck.py --db DATA/fantasy_kg.duckdb --series oz \
        [--books-dir ../shared/corpus/oz] [--top 30] [--sample 20] [--seed 14]

The sample is ``random.Random(seed).sample`` over the relationships ordered by id, so two
judges (or two runs) see the same rows. A quote counts as verbatim when it is a substring of a
book file with whitespace collapsed (sections re-wrap nothing, but quotes may span a line break).
"""

import argparse
import random
import re
import sys
from pathlib import Path

import duckdb

_WS = re.compile(r"\s+")


def main(argv: list[str] | None = None) -> int:
    """Print the two tables; exit code 2 when the database or series is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--series", required=True)
    parser.add_argument("--books-dir", type=Path, default=None)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args(argv)
    if not args.db.is_file():
        print(f"error: no database at {args.db}", file=sys.stderr)
        return 2
    con = duckdb.connect(str(args.db), read_only=True)
    top = con.execute(
        "SELECT name, type, mention_count, section_count, first_book_no, last_book_no "
        "FROM entities WHERE series = ? ORDER BY mention_count DESC, name LIMIT ?",
        [args.series, args.top],
    ).fetchall()
    if not top:
        print(f"error: no entities for series {args.series!r} in {args.db}", file=sys.stderr)
        return 2
    print(f"## The {len(top)} entities with the most mentions\n")
    print("| # | name | type | mentions | sections | books |\n|---|---|---|---|---|---|")
    for n, (name, etype, mentions, sections, b0, b1) in enumerate(top, start=1):
        print(f"| {n} | {name} | {etype} | {mentions} | {sections} | {b0}–{b1} |")
    books = ""
    if args.books_dir is not None:
        texts = [p.read_text(encoding="utf-8") for p in sorted(args.books_dir.glob("*.txt"))]
        books = _WS.sub(" ", "\n".join(texts))
    ids = [
        r[0]
        for r in con.execute(
            "SELECT relationship_id FROM relationships WHERE series = ? ORDER BY relationship_id",
            [args.series],
        ).fetchall()
    ]
    chosen = sorted(random.Random(args.seed).sample(ids, min(args.sample, len(ids))))
    print(f"\n## {len(chosen)} random relationships (of {len(ids)}; seed {args.seed})\n")
    verbatim = total = 0
    for rid in chosen:
        rows = con.execute(
            "SELECT source_name, type, target_name, quote, status FROM relationship_evidence "
            "WHERE series = ? AND relationship_id = ? ORDER BY evidence_id",
            [args.series, rid],
        ).fetchall()
        print(f"- {rows[0][0]} {rows[0][1]} {rows[0][2]}")
        for _s, _t, _g, quote, status in rows:
            total += 1
            found = bool(books) and _WS.sub(" ", quote) in books
            verbatim += found
            mark = "verbatim" if found else ("not checked" if not books else "NOT FOUND")
            print(f"    [{status}; {mark}] {quote!r}")
    if books:
        print(f"\n{verbatim} of {total} quotes found verbatim in the books")
    return 0


if __name__ == "__main__":
    sys.exit(main())
