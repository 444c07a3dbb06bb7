"""Upserts and merges: idempotent writes into targets.

- ``upsert``: upsert with a version guard, key-based deletes.
- ``aggregates``: incremental aggregations (delta update vs recompute of changed groups).
- ``star_schema``: a small star schema loaded incrementally (SCD2 and SCD1 dimensions, a fact).
"""
