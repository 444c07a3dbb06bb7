"""State: where a pipeline remembers how far it got.

- ``watermarks``: typed watermarks with history and compare-and-set (table, Variable and asset stores),
  run metrics.
- ``backup``: versioned JSON snapshots of the state rows (watermarks, Kafka offsets) in the object store,
  and their restore.
"""
