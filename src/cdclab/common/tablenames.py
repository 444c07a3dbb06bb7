"""Sets of tables named from a prefix: one lesson's tables, which a test runs on copies of its own.

Vocabulary:
- *table set*: an object that keeps a lesson's tables together and says how a table's name is made from
  its parts (a schema, a prefix, a mode...): its method ``name(what)``;
- *table*: a :class:`Table` attribute of the set's class; reading it gives ``name(<attribute name>)``.

- :class:`PrefixedTables`: the usual set, its tables named ``<prefix>_<table>``.
- :class:`SchemaTables`: a set in one schema, its tables ``psycopg2.sql.Identifier(schema, <prefix><table>)``.

::

    @dataclass(frozen=True)
    class Tables(PrefixedTables):
        orders = Table()  # Tables("core.agg").orders == "core.agg_orders"
        metrics = Table()

The names are whatever ``name`` returns: a ``schema.table`` text for :func:`cdclab.common.db.ident`, or a
``psycopg2.sql.Identifier`` ready for a statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

from psycopg2 import sql

N = TypeVar("N", covariant=True)


class Named(Protocol[N]):
    """A table set: it makes the name of its table ``what``."""

    def name(self, what: str) -> N: ...


class Table:
    """A table of a table set, named after the attribute that holds it (see the module doc)."""

    what: str

    def __set_name__(self, owner: type, attr: str) -> None:
        self.what = attr

    @overload
    def __get__(self, obj: None, owner: Any = None) -> Table: ...

    @overload
    def __get__(self, obj: Named[N], owner: Any = None) -> N: ...

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        return self if obj is None else obj.name(self.what)


def tables_of(tables: Any) -> dict[str, Any]:
    """Every :class:`Table` of the table set ``tables`` (of its class and its bases) -> its name."""
    return {
        what: tables.name(what)
        for klass in type(tables).__mro__
        for what, v in vars(klass).items()
        if isinstance(v, Table)
    }


@dataclass(frozen=True)
class PrefixedTables:
    """A table set whose tables are named ``<prefix>_<table>`` (``core.agg`` + ``orders``)."""

    prefix: str

    def name(self, what: str) -> str:
        return f"{self.prefix}_{what}"

    def identifiers(self, **more: str) -> dict[str, Any]:
        """Every table of the set (and each of ``more``, a name by placeholder) quoted for a statement, by
        attribute name: ``sql.SQL("CREATE TABLE {orders} ...").format(**t.identifiers())``."""
        from cdclab.common.db import ident

        return {what: ident(name) for what, name in {**tables_of(self), **more}.items()}


@dataclass(frozen=True)
class SchemaTables:
    """A table set in the schema ``schema`` whose tables are named ``<prefix><table>`` (the prefix brings
    its own separator), as ``psycopg2.sql.Identifier`` ready for a statement."""

    schema: str
    prefix: str

    def name(self, what: str) -> sql.Identifier:
        return sql.Identifier(self.schema, f"{self.prefix}{what}")

    def identifiers(self, **more: Any) -> dict[str, Any]:
        """``schema`` (the schema's identifier), every table of the set and each of ``more`` (composables by
        placeholder): ``sql.SQL("CREATE SCHEMA IF NOT EXISTS {schema}; ...").format(**t.identifiers())``."""
        return {"schema": sql.Identifier(self.schema), **tables_of(self), **more}
