"""Database access for DAGs and the library.

Vocabulary:
- *conn id*: an Airflow connection id; the lab defines ``shop`` (source), ``warehouse`` (targets,
  state, dead letters), ``kafka_default``, ``minio`` and ``kafka_connect`` through ``AIRFLOW_CONN_*``
  variables that the launcher sets. DAG code names conn ids, never hosts or passwords.
- :func:`connect` opens a psycopg2 connection through the official Postgres provider's hook, so the
  same code runs in a task, in ``dag.test()`` and in tests.
- :func:`ident` quotes a possibly schema-qualified identifier (``"core"."customers"``); values are
  always bound parameters, never formatted into SQL text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from psycopg2 import sql

SHOP = "shop"
WAREHOUSE = "warehouse"


def connect(conn_id: str, application_name: str = "cdclab") -> Any:
    """A new psycopg2 connection for an Airflow connection id (autocommit off).

    The connection is looked up through the official Postgres provider's hook; the driver is
    psycopg2 on purpose (the provider's own ``get_conn`` hands out psycopg 3 when that is installed,
    and this library builds its SQL with ``psycopg2.sql``).
    """
    import psycopg2
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    c = PostgresHook.get_connection(conn_id)
    return psycopg2.connect(
        host=c.host,
        port=c.port or 5432,
        dbname=c.schema,
        user=c.login,
        password=c.password,
        application_name=application_name,
    )


@contextmanager
def transaction(conn_id: str) -> Iterator[Any]:
    """``with transaction("warehouse") as cur:`` — commit on success, roll back on error, then close."""
    conn = connect(conn_id)
    try:
        with conn:
            with conn.cursor() as cur:
                yield cur
    finally:
        conn.close()


def ident(name: str) -> sql.Composable:
    """Quote ``schema.table`` or ``table`` as SQL identifiers."""
    return sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))
