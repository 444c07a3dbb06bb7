"""Object-store access through the official Amazon provider's ``S3Hook`` (Airflow connection ``minio``).

Vocabulary:
- :class:`ObjectInfo`: what a listing returns for one object (bucket, key, size, etag, last_modified).
- :class:`ObjectStore`: list by prefix and pattern, GET (whole or a byte range), PUT, copy, delete.

Why S3Hook and not ``airflow.sdk.ObjectStoragePath``: the ``s3://`` scheme of ObjectStoragePath needs
``s3fs`` (``apache-airflow-providers-amazon[s3fs]``), which the lab's environment does not install; the
hook speaks the same S3 API through boto3 and the same connection id. Range GETs use the hook's boto3
client (``Range: bytes=a-b``).

*Pinned reads*: ``get``/``get_range`` with ``etag=`` send ``If-Match: "<etag>"``, so they return the bytes
of the version that was planned (listed, registered, chunked) or raise
:class:`~cdclab.files.errors.ObjectChanged` — never the bytes of a newer upload under the same key, and
never half of one version and half of another across several range reads.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cdclab.files.errors import ObjectChanged

MINIO_CONN_ID = "minio"


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str
    last_modified: datetime

    @classmethod
    def from_listing(cls, bucket: str, item: dict[str, Any]) -> ObjectInfo:
        modified = item["LastModified"]
        if isinstance(modified, str):
            modified = datetime.fromisoformat(modified)
        return cls(
            bucket=bucket,
            key=item["Key"],
            size=int(item.get("Size", item.get("ContentLength", 0))),
            etag=str(item["ETag"]).strip('"'),
            last_modified=modified.astimezone(UTC),
        )

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form for XCom."""
        return {
            "bucket": self.bucket,
            "key": self.key,
            "size": self.size,
            "etag": self.etag,
            "last_modified": self.last_modified.isoformat(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObjectInfo:
        return cls(
            bucket=d["bucket"],
            key=d["key"],
            size=int(d["size"]),
            etag=d["etag"],
            last_modified=datetime.fromisoformat(d["last_modified"]).astimezone(UTC),
        )


def matches(key: str, prefix: str, pattern: str) -> bool:
    """``pattern`` is matched against the key relative to ``prefix`` (``*`` does not stop at ``/``)."""
    return key.startswith(prefix) and fnmatch.fnmatchcase(key[len(prefix) :], pattern)


class ObjectStore:
    """Thin typed wrapper over ``S3Hook``; one instance per task."""

    def __init__(self, conn_id: str = MINIO_CONN_ID) -> None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        self.hook = S3Hook(aws_conn_id=conn_id)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.hook.get_conn()
        return self._client

    def list_objects(self, bucket: str, prefix: str, pattern: str = "*") -> list[ObjectInfo]:
        """Every object under ``prefix`` whose relative key matches ``pattern``, oldest first."""
        items = self.hook.iter_file_metadata(prefix=prefix, bucket_name=bucket)
        found = [ObjectInfo.from_listing(bucket, i) for i in items if matches(i["Key"], prefix, pattern)]
        return sorted(found, key=lambda o: (o.last_modified, o.key))

    def head(self, bucket: str, key: str) -> ObjectInfo | None:
        meta = self.hook.head_object(key=key, bucket_name=bucket)
        if meta is None:
            return None
        return ObjectInfo.from_listing(bucket, {"Key": key, **meta})

    def _body(self, bucket: str, key: str, etag: str | None, **extra: Any) -> Any:
        """The object's streaming body; with ``etag``, of that version or :class:`ObjectChanged`."""
        from botocore.exceptions import ClientError

        if etag:
            extra["IfMatch"] = f'"{etag.strip(chr(34))}"'
        try:
            return self.client.get_object(Bucket=bucket, Key=key, **extra)["Body"]
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if etag and code in ("PreconditionFailed", "412", "NoSuchKey", "404"):
                now = self.head(bucket, key)
                raise ObjectChanged(
                    f"s3://{bucket}/{key} changed after it was planned: planned ETag {etag}, now "
                    + (f"ETag {now.etag} ({now.size} bytes)" if now else "the object is gone")
                    + ". Nothing of it was loaded from this read; the new version is a new file in the "
                    "manifest once detection lists it"
                ) from None
            raise

    def _get(self, bucket: str, key: str, etag: str | None, **extra: Any) -> bytes:
        return bytes(self._body(bucket, key, etag, **extra).read())

    def get(self, bucket: str, key: str, etag: str | None = None) -> bytes:
        """The whole object; with ``etag``, that version or :class:`ObjectChanged`."""
        return self._get(bucket, key, etag)

    def stream(
        self, bucket: str, key: str, chunk_bytes: int = 1 << 20, etag: str | None = None
    ) -> Iterator[bytes]:
        """The object's bytes in pieces of up to ``chunk_bytes`` as they arrive (one GET, no full copy);
        with ``etag``, of that version or :class:`ObjectChanged` (raised before the first piece)."""
        body = self._body(bucket, key, etag)
        try:
            yield from body.iter_chunks(chunk_bytes)
        finally:
            body.close()

    def get_range(self, bucket: str, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        """Bytes ``[start, end)`` of an object with one Range GET (``end`` is exclusive); with ``etag``,
        of that version or :class:`ObjectChanged`."""
        if end <= start:
            return b""
        return self._get(bucket, key, etag, Range=f"bytes={start}-{end - 1}")

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.hook.load_bytes(data, key=key, bucket_name=bucket, replace=True)

    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> None:
        self.hook.copy_object(
            source_bucket_key=src_key,
            dest_bucket_key=dst_key,
            source_bucket_name=src_bucket,
            dest_bucket_name=dst_bucket,
        )

    def delete(self, bucket: str, keys: list[str]) -> None:
        if keys:
            self.hook.delete_objects(bucket=bucket, keys=keys)
