"""Hostile strings and answer builders shared by the hostile-output scenarios.

Each string targets one way untrusted model output has broken pipelines: path traversal, NUL
bytes cutting C strings, quotes and SQL fragments for string-built SQL, unbounded sizes, emoji
(4-byte UTF-8), right-to-left overrides that make logs lie, and lone surrogates (valid JSON
``"\\ud800"`` escapes that no UTF-8 encoder accepts).
"""

import json
from typing import Any

HOSTILE_STRINGS: dict[str, str] = {
    "traversal": "../../../../etc/passwd",
    "absolute": "/etc/shadow",
    "slash": "house/of/thorne",
    "backslash": "..\\..\\windows\\system32",
    "nul": "mira\x00thorne",
    "quotes": 'O\'Brien "the "Bold"` `',
    "sql": "x'); DROP TABLE entities; --",
    "sql_union": "' UNION SELECT * FROM duckdb_settings() --",
    "long": "L" * 10_000,
    "emoji": "🐉 Dragon of the 🌋 Ashen Peak 👑",
    "rtl": "\u202eenrohT ariM\u202c שלום عالم",
    "surrogate": "lone\ud800half",
    "dots": "..",
    "format": "%s %(name)s {0} ${HOME} `id`",
    "whitespace": "   \t  ",
}
"""Name → hostile value; names are used as test ids and in the report."""

ASCII_ID_SAFE = "safe_entity"


def entity(eid: str, name: str, **extra: Any) -> dict[str, Any]:
    """A wire-valid entity (every field present) with the given id and name."""
    base: dict[str, Any] = {
        "id": eid,
        "type": "Character",
        "name": name,
        "aliases": [],
        "attributes": [],
        "mentions": [],
        "confidence": 0.9,
    }
    base.update(extra)
    return base


def relationship(src: str, dst: str, **extra: Any) -> dict[str, Any]:
    """A wire-valid relationship."""
    base: dict[str, Any] = {
        "source": src,
        "target": dst,
        "type": "ENEMY_OF",
        "description": "",
        "evidence": [],
        "confidence": 0.8,
    }
    base.update(extra)
    return base


def answer(
    entities: list[Any], relationships: list[Any] | None = None, proposals: list[Any] | None = None
) -> dict[str, Any]:
    """A whole answer document."""
    return {
        "entities": entities,
        "relationships": relationships or [],
        "schema_proposals": proposals or [],
    }


def hostile_answer() -> dict[str, Any]:
    """One answer holding every hostile string as id, name, alias, attribute and evidence, plus
    duplicate ids, out-of-range confidences and a self-relationship, next to valid items."""
    ents: list[Any] = [entity(ASCII_ID_SAFE, "Mira Thorne"), entity("aldous", "Aldous Thorne")]
    for key, value in HOSTILE_STRINGS.items():
        ents.append(entity(value, f"Name {key}"))
        ents.append(
            entity(
                f"name_{key}",
                value,
                aliases=[value],
                attributes=[{"name": "title", "value": value}],
                mentions=[value],
            )
        )
    ents.append(entity(ASCII_ID_SAFE, "Duplicate of the first"))
    ents.append(entity("too_sure", "Overconfident", confidence=1.5))
    ents.append(entity("too_unsure", "Negative", confidence=-0.25))
    rels: list[Any] = [
        relationship("aldous", ASCII_ID_SAFE, evidence=[HOSTILE_STRINGS["sql"]]),
        relationship(ASCII_ID_SAFE, ASCII_ID_SAFE),
        relationship("aldous", ASCII_ID_SAFE, confidence=7.0),
        relationship(HOSTILE_STRINGS["traversal"], "aldous", type="LOYAL_TO"),
    ]
    return answer(ents, rels)


def deeply_nested_text(depth: int = 100_000) -> str:
    """An answer whose first entity is an array nested ``depth`` levels deep (valid JSON)."""
    return (
        '{"entities": [' + "[" * depth + "]" * depth + '], "relationships": [], '
        '"schema_proposals": []}'
    )


def dumps(doc: Any) -> str:
    """JSON text as a model would send it (ASCII escapes: lone surrogates travel as ``\\ud800``)."""
    return json.dumps(doc)
