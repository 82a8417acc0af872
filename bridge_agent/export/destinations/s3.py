"""An S3 destination (boto3, in a worker thread): AWS S3 or any S3-compatible storage.

A file of at most one part (`part_size`) goes in one `put_object`: S3 makes an object visible
only once its upload is complete, so a reader never sees half of it. A larger file goes as a
multipart upload, part by part from the file (memory holds one part, not the file); if any
step fails the upload is aborted, so neither an object nor a pending upload (which S3 would
bill and keep) is left. Each attempt starts a fresh upload.

Rules, and why:

- boto3 is synchronous: every call runs in `asyncio.to_thread`, off the event loop.
- botocore's own retries are off (`total_max_attempts = 1`): the attempts are ours
  (`retrying`), bounded by the destination's `attempts`, so they are counted, logged and
  reported in one place.
- TLS is always verified; an `http://` endpoint is accepted by the config only on loopback.
- Checksums only where S3 requires them (`when_required`): several S3-compatible stores refuse
  the newer flexible checksums.
- Credentials are `Secret`s handed to the client only; errors are described from the error code
  and message, with any credential masked.

Transient (retried): connection errors and timeouts, 5xx, 429 and S3's `SlowDown`,
`RequestTimeout`, `InternalError`. Permanent (at once): access denied, no such bucket, bad
credentials, any other 4xx.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions
import structlog

from bridge_agent.config.exports import S3DestinationSettings
from bridge_agent.export.destinations.base import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    Delivered,
    check_keep,
    check_name,
    newest_first,
    retrying,
    scrub,
)

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = ["S3Destination"]

log = structlog.get_logger("bridge_agent.export.destinations")

_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
    }
)
T = TypeVar("T")

_DELETE_BATCH = 1000  # DeleteObjects takes at most this many keys


class S3Destination:
    """Exports under one prefix of one bucket."""

    def __init__(
        self,
        settings: S3DestinationSettings,
        *,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        self.settings = settings
        self._backoff = (backoff_base, backoff_cap)
        self._client: S3Client | None = None

    @property
    def label(self) -> str:
        s = self.settings
        where = f" at {s.endpoint_url}" if s.endpoint_url else ""
        return f"s3://{s.bucket}/{s.prefix}{where}"

    def __repr__(self) -> str:
        return f"S3Destination({self.label!r})"

    async def deliver(self, local_file: Path, name: str) -> Delivered:
        check_name(name)
        local = Path(local_file)
        size, attempts = await self._retrying(f"uploading {name}", self._upload, local, name)
        s = self.settings
        return Delivered(name, f"s3://{s.bucket}/{s.prefix}{name}", size, attempts)

    async def rotate(self, prefix: str, keep: int) -> list[str]:
        check_keep(keep)
        deleted, _ = await self._retrying(f"rotating {prefix}", self._rotate, prefix, keep)
        return deleted

    async def _retrying(self, what: str, work: Callable[..., T], *args: Any) -> tuple[T, int]:
        """`work(*args)` in a worker thread (boto3 blocks), retried on transient failures."""
        return await retrying(
            self.label,
            what,
            lambda: asyncio.to_thread(work, *args),
            attempts=self.settings.attempts,
            transient=_transient,
            describe=self._describe,
            backoff_base=self._backoff[0],
            backoff_cap=self._backoff[1],
        )

    # -- in the worker thread ------------------------------------------------------------------

    def client(self) -> S3Client:
        """The boto3 client, made once (boto3 clients are thread-safe, sessions are not)."""
        if self._client is None:
            s = self.settings
            config = botocore.config.Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=s.timeout,
                read_timeout=s.timeout,
                # Path-style for S3-compatible endpoints (MinIO, Ceph, a bucket name with dots).
                s3={"addressing_style": "path" if s.endpoint_url else "auto"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            session = boto3.session.Session()
            self._client = session.client(
                "s3",
                region_name=s.region or None,
                endpoint_url=s.endpoint_url or None,
                aws_access_key_id=_reveal(s.access_key_id),
                aws_secret_access_key=_reveal(s.secret_access_key),
                verify=True,
                config=config,
            )
        return self._client

    def _upload(self, local: Path, name: str) -> int:
        s = self.settings
        key = f"{s.prefix}{name}"
        size = local.stat().st_size
        if size <= s.part_size:
            with local.open("rb") as body:
                self.client().put_object(Bucket=s.bucket, Key=key, Body=body, ContentLength=size)
            return size
        client = self.client()
        upload_id = client.create_multipart_upload(Bucket=s.bucket, Key=key)["UploadId"]
        try:
            parts: list[CompletedPartTypeDef] = []
            with local.open("rb") as source:
                while chunk := source.read(s.part_size):
                    number = len(parts) + 1
                    answer = client.upload_part(
                        Bucket=s.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                    )
                    parts.append({"ETag": answer["ETag"], "PartNumber": number})
            client.complete_multipart_upload(
                Bucket=s.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            self._abort(key, upload_id)
            raise
        return size

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.client().abort_multipart_upload(
                Bucket=self.settings.bucket, Key=key, UploadId=upload_id
            )
        except Exception as exc:  # the upload's own failure is what the caller must see
            log.warning(
                "destination_abort_failed",
                destination=self.label,
                key=key,
                cause=self._describe(exc),
            )

    def _rotate(self, prefix: str, keep: int) -> list[str]:
        s = self.settings
        client = self.client()
        names: list[str] = []
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=s.bucket, Prefix=f"{s.prefix}{prefix}-"
        )
        for page in pages:
            names.extend(o["Key"][len(s.prefix) :] for o in page.get("Contents", ()))
        old = newest_first(prefix, names)[keep:]
        for start in range(0, len(old), _DELETE_BATCH):
            batch = old[start : start + _DELETE_BATCH]
            answer = client.delete_objects(
                Bucket=s.bucket,
                Delete={"Objects": [{"Key": f"{s.prefix}{n}"} for n in batch], "Quiet": True},
            )
            if errors := answer.get("Errors"):
                first = errors[0]
                raise DeleteFailed(
                    f"{len(errors)} not deleted, e.g. {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message')}"
                )
        # A multipart upload of this export that a killed agent left pending (no upload of
        # this export runs while its rotation does).
        with contextlib.suppress(botocore.exceptions.ClientError):
            pending = client.list_multipart_uploads(Bucket=s.bucket, Prefix=f"{s.prefix}{prefix}-")
            for upload in pending.get("Uploads", ()):
                key = upload.get("Key", "")
                if newest_first(prefix, [key[len(s.prefix) :]]) and "UploadId" in upload:
                    self._abort(key, upload["UploadId"])
        return sorted(old)

    def _describe(self, exc: BaseException) -> str:
        s = self.settings
        if isinstance(exc, botocore.exceptions.ClientError):
            error: dict[str, Any] = dict(exc.response.get("Error", {}))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            text = f"{error.get('Code', 'error')} (HTTP {status}): {error.get('Message', '')}"
        elif isinstance(exc, botocore.exceptions.NoCredentialsError):
            text = "no credentials: give access_key_id and secret_access_key"
        elif isinstance(exc, OSError) and exc.strerror and not str(exc).startswith("Could not"):
            text = exc.strerror
        else:
            text = f"{type(exc).__name__}: {exc}"
        return scrub(text, (s.access_key_id, s.secret_access_key))


class DeleteFailed(Exception):
    """DeleteObjects answered with per-key errors (a transient state of the bucket, often)."""


def _reveal(secret: Any) -> str | None:
    return None if secret is None else str(secret.reveal())


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, botocore.exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in _TRANSIENT_CODES or status >= 500 or status == 429
    if isinstance(exc, botocore.exceptions.HTTPClientError | DeleteFailed):
        return True  # connection refused, reset, timeouts (botocore's own classes)
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return False  # no credentials, bad parameters, unknown endpoint: asking again won't help
    return isinstance(exc, ConnectionError | TimeoutError)
