"""The local API's URL routes and the JSON shapes of its list and model endpoints.

Which endpoint a method and path name, list pagination, and the Models API objects built from the
model catalog.
"""

import re
from typing import Any

from fantasy_kg.domain.catalog import ModelInfo
from fantasy_kg.local_api.protocol import (
    invalid_request,
)

_BATCH_PATH = re.compile(r"^/v1/messages/batches/([^/]+)$")
_BATCH_ACTION_PATH = re.compile(r"^/v1/messages/batches/([^/]+)/(cancel|results)$")
_MODEL_PATH = re.compile(r"^/v1/models/([^/]+)$")


def route(method: str, path: str) -> tuple[str, str | None] | None:
    """Map a request to (endpoint name, path id) or None for unknown routes."""
    fixed = {
        ("POST", "/v1/messages"): "messages.create",
        ("POST", "/v1/messages/count_tokens"): "messages.count_tokens",
        ("GET", "/v1/models"): "models.list",
        ("POST", "/v1/messages/batches"): "batches.create",
        ("GET", "/v1/messages/batches"): "batches.list",
    }
    if (method, path) in fixed:
        return fixed[(method, path)], None
    if match := _BATCH_ACTION_PATH.match(path):
        action = match.group(2)
        if (method, action) == ("POST", "cancel"):
            return "batches.cancel", match.group(1)
        if (method, action) == ("GET", "results"):
            return "batches.results", match.group(1)
        return None
    if match := _BATCH_PATH.match(path):
        if method == "GET":
            return "batches.retrieve", match.group(1)
        if method == "DELETE":
            return "batches.delete", match.group(1)
        return None
    if method == "GET" and (match := _MODEL_PATH.match(path)):
        return "models.retrieve", match.group(1)
    return None


def page_limit(query: dict[str, str]) -> int:
    """The ``limit`` query parameter, checked like the real API (1 to 1000, default 20)."""
    raw = query.get("limit", "20")
    try:
        limit = int(raw)
    except ValueError:
        raise invalid_request("limit: Input should be a valid integer") from None
    if limit < 1:
        raise invalid_request("limit: Input should be greater than or equal to 1")
    if limit > 1000:
        raise invalid_request("limit: Input should be less than or equal to 1000")
    return limit


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """One page of a list endpoint in the API's shape (``data``, ``has_more``, first/last id)."""
    return {
        "data": data,
        "has_more": has_more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def _model_line(model: ModelInfo) -> str | None:
    for line in ("opus", "sonnet", "haiku", "fable", "mythos"):
        if f"-{line}-" in model.id:
            return line
    return None


def model_object(model: ModelInfo) -> dict[str, Any]:
    """``GET /v1/models`` entry for a catalog model (limits read from the catalog)."""
    retires = (
        model.retires if model.retires and re.fullmatch(r"\d{4}-\d\d-\d\d", model.retires) else None
    )
    effort = model.default_effort is not None
    yes = {"supported": True}
    no = {"supported": False}
    return {
        "type": "model",
        "id": model.id,
        "display_name": model.display_name,
        # The catalog holds no release dates; the API allows an epoch value when unknown.
        "created_at": "1970-01-01T00:00:00Z",
        "lifecycle": "deprecated" if model.status == "deprecated" else "active",
        "deprecated_at": None,
        "retires_at": f"{retires}T00:00:00Z" if retires else None,
        "line": _model_line(model),
        "max_input_tokens": model.context_window,
        "max_tokens": model.max_output_tokens,
        "capabilities": {
            "batch": yes,
            "citations": yes,
            "code_execution": no,
            "context_management": no,
            "effort": {
                "supported": effort,
                "low": {"supported": effort},
                "medium": {"supported": effort},
                "high": {"supported": effort},
                "max": {"supported": effort},
                "xhigh": {"supported": effort},
            },
            "image_input": yes,
            "pdf_input": yes,
            "server_tools": {"supported": False, "code_execution": no, "web_search": no},
            "structured_outputs": yes,
            "thinking": {
                "supported": True,
                "types": {
                    "adaptive": {"supported": model.thinking_default != "off"},
                    "between_tools": no,
                    "disabled": {"supported": model.thinking_default != "always"},
                    "enabled": {"supported": model.thinking_default == "off"},
                },
            },
        },
    }
