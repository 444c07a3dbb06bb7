"""Delta detection: which source rows changed since the last load.

- ``detection``: timestamp + lookback, version and xmin cursors, keyset pages, the safe upper bound
  (oldest open transaction), row hashes and table comparison.
- ``last_modified``: last-modified tracking in keyset batches with a lookback, and its guarded upsert.
- ``pull``: the watermarked pull the 71.5 DAGs share (read, then advance by compare-and-set).
- ``partner_api``: a partner HTTP API (``modified_since``, keyset cursors, rate limits) and the client
  that syncs from it; run as a lab service with ``python -m cdclab.delta.partner_api``.
"""
