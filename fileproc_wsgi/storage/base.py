"""What every result storage shares: the key a result is stored under, the listing entry,
and :class:`ResultStorage`, what the rest of the package asks of a storage."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple, Protocol

# The Cache-Control of a result, wherever it is served from: its key never names other bytes.
IMMUTABLE = "public, max-age=31536000, immutable"
_KEY = re.compile(r"^[0-9a-f]{2}/([0-9a-f]{32})\.([a-z0-9]{2,5})$")


def result_key(checksum: str, extension: str) -> str:
    """Results are fanned out over 256 directories so none grows huge."""
    return f"{checksum[:2]}/{checksum}.{extension}"


def parse_key(key: str) -> tuple[str, str] | None:
    """``(checksum, extension)`` of a well-formed key, else None."""
    match = _KEY.match(key)
    return (match.group(1), match.group(2)) if match else None


class StoredFile(NamedTuple):
    """One file in result storage, as listed by ``keys()``: its key, size and mtime (unix s)."""

    key: str
    size: int
    modified: float


class ResultStorage(Protocol):
    """What the middleware, the processor and the maintenance commands ask of a result
    storage (:class:`~fileproc_wsgi.storage.LocalStorage`,
    :class:`~fileproc_wsgi.storage.s3.S3Storage`, or a site's own)."""

    local: bool  # files on this host's disk: path() works and the middleware may serve them
    temporary_urls: bool  # url() expires (presigned): redirects are temporary, never cached

    def url(self, key: str) -> str: ...
    def path(self, key: str) -> str: ...
    def exists(self, key: str) -> bool: ...
    def put(self, key: str, data: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def keys(self) -> Iterator[StoredFile]: ...
