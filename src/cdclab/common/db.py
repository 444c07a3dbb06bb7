"""Database access for DAGs and the library.

Vocabulary:
- *conn id*: an Airflow connection id; the lab defines ``shop`` (source), ``warehouse`` (targets,
  state, dead letters), ``kafka_default``, ``minio`` and ``kafka_connect`` through ``AIRFLOW_CONN_*``
  variables that the launcher sets. DAG code names conn ids, never hosts or passwords.
- :func:`connect` opens a psycopg2 connection for a conn id: from its ``AIRFLOW_CONN_<ID>`` variable
  when the process has one (what Airflow itself reads first, see :func:`env_connection`), else through
  the official Postgres provider's hook (connections kept in Airflow's database). The same code runs in
  a task, in ``dag.test()``, in tests and from the CLI/bench, where it imports no Airflow (4-5 s saved).
- :func:`ident` quotes a possibly schema-qualified identifier (``"core"."customers"``); values are
  always bound parameters, never formatted into SQL text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from psycopg2 import sql

SHOP = "shop"
WAREHOUSE = "warehouse"


@dataclass(frozen=True)
class EnvConnection:
    """The fields of an Airflow connection that this library reads."""

    conn_type: str | None = None
    host: str | None = None
    port: int | None = None
    schema: str | None = None
    login: str | None = None
    password: str | None = None
    extra_dejson: dict[str, Any] = field(default_factory=dict)


def env_connection(conn_id: str) -> EnvConnection | None:
    """The connection ``AIRFLOW_CONN_<CONN_ID>`` defines (Airflow's URI or JSON form), or None.

    Airflow's own lookup checks these variables before its metadata database, so reading them directly
    gives the same connection without importing Airflow."""
    raw = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if not raw:
        return None
    if raw.lstrip().startswith("{"):
        doc = json.loads(raw)
        extra = doc.get("extra") or {}
        return EnvConnection(
            conn_type=doc.get("conn_type"),
            host=doc.get("host"),
            port=int(doc["port"]) if doc.get("port") else None,
            schema=doc.get("schema"),
            login=doc.get("login"),
            password=doc.get("password"),
            extra_dejson=json.loads(extra) if isinstance(extra, str) else dict(extra),
        )
    uri = urlsplit(raw)
    query = dict(parse_qsl(uri.query))
    extra = json.loads(query["__extra__"]) if "__extra__" in query else query
    return EnvConnection(
        conn_type=uri.scheme.replace("-", "_") or None,
        host=unquote(uri.hostname) if uri.hostname else None,
        port=uri.port,
        schema=unquote(uri.path.lstrip("/")) or None,
        login=unquote(uri.username) if uri.username is not None else None,
        password=unquote(uri.password) if uri.password is not None else None,
        extra_dejson=extra,
    )


def get_connection(conn_id: str) -> Any:
    """The connection for ``conn_id``: its environment variable if set, else Airflow's lookup."""
    found = env_connection(conn_id)
    if found is not None:
        return found
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook.get_connection(conn_id)


def connect(conn_id: str, application_name: str = "cdclab") -> Any:
    """A new psycopg2 connection for an Airflow connection id (autocommit off). Its
    ``application_name`` (pg_stat_activity) is ``cdclab`` unless ``CDCLAB_APPLICATION_NAME`` names it.

    The connection comes from :func:`get_connection`; the driver is psycopg2 on purpose (the provider's
    own ``get_conn`` hands out psycopg 3 when that is installed, and this library builds its SQL with
    ``psycopg2.sql``).
    """
    import psycopg2

    c = get_connection(conn_id)
    if application_name == "cdclab":  # an operator's (or the benchmark's) name for this run's sessions
        application_name = os.environ.get("CDCLAB_APPLICATION_NAME") or application_name
    return psycopg2.connect(
        host=c.host,
        port=c.port or 5432,
        dbname=c.schema,
        user=c.login,
        password=c.password,
        application_name=application_name,
    )


@contextmanager
def transaction(conn_id: str, application_name: str = "cdclab") -> Iterator[Any]:
    """``with transaction("warehouse") as cur:`` — commit on success, roll back on error, then close
    (the connection of :func:`connect`)."""
    conn = connect(conn_id, application_name)
    try:
        with conn:
            with conn.cursor() as cur:
                yield cur
    finally:
        conn.close()


def ident(name: str) -> sql.Composable:
    """Quote ``schema.table`` or ``table`` as SQL identifiers."""
    return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))


def insert_row(cur: Any, table: str, row: Mapping[str, Any], returning: str | None = None) -> Any:
    """``INSERT INTO table (<row's keys>) VALUES (<row's values>)``, the values bound as parameters;
    with ``returning`` the value of that column of the new row (a generated id), else ``None``."""
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        ident(table),
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(sql.Placeholder() * len(row)),
    )
    if returning is None:
        cur.execute(statement, list(row.values()))
        return None
    cur.execute(statement + sql.SQL(" RETURNING {}").format(sql.Identifier(returning)), list(row.values()))
    return cur.fetchone()[0]


def insert_rows(
    cur: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, on_conflict: str = ""
) -> int:
    """``INSERT INTO table (columns) VALUES (%s, ...)`` once per row (a tuple in ``columns``' order,
    values bound), followed by ``on_conflict`` (SQL text such as ``ON CONFLICT (id) DO NOTHING``) when
    given. Returns the number of rows sent."""
    if not columns:
        raise ValueError(f"insert_rows into {table}: no columns")
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({}){}").format(
        ident(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        sql.SQL(" " + on_conflict if on_conflict else ""),
    )
    values = [tuple(r) for r in rows]
    for row in values:
        if len(row) != len(columns):
            raise ValueError(
                f"insert_rows into {table}: {len(row)} values for {len(columns)} columns {tuple(columns)}"
            )
    if values:
        cur.executemany(statement, values)
    return len(values)
