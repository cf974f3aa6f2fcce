"""How many bytes a request takes inside a batch body, for the 256 MB limit.

:class:`BodySizer` sizes many bodies without re-encoding the parts they share (the prompt
prefix, the output schema), which keeps pre-flight of a 100,000-request series fast.
"""

import json
import math
import sys
from json.encoder import encode_basestring
from typing import Any


def canonical_json(obj: Any) -> str:
    """Compact, key-sorted JSON: the same value always gives the same text (for hashing)."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def request_bytes(body: dict[str, Any]) -> int:
    """Size of one request as it travels inside the batch body (compact JSON, UTF-8).

    The ASCII-escaping encoder is about twice as fast; when its output holds no unicode escape,
    every character was ASCII and the UTF-8 size is its length, so only bodies with non-ASCII
    (or control) characters pay for the second, exact encoding.
    """
    text = json.dumps(body, separators=(",", ":"))
    if "\\u" not in text:
        return len(text)
    return len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


class _NotSizable(Exception):
    """A value the structural sizer does not handle; the caller falls back to ``json.dumps``."""


#: Shared strings at least this long are memoized by value (the prompt prefix).
_MEMO_STR_CHARS = 256
#: A container with more references than this is taken as shared between bodies.
_SHARED_REFS = 8


class BodySizer:
    """:func:`request_bytes` for many bodies, without re-encoding the parts they share.

    Every request of a series carries the same prompt prefix and the same schema object, about
    two thirds of each body; serializing all of it per request cost as much as the ``json.dumps``
    baseline itself. The compact JSON size of a container is the sum of its members' sizes plus
    the brackets, colons and commas, so this sums per-value sizes: strings through the same C
    escaping ``json`` uses (memoized when long), shared containers once per object. Anything
    ``json.dumps`` would treat specially (non-``str`` keys, non-finite floats, subclasses,
    unknown types, cycles) falls back to :func:`request_bytes` for that body.
    """

    def __init__(self) -> None:
        self._strings: dict[str, int] = {}
        self._keys: dict[str, int] = {}  # key -> its size plus the colon
        # id -> (object, size); the object is held so its id cannot be reused meanwhile.
        self._containers: dict[int, tuple[Any, int]] = {}

    def size(self, body: dict[str, Any]) -> int:
        """Bytes of ``body`` as compact UTF-8 JSON (exactly :func:`request_bytes`)."""
        try:
            return self._value(body, 0)
        except (_NotSizable, RecursionError):
            return request_bytes(body)

    def _string(self, text: str) -> int:
        # Long strings held by many bodies (the prefix) are sized once; a long string held by
        # one body (its section text) would only pay for hashing it.
        memo = len(text) >= _MEMO_STR_CHARS and sys.getrefcount(text) > _SHARED_REFS
        if memo:
            hit = self._strings.get(text)
            if hit is not None:
                return hit
        encoded = encode_basestring(text)
        n = len(encoded) if encoded.isascii() else len(encoded.encode("utf-8"))
        if memo:
            self._strings[text] = n
        return n

    def _value(self, value: Any, depth: int) -> int:
        kind = type(value)
        if kind is str:
            return self._string(value)
        if kind is dict or kind is list:
            # Only containers referenced from many places (the shared schema) are worth a memo
            # entry; the reference count only decides that, never the size.
            shared = sys.getrefcount(value) > _SHARED_REFS
            if shared:
                hit = self._containers.get(id(value))
                if hit is not None and hit[0] is value:
                    return hit[1]
            if depth > 64:
                raise _NotSizable
            if kind is dict:
                n = 1 + len(value) if value else 2
                keys = self._keys
                for key, item in value.items():
                    if type(key) is not str:
                        raise _NotSizable
                    key_size = keys.get(key)
                    if key_size is None:
                        key_size = keys[key] = self._string(key) + 1
                    n += key_size + (
                        self._string(item) if type(item) is str else self._value(item, depth + 1)
                    )
            else:
                n = 1 + len(value) if value else 2
                for item in value:
                    n += self._string(item) if type(item) is str else self._value(item, depth + 1)
            if shared:
                self._containers[id(value)] = (value, n)
            return n
        if kind is int:
            return len(int.__repr__(value))
        if kind is bool:
            return 4 if value else 5
        if value is None:
            return 4
        if kind is float and math.isfinite(value):
            return len(float.__repr__(value))
        raise _NotSizable
