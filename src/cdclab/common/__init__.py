"""Foundations every concept package uses.

- ``db``: connections from Airflow connection ids, ``transaction()``, ``ident()`` for identifiers.
- ``ddl``: ``ensure()``, task-time DDL of a run's own tables that is safe under concurrency;
  ``require()``, the check that a shared table's versioned schema file was applied (``NotMigratedError``).
- ``options``: closed option sets (``one_of``) checked at run time.
- ``tablenames``: sets of tables named from a prefix (``PrefixedTables``, ``Table``).
"""
