"""``s3://bucket/key`` sources: objects read through boto3, from buckets on ``allowed_hosts``.

A bucket is usable as a source when its exact name is an entry of ``allowed_hosts``
(``*.domain`` patterns and entries with a port never match a bucket). The list thus names
every place a source may come from: web hosts for http(s) URLs, buckets for ``s3://``
references. Nothing else is read, however much more the credentials could reach.

The client is configured as the S3 result storage's is: ``s3_endpoint_url`` (or the
endpoint boto3 finds in ``AWS_ENDPOINT_URL`` and the AWS config file) and ``s3_region``,
credentials from the standard AWS variables, files or instance role. ``version`` is the
object's ETag and size from one ``HEAD`` (no download), so an object replaced under the
same key gets a new checksum at its next registration check. ``open`` checks
``Content-Length`` against ``max_source_bytes``, then streams the body into a temporary
file counting the bytes, and deletes that file when the handle is closed.

A missing object (or bucket) is a :class:`SourceNotFoundError`, a refusal (access denied,
a bad key) a :class:`SourceError`, and an endpoint that cannot be reached, answers 5xx or
throttles an :class:`UnavailableError`, so the job is retried later.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import threading

from ..errors import LimitError, SourceError, SourceNotFoundError, UnavailableError
from ..s3 import MISSING, custom_endpoint, error_code, make_client  # boto3 itself: in make_client

_CHUNK = 64 * 1024
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# A source in a bucket that does not exist does not exist either (for result storage, a
# missing bucket is the configuration's fault instead: a 503).
_MISSING = (*MISSING, "NoSuchBucket")
_DENIED = ("403", "AccessDenied", "AllAccessDisabled", "AccountProblem")
_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken")
_BUSY = ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable", "503")

_clients: dict[tuple[str, str, float, int], object] = {}
_clients_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class S3Settings:
    """What an s3:// source needs from the configuration."""

    allowed_buckets: tuple[str, ...]
    endpoint_url: str
    region: str
    timeout: float

    @classmethod
    def from_config(cls, config) -> S3Settings:
        buckets = tuple(entry for entry in config.allowed_hosts if _BUCKET.match(entry))
        return cls(buckets, config.s3_endpoint_url.rstrip("/"), config.s3_region, config.download_timeout)

    def client(self):
        """One boto3 client per endpoint, region and AWS environment, made on first use
        (clients are thread-safe). A client keeps the endpoint and credentials it found when
        made: AWS_* variables set later (a deploy's credentials, ``AWS_ENDPOINT_URL``) get
        a client of their own."""
        aws = hash(frozenset(item for item in os.environ.items() if item[0].startswith("AWS_")))
        key = (self.endpoint_url, self.region, self.timeout, aws)
        client = _clients.get(key)
        if client is None:
            with _clients_lock:
                client = _clients.get(key)
                if client is None:
                    client = _clients[key] = _make_client(self)
        return client


def _make_client(settings: S3Settings):
    # The storage's settings, with the download deadline as read timeout.
    timeout = settings.timeout
    return make_client(settings.endpoint_url, settings.region, read_timeout=timeout, what="s3 sources")


def parse(reference: str, settings: S3Settings) -> tuple[str, str]:
    """(bucket, key) of an ``s3://bucket/key`` reference whose bucket is allowed; SourceError otherwise."""
    bucket, slash, key = reference[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise SourceError(f"source {reference!r}: expected 's3://bucket/key' with a valid bucket name")
    if not slash or not key or "\0" in key or len(key.encode("utf-8", "surrogatepass")) > 1024:
        raise SourceError(f"source {reference!r}: expected an object key after the bucket")
    if bucket not in settings.allowed_buckets:
        raise SourceError(f"source {reference!r}: bucket {bucket!r} is not on allowed_hosts")
    return bucket, key


@dataclasses.dataclass(frozen=True)
class S3Source:
    """An object in an allowed bucket; ``version`` is its ETag and size, ``open`` downloads it."""

    reference: str
    bucket: str
    key: str
    settings: S3Settings

    def version(self) -> str:
        """``etag:size`` from a HEAD request: a replaced object gets a new value."""
        client = self.settings.client()
        try:
            head = client.head_object(Bucket=self.bucket, Key=self.key)
        except Exception as error:
            raise self._error(error) from None
        return f"{head.get('ETag', '').strip(chr(34))}:{head.get('ContentLength', 0)}"

    def open(self, max_bytes: int):
        """The object's bytes in a temporary file, positioned at its start."""
        client = self.settings.client()
        try:
            response = client.get_object(Bucket=self.bucket, Key=self.key)
        except Exception as error:
            raise self._error(error) from None
        body = response["Body"]
        try:
            length = response.get("ContentLength")
            if length is not None and length > max_bytes:
                raise self._too_big(f"{length} bytes", max_bytes)
            # A real file, not a spooled one: some engines want a file descriptor.
            handle = tempfile.TemporaryFile(prefix="fileproc-s3-")  # noqa: SIM115 - the caller closes it
            try:
                received = 0
                while True:
                    try:
                        chunk = body.read(_CHUNK)
                    except Exception as error:
                        raise self._error(error, "download broke off") from None
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > max_bytes:
                        raise self._too_big(f"more than {max_bytes} bytes", max_bytes)
                    handle.write(chunk)
                handle.seek(0)
                return handle
            except BaseException:
                handle.close()
                raise
        finally:
            body.close()

    def _too_big(self, size: str, max_bytes: int) -> LimitError:
        return LimitError(f"source {self.reference!r} has {size}, more than max_source_bytes={max_bytes}")

    def _error(self, error: Exception, doing: str = "") -> Exception:
        """One line naming the reference, never botocore's traceback."""
        from botocore.exceptions import (
            ClientError,
            ConnectionError,
            HTTPClientError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        where = f"source {self.reference!r}" + (f": {doing}" if doing else "")
        if isinstance(error, NoCredentialsError):
            return UnavailableError(
                f"{where}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a profile)"
            )
        if isinstance(error, (ConnectionError, HTTPClientError, ReadTimeoutError, OSError)):
            endpoint = custom_endpoint(self.settings.client()) or "of AWS"
            return UnavailableError(
                f"{where}: cannot reach the S3 endpoint {endpoint} ({type(error).__name__})"
            )
        if isinstance(error, ClientError):
            code = error_code(error)
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _MISSING:
                return SourceNotFoundError(f"source {self.reference!r} does not exist ({code})")
            if code in _CREDENTIALS:  # the server's configuration, not this source
                return UnavailableError(f"{where}: S3 refused the credentials ({code})")
            if code in _DENIED:
                return SourceError(f"source {self.reference!r}: access denied ({code})")
            if code in _BUSY or status >= 500:
                return UnavailableError(f"{where}: S3 answered {code or status}; will try again later")
            message = error.response.get("Error", {}).get("Message") or code
            return SourceError(f"{where}: S3 answered {code}: {str(message).splitlines()[0]}")
        return UnavailableError(f"{where}: {type(error).__name__}")
