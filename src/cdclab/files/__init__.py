"""Incremental file processing on object storage (the lab's MinIO, S3 API).

Vocabulary (used by every module in this package and by the 71.4 / 71.9.2 DAGs):

- *object*: one S3 object, identified by ``bucket`` + ``key`` and versioned by its ``etag``; an object
  overwritten under the same key gets a new ETag and counts as a **new file** (:class:`ObjectInfo`).
- *pipeline*: a name that owns a slice of the state tables (like a Kafka consumer group): every row in
  ``state.file_manifest``, ``state.file_chunks``, ``state.file_audit`` carries it, so two DAGs (or two
  tests) never see each other's progress.
- *landing prefix*: where producers drop files (``landing/<pipeline>/...``); a *pattern* (``*.csv``,
  ``*.jsonl.gz``) selects data files under it.
- *watermark* / *lag*: the highest ``LastModified`` the pipeline has registered; listing ignores objects
  older than ``watermark - lag`` and checks everything younger against the *ledger* (the manifest
  table), because S3 ``LastModified`` is not a commit order: an object can become visible after a
  younger one (multipart uploads carry their start time, clocks skew).
- *file manifest* (``state.file_manifest``): one row per (pipeline, bucket, key, etag): size, ETag,
  sha256, row count, ``status`` (``discovered`` -> ``processing`` -> ``loaded`` | ``quarantined`` |
  ``failed``; ``archived`` after archiving), attempts and last error. State lives in ``warehouse`` so
  restarts neither reprocess nor miss files.
- *producer manifest*: a ``_manifest.json`` a producer writes next to its data files *after* them; it
  lists keys, sizes, sha256 and row counts and is the commit marker of a batch (:mod:`.manifest`).
- *record*: one newline-terminated line (CSV row or JSON object); its *source offset* is the byte
  offset where it starts in the (decompressed) file, the natural key of a loaded row.
- *chunk*: a byte range ``[start, end)`` of a file whose boundaries are aligned to record starts, read
  with an S3 Range GET (:mod:`.chunking`).
- *quarantine*: corrupt input (bad row, truncated gzip, empty file, checksum or row-count mismatch) is
  moved to the ``quarantine`` bucket with a ``.reason.json`` next to it, a ``dlq.file_quarantine`` row
  and a manifest status ``quarantined``; the other files continue.
- *audit trail* (``state.file_audit``): one row per move/copy/delete the pipeline did to an object.

Modules: :mod:`.errors`, :mod:`.store`, :mod:`.records`, :mod:`.state`, :mod:`.detection`,
:mod:`.manifest`, :mod:`.loading`, :mod:`.chunking`, :mod:`.archive`, :mod:`.logs`; :mod:`.steps` holds the
DAGs' task bodies (each opens its own transactions).
"""
