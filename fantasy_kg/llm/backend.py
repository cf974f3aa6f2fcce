"""Backend selection: the real Anthropic API, or the embedded local one when no key exists.

Why it works this way: docs/architecture.md, "The batch client".
"""

import importlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from anthropic import AsyncAnthropic

from fantasy_kg.domain.errors import ConfigError

logger = logging.getLogger(__name__)

BackendName = Literal["anthropic", "local"]
BACKEND_CHOICES = ("auto", "anthropic", "local")
LOCAL_BANNER = "backend=local: deterministic baseline extractor, not Claude"
#: Placeholder credential for the local server (it accepts any key; the SDK insists on one).
LOCAL_API_KEY = "local-backend-no-key"

_announced: set[str] = set()


@dataclass(frozen=True)
class Backend:
    """A resolved backend.

    Attributes:
        name: ``anthropic`` or ``local``.
        base_url: Where the SDK sends requests (``None``: the SDK's default or
            ``ANTHROPIC_BASE_URL``).
        api_key: The credential (excluded from ``repr`` so it never lands in a log by accident).
    """

    name: BackendName
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)


def _local_base_url() -> str:
    """Start (or find) the embedded local API server and return its base URL."""
    module = importlib.import_module("fantasy_kg.local_api")
    ensure = getattr(module, "ensure_local_server", None)
    if ensure is None:
        raise ConfigError(
            "the local backend is not available in this installation: set ANTHROPIC_API_KEY "
            "or use --backend anthropic"
        )
    server: Any = ensure()
    url = server if isinstance(server, str) else getattr(server, "base_url", None)
    if not url:
        raise ConfigError("the local backend did not report its address: re-run with -v")
    return str(url)


def backend_name(choice: str = "auto", *, api_key: str | None = None) -> BackendName:
    """Which backend ``choice`` means here, without starting anything or announcing it.

    Planning needs it before any client exists: a result is reused only when the same backend
    made it (invariant 10).

    Raises:
        ConfigError: unknown choice.
    """
    if choice == "auto":
        choice = os.environ.get("FANTASY_KG_BACKEND", "auto") or "auto"
    if choice not in BACKEND_CHOICES:
        raise ConfigError(
            f"unknown backend {choice!r}: use one of {', '.join(BACKEND_CHOICES)} (--backend)"
        )
    key = api_key or os.environ.get("ANTHROPIC_API_KEY") or None
    if choice == "anthropic" or (choice == "auto" and key):
        return "anthropic"
    return "local"


def resolve_backend(
    choice: str = "auto", *, api_key: str | None = None, base_url: str | None = None
) -> Backend:
    """Decide which backend to use and announce it.

    Args:
        choice: ``auto`` | ``anthropic`` | ``local`` (``--backend``; ``FANTASY_KG_BACKEND`` when
            ``auto``).
        api_key: An explicit key; otherwise ``ANTHROPIC_API_KEY``.
        base_url: An explicit base URL for the anthropic backend (else ``ANTHROPIC_BASE_URL``).

    Raises:
        ConfigError: unknown choice, or ``anthropic`` forced without a key.
    """
    key = api_key or os.environ.get("ANTHROPIC_API_KEY") or None
    if backend_name(choice, api_key=api_key) == "anthropic":
        if not key:
            raise ConfigError(
                "backend 'anthropic' needs an API key: set ANTHROPIC_API_KEY or use --backend local"
            )
        return Backend(name="anthropic", base_url=base_url, api_key=key)
    url = base_url or _local_base_url()
    if url not in _announced:
        _announced.add(url)
        logger.warning(LOCAL_BANNER)
    return Backend(name="local", base_url=url, api_key=LOCAL_API_KEY)


def unreachable_message(base_url: str, exc: BaseException) -> str:
    """The one line for an API that cannot be reached at all (no key or secret in it)."""
    cause = exc.__cause__ or exc
    detail = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
    return (
        f"cannot reach the Anthropic API at {base_url.rstrip('/')} ({detail}): check the "
        "network and the key, or use --backend local (nothing was sent; re-run to resume)"
    )


def make_async_client(
    backend: Backend,
    *,
    max_retries: int = 3,
    timeout: float = 600.0,
    default_headers: dict[str, str] | None = None,
) -> AsyncAnthropic:
    """Build the SDK client for a backend."""
    return AsyncAnthropic(
        api_key=backend.api_key,
        base_url=backend.base_url,
        max_retries=max_retries,
        timeout=timeout,
        default_headers=default_headers,
    )
