"""Results in an S3 bucket (AWS or any S3-compatible server), reached through boto3.

``storage="s3://bucket/prefix"`` keeps each result at ``prefix/<key>``. A result is written
with one PUT, which S3 makes visible whole or not at all, and with ``If-None-Match: *`` so a
finished object is never replaced: a second worker's write is refused and the first object
stays. A server that answers 501 to conditional writes gets a look first and then the write
instead: two workers in the gap between them can both write, and the later whole object wins.
Both made the same instructions, and the processor's token check leaves only that gap open;
a server that silently ignores ``If-None-Match`` has the same race.

Redirects go to ``public_url`` + key when one is configured (a CDN or a public bucket;
it is the URL the prefix is served at, as it is the results directory's for local storage),
to a presigned GET URL when ``presign_seconds`` > 0 (a private bucket), and otherwise to the
object's own URL on the endpoint: the one boto3 resolved, however it was given
(``s3_endpoint_url``, ``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ``endpoint_url`` in the
AWS config file), by path on a server other than AWS's. Every failure to reach or use the bucket becomes an
:class:`UnavailableError` with one line saying why, so a request gets a 503 to retry.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

from ..config import Config
from ..errors import ConfigError, UnavailableError
from ..formats import CONTENT_TYPES, FORMAT_OF_EXTENSION
from ..s3 import EXISTS, MISSING, UNSUPPORTED, custom_endpoint, error_code, make_client
from .base import IMMUTABLE, StoredFile


class S3Storage:
    """Results as objects under one bucket prefix; the middleware never serves them itself."""

    local = False

    def __init__(self, config: Config):
        bucket, _, prefix = config.storage[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError(f"storage: expected 's3://bucket/prefix', got {config.storage!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        # Config fills public_url with the local files/ route when none is given; that route
        # serves nothing for a bucket, so it counts as no public URL here.
        default = f"{config.prefix}/files/"
        self.public_url = config.public_url if config.public_url != default else ""
        # A public URL (a CDN signing its own way, say) wins over presigning.
        self.presign_seconds = 0 if self.public_url else config.presign_seconds
        # A presigned URL expires: the middleware must not cache it or redirect permanently.
        self.temporary_urls = self.presign_seconds > 0
        self.client = make_client(
            config.s3_endpoint_url.rstrip("/"), config.s3_region, read_timeout=30, what="storage"
        )
        self.endpoint_url = custom_endpoint(self.client)  # as boto3 resolved it, however given
        self.region = self.client.meta.region_name
        self._conditional = True

    def object_key(self, key: str) -> str:
        return self.prefix + key

    def url(self, key: str) -> str:
        if self.public_url:
            return self.public_url + key
        if self.presign_seconds:
            try:
                return self.client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": self.object_key(key)},
                    ExpiresIn=self.presign_seconds,
                )
            except Exception as error:  # no credentials to sign with
                raise self._unavailable(error) from None
        path = quote(self.object_key(key))
        if self.endpoint_url:
            return f"{self.endpoint_url}/{quote(self.bucket)}/{path}"
        return f"https://{self.bucket}.s3.{self.region or 'us-east-1'}.amazonaws.com/{path}"

    def path(self, key: str) -> str:
        raise NotImplementedError("S3 results have no local path; use url()")

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except Exception as error:
            if error_code(error) in MISSING:
                return False
            raise self._unavailable(error) from None
        return True

    def put(self, key: str, data: bytes) -> None:
        content_type = CONTENT_TYPES.get(FORMAT_OF_EXTENSION.get(key.rpartition(".")[2], ""))
        arguments = {
            "Bucket": self.bucket,
            "Key": self.object_key(key),
            "Body": data,
            "ContentType": content_type or "application/octet-stream",
            "CacheControl": IMMUTABLE,
        }
        if self._conditional:
            try:
                self.client.put_object(IfNoneMatch="*", **arguments)
                return
            except Exception as error:
                code = error_code(error)
                if code in EXISTS:
                    return  # finished by another worker: the first object stays
                if code not in UNSUPPORTED:
                    raise self._unavailable(error) from None
                self._conditional = False  # one assignment: safe across threads
        # No conditional writes on this server: look, then write (see the module docstring).
        if self.exists(key):
            return
        try:
            self.client.put_object(**arguments)
        except Exception as error:
            raise self._unavailable(error) from None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))
        except Exception as error:
            if error_code(error) not in MISSING:
                raise self._unavailable(error) from None

    def keys(self) -> Iterator[StoredFile]:
        """Every object under the prefix, as :class:`~.storage.StoredFile` with keys
        relative to it."""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    yield StoredFile(
                        item["Key"][len(self.prefix) :], int(item["Size"]), item["LastModified"].timestamp()
                    )
        except Exception as error:
            raise self._unavailable(error) from None

    def _unavailable(self, error: Exception) -> UnavailableError:
        """One line a client may read; what S3 or the connection said, and the endpoint, are
        its ``detail``, for the log. Never botocore's traceback."""
        from botocore.exceptions import ClientError, ConnectionError, NoCredentialsError

        where = f"s3://{self.bucket}"
        if isinstance(error, NoCredentialsError):
            reason = "no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a profile)"
        elif isinstance(error, ConnectionError):
            reason = "cannot reach the S3 endpoint"  # which one is for the log (detail), not clients
        elif isinstance(error, ClientError):
            code = error_code(error)
            if code == "NoSuchBucket":
                reason = f"bucket {self.bucket!r} does not exist"
            elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                reason = f"access to {where} denied ({code})"
            else:
                reason = f"{where} answered {code}"
        else:
            reason = f"{where}: {type(error).__name__}"
        said = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        detail = f"{self.endpoint_url or 'AWS'}: {said}"
        return UnavailableError(f"result storage unavailable: {reason.splitlines()[0]}", detail=detail)
