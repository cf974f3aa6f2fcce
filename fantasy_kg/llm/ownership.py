"""Proof that a batch is ours: submission nonces in custom_ids, and the opt-in to cancel by guess.

Why it works this way: docs/architecture.md, "The batch client".
"""

import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from fantasy_kg.llm.requests import MAX_CUSTOM_ID

#: Hex characters of a submission nonce (48 random bits: two submissions never share one).
NONCE_HEX = 12
#: ``<section part>-<nonce>``: the suffix a wire custom_id ends with.
_WIRE_RE = re.compile(rf"^(?P<base>.+)-(?P<nonce>[0-9a-f]{{{NONCE_HEX}}})$")
#: Environment switch for the opt-in (``1``/``true``/``yes``/``on``).
DEDICATED_WORKSPACE_ENV = "FANTASY_KG_DEDICATED_WORKSPACE"


def new_nonce() -> str:
    """A fresh random submission nonce (lower-case hex, :data:`NONCE_HEX` characters)."""
    return secrets.token_hex(NONCE_HEX // 2)


def wire_custom_id(custom_id: str, nonce: str) -> str:
    """The custom_id sent to the API for section ``custom_id`` in the submission ``nonce``.

    The result stays within ``^[a-zA-Z0-9_-]{1,64}$``: when the section id is too long to take the
    suffix, its head is kept and a 12-hex hash of the whole id replaces the rest (so two long ids
    never collide). An empty nonce (job files from before nonces) leaves the id as it is.
    """
    if not nonce:
        return custom_id
    room = MAX_CUSTOM_ID - len(nonce) - 1
    base = custom_id
    if len(base) > room:
        digest = hashlib.sha256(custom_id.encode("utf-8")).hexdigest()[:12]
        base = f"{custom_id[: room - 13]}_{digest}"
    return f"{base}-{nonce}"


def wire_ids(custom_ids: Sequence[str], nonce: str) -> dict[str, str]:
    """``section custom_id -> wire custom_id`` for one submission.

    Raises:
        ValueError: two section ids would share a wire id (only possible for a hash collision).
    """
    mapping = {cid: wire_custom_id(cid, nonce) for cid in custom_ids}
    if len(set(mapping.values())) != len(mapping):
        raise ValueError("two custom_ids map to the same wire custom_id")
    return mapping


def split_wire_id(wire_id: str) -> tuple[str, str]:
    """``(section part, nonce)`` of a wire custom_id; ``(wire_id, "")`` when it has no nonce.

    Best effort, for reading server logs and test fixtures: a shortened section id comes back
    shortened. The job file's ``wire_custom_ids`` is the authority.
    """
    m = _WIRE_RE.match(wire_id)
    if m is None:
        return wire_id, ""
    return m.group("base"), m.group("nonce")


def proves_ownership(seen: Iterable[str], ours: Iterable[str]) -> bool:
    """Whether the custom_ids of a batch's results prove the batch is ours.

    Proof means: at least one line, and every line's custom_id is one this submission sent (they
    all carry its random nonce). A batch with any other custom_id was created by someone else, and
    a batch whose results hold nothing proves nothing.
    """
    seen_set = set(seen)
    return bool(seen_set) and seen_set <= set(ours)


def reverse(mapping: Mapping[str, str]) -> dict[str, str]:
    """``wire custom_id -> section custom_id`` from a job file's ``wire_custom_ids``."""
    return {wire: cid for cid, wire in mapping.items()}


_DEDICATED: ContextVar[bool | None] = ContextVar("fantasy_kg_dedicated_workspace", default=None)


def dedicated_workspace_from_env() -> bool:
    """Whether the workspace is declared dedicated to this project (default: no).

    A command's ``--dedicated-workspace`` (:func:`dedicated_workspace`) wins; otherwise
    ``FANTASY_KG_DEDICATED_WORKSPACE`` decides.
    """
    scoped = _DEDICATED.get()
    if scoped is not None:
        return scoped
    raw = os.environ.get(DEDICATED_WORKSPACE_ENV, "").strip().lower()
    return raw in ("1", "true", "yes", "on")


@contextmanager
def dedicated_workspace(value: bool) -> Iterator[None]:
    """Declare the workspace dedicated (or not) for every provider built inside the block.

    The CLI wraps a command in it, so the pipeline functions it calls need no extra argument;
    the setting ends with the block (no environment variable is changed).
    """
    token = _DEDICATED.set(value)
    try:
        yield
    finally:
        _DEDICATED.reset(token)
