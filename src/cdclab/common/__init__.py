"""Foundations every concept package uses.

- ``db``: connections from Airflow connection ids, ``transaction()``, ``ident()`` for identifiers.
- ``ddl``: ``ensure()``, shared-table DDL at task time that is safe under concurrency (and skipped on a
  migrated warehouse).
- ``options``: closed option sets (``one_of``) checked at run time.
- ``tablenames``: sets of tables named from a prefix (``PrefixedTables``, ``Table``).
"""
