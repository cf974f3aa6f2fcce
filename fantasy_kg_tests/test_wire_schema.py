"""The structured-output schema Claude gets stays inside the API's strict-schema limits.

``anthropic.transform_schema(WireExtractionResult)`` is exactly what goes into
``output_config.format``. The API rejects (400, "Schema is too complex for compilation") schemas
with more than 24 optional parameters or 16 union-typed parameters in total, and rejects
``minimum``/``maximum``/``minLength``/``maxLength``, ``minItems`` above 1 and any
``additionalProperties`` other than ``false`` (reference/anthropic_api.md §4.1). Inside a batch
such a request only fails as an errored result a day later, so these checks run on every commit.
"""

from dataclasses import dataclass, field
from typing import Any

import anthropic
import pytest
from pydantic import BaseModel, Field

from fantasy_kg.domain.schemas import WireExtractionResult

MAX_OPTIONAL = 24
MAX_UNIONS = 16
UNSUPPORTED_KEYWORDS = {
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "patternProperties",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "if",
    "then",
    "else",
    "not",
    "oneOf",
    "contains",
}


@dataclass
class Audit:
    optional: list[str] = field(default_factory=list)
    unions: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    empty_objects: list[str] = field(default_factory=list)
    open_objects: list[str] = field(default_factory=list)
    undocumented: list[str] = field(default_factory=list)
    bad_refs: list[str] = field(default_factory=list)


def audit(schema: dict[str, Any]) -> Audit:
    """Walk a JSON schema and collect everything the strict-output compiler would refuse."""
    out = Audit()
    defs = schema.get("$defs", {})

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]")
            return
        if not isinstance(node, dict):
            return
        for key in node.keys() & UNSUPPORTED_KEYWORDS:
            out.unsupported.append(f"{where}.{key}")
        if node.get("minItems", 0) > 1:
            out.unsupported.append(f"{where}.minItems={node['minItems']}")
        if "anyOf" in node or isinstance(node.get("type"), list):
            out.unions.append(where)
        ref = node.get("$ref")
        if ref is not None and not (
            isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs
        ):
            out.bad_refs.append(f"{where}: {ref}")
        if node.get("type") == "object":
            props = node.get("properties") or {}
            if node.get("additionalProperties") is not False:
                out.open_objects.append(where)
            if not props:
                out.empty_objects.append(where)
            required = set(node.get("required", []))
            for name, prop in props.items():
                if name not in required:
                    out.optional.append(f"{where}.{name}")
                if not (isinstance(prop, dict) and str(prop.get("description", "")).strip()):
                    out.undocumented.append(f"{where}.{name}")
        for key, value in node.items():
            if key in ("properties", "$defs"):
                for name, sub in value.items():
                    walk(sub, f"{where}.{name}")
            elif key in ("items", "anyOf", "allOf", "additionalProperties"):
                walk(value, f"{where}.{key}")

    walk(schema, "$")
    return out


def _refs_in(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"][8:]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs_in(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs_in(v) for v in node)) if node else set()
    return set()


@pytest.fixture(scope="module")
def wire_schema() -> dict[str, Any]:
    return anthropic.transform_schema(WireExtractionResult)


def test_wire_schema_is_within_the_strict_output_limits(wire_schema: dict[str, Any]) -> None:
    found = audit(wire_schema)
    assert len(found.optional) <= MAX_OPTIONAL, found.optional
    assert len(found.unions) <= MAX_UNIONS, found.unions
    assert found.unsupported == []
    assert found.empty_objects == [], "objects that can only be {} cannot carry data"
    assert found.open_objects == [], "strict schemas need additionalProperties: false"
    assert found.bad_refs == []


def test_every_wire_property_has_a_description(wire_schema: dict[str, Any]) -> None:
    found = audit(wire_schema)
    assert found.undocumented == []
    # The descriptions are instructions to Claude: they must survive transform_schema.
    entity = wire_schema["$defs"]["WireEntity"]["properties"]
    assert "verbatim" in entity["mentions"]["description"]
    assert "canonical" in entity["id"]["description"]


def test_wire_schema_is_not_recursive(wire_schema: dict[str, Any]) -> None:
    defs = wire_schema.get("$defs", {})
    graph = {name: _refs_in(body) for name, body in defs.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, set()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert not [name for name in graph if reaches(name, name, {name})]
    assert set(graph) >= {"WireEntity", "WireRelationship", "WireSchemaProposal"}


def test_attributes_travel_as_name_value_pairs(wire_schema: dict[str, Any]) -> None:
    attrs = wire_schema["$defs"]["WireEntity"]["properties"]["attributes"]
    item = wire_schema["$defs"][attrs["items"]["$ref"].rsplit("/", 1)[1]]
    assert set(item["properties"]) == {"name", "value"}
    assert item["additionalProperties"] is False


class _Loose(BaseModel):
    """A schema built to break every rule, to prove the audit sees each violation."""

    free: dict[str, Any] = Field(description="free-form object")
    bounded: int = Field(ge=0, le=5, description="bounded int")
    short: str = Field(max_length=3)
    many: list[str] = Field(min_length=2, description="at least two")


def test_audit_catches_each_kind_of_violation() -> None:
    raw = _Loose.model_json_schema()
    found = audit(raw)
    assert {"$.bounded.minimum", "$.bounded.maximum", "$.short.maxLength"} <= set(found.unsupported)
    assert "$.many.minItems=2" in found.unsupported
    assert "$.short" in found.undocumented
    assert "$" in found.open_objects and "$.free" in found.open_objects
    assert "$.free" in found.empty_objects


def test_audit_counts_optional_and_union_parameters() -> None:
    fields: dict[str, Any] = {
        f"opt_{i}": (str | None, Field(default=None, description="optional")) for i in range(25)
    }
    from pydantic import create_model

    model = create_model("TooManyOptionals", **fields)
    found = audit(model.model_json_schema())
    assert len(found.optional) == 25 > MAX_OPTIONAL
    assert len(found.unions) == 25 > MAX_UNIONS
