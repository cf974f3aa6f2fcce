"""Inputs made from the shared Oz corpus: the 14 books, and a 10x library with changed names.

The library repeats Oz ten times as ten series, each with its recurring names replaced by
invented ones of similar length. Changed names matter: identical copies would let any cache keyed
on text hashes skip work, and they would not look like ten different series to entity resolution.
"""

import json
import os
import random
import re
import shutil
from pathlib import Path

from bench.harness import REPO_ROOT

OZ_NAMES = [
    "Dorothy",
    "Toto",
    "Scarecrow",
    "Tin Woodman",
    "Nick Chopper",
    "Cowardly Lion",
    "Lion",
    "Hungry Tiger",
    "Ozma",
    "Glinda",
    "Tip",
    "Jack Pumpkinhead",
    "Wizard",
    "Oscar Diggs",
    "Mombi",
    "Jinjur",
    "Tik-Tok",
    "Betsy Bobbin",
    "Shaggy Man",
    "Button-Bright",
    "Polychrome",
    "Trot",
    "Cap'n Bill",
    "Ojo",
    "Unc Nunkie",
    "Scraps",
    "Patchwork Girl",
    "Woggle-Bug",
    "Billina",
    "Eureka",
    "Zeb",
    "Jim",
    "Hank",
    "Ugu",
    "Kiki Aru",
    "Ruggedo",
    "Nome King",
    "Roquat",
    "Evring",
    "Langwidere",
    "Rinkitink",
    "Bilbil",
    "Inga",
    "Gloma",
    "Quadlings",
    "Winkies",
    "Munchkins",
    "Gillikins",
    "Emerald City",
    "Kansas",
    "Ev",
    "Ix",
    "Jinxland",
    "Gayelette",
    "Quelala",
    "Nimmie Amee",
    "Woot",
    "Captain Fyter",
    "Sawhorse",
    "Gump",
]

_VOWELS = "aeiou"
_CONSONANTS = "bcdfghklmnprstvwz"


def oz_dir() -> Path | None:
    """The shared Oz corpus (``<repo>/../shared/corpus/oz``), or ``None`` when absent.

    ``BENCH_OZ_DIR`` overrides the location.
    """
    override = os.environ.get("BENCH_OZ_DIR")
    path = Path(override) if override else REPO_ROOT.parent / "shared" / "corpus" / "oz"
    return path if path.is_dir() and any(path.glob("*.txt")) else None


def book_files(folder: Path) -> list[Path]:
    """The ``.txt`` books of a series folder, in file-name order."""
    return sorted(p for p in folder.glob("*.txt") if not p.name.startswith("."))


def folder_bytes(folder: Path) -> int:
    """Total size of the ``.txt`` files under ``folder`` (recursively)."""
    return sum(p.stat().st_size for p in folder.rglob("*.txt"))


def _invent(name: str, copy: int) -> str:
    """A pronounceable replacement for ``name``, the same for a given copy, similar length."""
    rng = random.Random(f"{name}|{copy}")
    words = []
    for word in re.split(r"([ \-'])", name):
        if not word or word in " -'":
            words.append(word)
            continue
        letters = []
        for i in range(len(word)):
            pool = _CONSONANTS if i % 2 == 0 else _VOWELS
            letters.append(rng.choice(pool))
        words.append("".join(letters).capitalize())
    return "".join(words)


def rename_map(copy: int) -> dict[str, str]:
    """Name → invented name for library copy ``copy`` (1-based)."""
    return {name: _invent(name, copy) for name in OZ_NAMES}


_NAME_RE = re.compile(
    r"\b(" + "|".join(re.escape(n) for n in sorted(OZ_NAMES, key=len, reverse=True)) + r")\b"
)


def renamed(text: str, copy: int) -> str:
    """``text`` with every Oz name swapped for library copy ``copy``'s invented name."""
    mapping = rename_map(copy)
    return _NAME_RE.sub(lambda m: mapping[m.group(1)], text)


def make_library(source: Path, dest: Path, copies: int) -> list[Path]:
    """Write ``copies`` renamed copies of the series in ``source`` under ``dest``.

    Each copy is a series folder ``dest/<source.name>_vNN`` with the same book file names.
    Returns the series folders. Idempotent: a complete library with a matching stamp is kept.
    """
    stamp = dest / ".stamp.json"
    want = {"source": str(source), "copies": copies, "names": OZ_NAMES, "version": 1}
    folders = [dest / f"{source.name}_v{k:02d}" for k in range(1, copies + 1)]
    if stamp.exists() and json.loads(stamp.read_text(encoding="utf-8")) == want:
        return folders
    shutil.rmtree(dest, ignore_errors=True)
    books = book_files(source)
    for k, folder in enumerate(folders, start=1):
        folder.mkdir(parents=True, exist_ok=True)
        for book in books:
            text = renamed(book.read_text(encoding="utf-8"), k)
            (folder / book.name).write_text(text, encoding="utf-8")
    stamp.write_text(json.dumps(want), encoding="utf-8")
    return folders


def link_series(source: Path, dest: Path) -> Path:
    """Make ``dest`` a copy of a series folder's books (files only, so manifests stay out)."""
    want = [p.name for p in book_files(source)]
    if dest.is_dir() and sorted(p.name for p in book_files(dest)) == want:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for p in book_files(source):
        shutil.copyfile(p, dest / p.name)
    return dest
