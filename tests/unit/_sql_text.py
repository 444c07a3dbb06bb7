"""Shared helpers of the SQL-text unit tests: psycopg2 SQL rendered without a connection."""

from __future__ import annotations

from psycopg2 import sql


def text(composed: sql.Composable) -> str:
    """Render psycopg2 SQL without a connection (identifiers only: no literals in these statements)."""

    def render(part: sql.Composable) -> str:
        if isinstance(part, sql.Composed):
            return "".join(render(p) for p in part.seq)
        if isinstance(part, sql.SQL):
            return part.string
        if isinstance(part, sql.Identifier):
            return ".".join('"' + s.replace('"', '""') + '"' for s in part.strings)
        if isinstance(part, sql.Literal):
            return repr(part.wrapped)
        if isinstance(part, sql.Placeholder):
            return "%s" if part.name is None else f"%({part.name})s"
        raise TypeError(part)

    return render(composed)
