"""Sets of tables named from a prefix: one lesson's tables, which a test runs on copies of its own.

Vocabulary:
- *table set*: an object that keeps a lesson's tables together and says how a table's name is made from
  its parts (a schema, a prefix, a mode...): its method ``name(what)``;
- *table*: a :class:`Table` attribute of the set's class; reading it gives ``name(<attribute name>)``.

- :class:`PrefixedTables`: the usual set, its tables named ``<prefix>_<table>``.

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

        tables = {
            what for klass in type(self).__mro__ for what, v in vars(klass).items() if isinstance(v, Table)
        }
        return {what: ident(name) for what, name in {**{w: self.name(w) for w in tables}, **more}.items()}
