"""Union-find root lookup shared by the baseline's name clustering and the graph's resolution."""

from typing import Protocol, TypeVar

K = TypeVar("K")


class Parents(Protocol[K]):
    """A parent table: ``dict[str, str]`` or ``list[int]`` (each key maps to its parent)."""

    def __getitem__(self, key: K, /) -> K: ...

    def __setitem__(self, key: K, value: K, /) -> None: ...


def find_root(parent: Parents[K], key: K) -> K:
    """The root of ``key``'s set, compressing the path on the way (amortized near-constant)."""
    root = key
    while parent[root] != root:
        root = parent[root]
    while parent[key] != root:
        parent[key], key = root, parent[key]
    return root
