"""One exception per failure mode of file processing; each message says what happened and how to fix it.

:class:`CorruptFile` and its subclasses mean *the input is bad*: the loader quarantines the file and
continues with the others. Everything else is an operational error: the task fails and retries.
"""

from __future__ import annotations


class FileProcessingError(Exception):
    """Base class of every error raised by :mod:`cdclab.files`."""


class CorruptFile(FileProcessingError):
    """The object's content cannot be loaded as is; it belongs in quarantine (``reason`` is recorded)."""

    reason = "corrupt"

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class EmptyFile(CorruptFile):
    reason = "empty_file"


class TruncatedGzip(CorruptFile):
    reason = "truncated_gzip"


class BadRecord(CorruptFile):
    reason = "bad_record"


class ChecksumMismatch(CorruptFile):
    reason = "checksum_mismatch"


class RowCountMismatch(CorruptFile):
    reason = "row_count_mismatch"


class ManifestInvalid(CorruptFile):
    """A producer manifest is not valid JSON or misses fields; the producer must rewrite it."""

    reason = "manifest_invalid"


class ManifestFileMissing(FileProcessingError):
    """A manifest lists a file that is not (yet) in the bucket: the producer has not finished the upload
    or wrote the manifest too early. The batch stays pending and is retried on the next run."""


class NotSplittable(FileProcessingError):
    """The file cannot be split into byte ranges (compressed); load it in one pass or store it uncompressed."""


class ChunkIncomplete(FileProcessingError):
    """Result assembly found chunks that are not loaded yet; rerun the failed chunk tasks first."""


class LogGap(FileProcessingError):
    """Log lines were lost: the file holding the saved position rotated away before it was read."""


class ObjectChanged(FileProcessingError):
    """The object was replaced (or deleted) after it was planned: a read pinned to the planned ETag
    (S3 ``If-Match``) was refused. Nothing of it is loaded; the new version is another ledger row once
    detection lists it."""


class FilesExhausted(FileProcessingError):
    """Files used up their attempts: they are ``exhausted`` in ``state.file_manifest`` with the last error
    and are not retried any more until someone acts (fix the cause, then reprocess them)."""
