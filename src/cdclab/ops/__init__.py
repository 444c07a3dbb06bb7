"""Operating pipelines: recovery, monitoring, alerting, diagnostics, measurement, the lab page.

- ``recovery``: retries with backoff, dead letters, the interval ledger that drives gap filling,
  validation against the source.
- ``health``: health metrics with thresholds (progress, lag, gaps, drift, slots) as dashboard rows.
- ``alerts``: critical findings delivered to ``marts.alerts`` and the task log (a notifier).
- ``diagnostics``: find, explain, repair and prevent gaps, bad watermarks, duplicates and late rows.
- ``perf``: what a pipeline read, wrote and cost (plans, buffers, durations), break-even points.
- ``labpage``: the "CDC lab" page the Airflow plugin serves.
"""
