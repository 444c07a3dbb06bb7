"""Time: half-open intervals, time zones, partitions and event-time windows.

- ``intervals``: windows, data intervals, partitions, lateness, batches (the vocabulary of time).
- ``timezones``: UTC storage, business-time-zone reporting, DST change days.
- ``partitions``: declarative range partitions aligned to data intervals, replaced whole per (re)run.
- ``window_aggregates``: event-time window aggregates that are recomputed, not incremented.
- ``arrivals``: the first-arrival ledger (when the pipeline first saw a row).
- ``out_of_order``: children that arrive before their parent, buffered and released.
"""
