"""Streams: event streams from Kafka folded into the warehouse exactly once.

- ``windows``: tumbling event-time windows with allowed lateness, checkpoints and offsets in one
  transaction.
- ``exactly_once``: exactly-once effect from at-least-once delivery, layer by layer (idempotent writes,
  transactions, dedup, checkpoints).
"""
