"""Column declarations: every warehouse table's columns are declared once, on its row class.

A row class field is annotated ``Annotated[T, Col(sql, doc)]``. The warehouse derives its DDL,
the load casts and the Dagster column schema from these declarations, so a column is named,
typed and described in exactly one place (pure data: the domain never imports DuckDB).
"""

from dataclasses import dataclass, fields, is_dataclass
from typing import Annotated, Any, get_args, get_origin, get_type_hints


@dataclass(frozen=True)
class Col:
    """How one field is stored: its DuckDB type (with constraints) and what it means.

    Attributes:
        sql: Type and constraints as in ``CREATE TABLE``, e.g. ``"VARCHAR NOT NULL"``.
        doc: What the column holds, for analysts (Dagster column schema, ``COMMENT ON``).
    """

    sql: str
    doc: str


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a table, in table order."""

    name: str
    sql: str
    doc: str

    @property
    def type(self) -> str:
        """The bare DuckDB type (``"VARCHAR[]"``), without ``NOT NULL`` or ``DEFAULT``."""
        upper = self.sql.upper()
        cut = len(self.sql)
        for word in (" NOT NULL", " DEFAULT ", " PRIMARY KEY"):
            at = upper.find(word)
            if at != -1:
                cut = min(cut, at)
        return self.sql[:cut].strip()


@dataclass(frozen=True)
class TableSpec:
    """A table: name, description, columns and primary key, all from one row class."""

    name: str
    doc: str
    columns: tuple[ColumnSpec, ...]
    primary_key: tuple[str, ...]


_COLUMNS: dict[type[Any], tuple[ColumnSpec, ...]] = {}


def columns_of(row_type: type[Any]) -> tuple[ColumnSpec, ...]:
    """The columns declared by a row class's ``Annotated[..., Col]`` fields, in field order.

    Raises:
        TypeError: a field lacks its ``Col`` (every column must be typed and described).
    """
    cached = _COLUMNS.get(row_type)
    if cached is not None:
        return cached
    if not is_dataclass(row_type):
        raise TypeError(f"{row_type!r} is not a dataclass")
    hints = get_type_hints(row_type, include_extras=True)
    out = []
    for f in fields(row_type):
        hint = hints[f.name]
        col = None
        if get_origin(hint) is Annotated:
            col = next((a for a in get_args(hint)[1:] if isinstance(a, Col)), None)
        if col is None:
            raise TypeError(f"{row_type.__name__}.{f.name} has no Col(sql, doc) annotation")
        out.append(ColumnSpec(f.name, col.sql, col.doc))
    _COLUMNS[row_type] = tuple(out)
    return _COLUMNS[row_type]


def table_spec(row_type: type[Any]) -> TableSpec:
    """The table a row class declares (``TABLE``, ``PRIMARY_KEY`` and the docstring's summary)."""
    doc = (row_type.__doc__ or "").strip().split("\n\n")[0]
    return TableSpec(
        name=str(row_type.TABLE),
        doc=" ".join(doc.split()),
        columns=columns_of(row_type),
        primary_key=tuple(getattr(row_type, "PRIMARY_KEY", ())),
    )


def column_names(row_type: type[Any]) -> list[str]:
    """Column names of a row class, in table order."""
    return [c.name for c in columns_of(row_type)]
