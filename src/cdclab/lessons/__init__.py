"""Helpers that exist for one lesson only: the set-up, capture and measurement steps a curriculum DAG
calls, kept apart from the reusable patterns (``cdclab.delta.detection``, ``cdclab.state.watermarks``, ``cdclab.merge.upsert``,
``cdclab.cdc``, ...). One module per lesson (or per pair of lessons that share a table); the module
docstring names the DAG it serves. A helper that a second lesson needs moves into the pattern module.
"""
