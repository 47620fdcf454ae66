"""Where results are kept, and the URL they are reachable at.

Results are immutable: a key is derived from the checksum, so a finished file is never
rewritten with other content. Local storage writes a temporary file in the target
directory and renames it into place, so a reader sees either nothing or the whole file;
S3 storage (:mod:`fileproc_wsgi.s3`) gets the same from one conditional PUT.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from typing import NamedTuple, Protocol

from .config import Config
from .errors import ConfigError, UnavailableError

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
    storage (:class:`LocalStorage`, :class:`~.s3.S3Storage`, or a site's own)."""

    local: bool  # files on this host's disk: path() works and the middleware may serve them
    temporary_urls: bool  # url() expires (presigned): redirects are temporary, never cached

    def url(self, key: str) -> str: ...
    def path(self, key: str) -> str: ...
    def exists(self, key: str) -> bool: ...
    def put(self, key: str, data: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def keys(self) -> Iterator[StoredFile]: ...


class LocalStorage:
    """Results as files under one directory, served by the middleware or a web server."""

    local = True
    temporary_urls = False

    def __init__(self, directory: str, public_url: str):
        self.directory = directory
        self.public_url = public_url

    def url(self, key: str) -> str:
        return self.public_url + key

    def path(self, key: str) -> str:
        return os.path.join(self.directory, *key.split("/"))

    def exists(self, key: str) -> bool:
        return os.path.isfile(self.path(key))

    def put(self, key: str, data: bytes) -> None:
        target = self.path(key)
        folder = os.path.dirname(target)
        try:
            os.makedirs(folder, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(handle, "wb") as stream:
                    stream.write(data)
                    stream.flush()
                    os.fsync(stream.fileno())
                os.chmod(temporary, 0o644)
                os.replace(temporary, target)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as error:
            raise UnavailableError(f"result storage unavailable: cannot write ({error.strerror})") from None

    def delete(self, key: str) -> None:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            pass

    def keys(self) -> Iterator[StoredFile]:
        """Every file under the directory (results, and temporary ``.tmp-*.part`` files a
        crashed writer left), in no particular order."""
        pending = [self.directory]
        while pending:
            folder = pending.pop()
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            except OSError as error:
                raise UnavailableError(
                    f"result storage unavailable: cannot list ({error.strerror})"
                ) from None
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # renamed or deleted meanwhile
                    key = os.path.relpath(entry.path, self.directory).replace(os.sep, "/")
                    yield StoredFile(key, info.st_size, info.st_mtime)


def open_storage(config: Config) -> ResultStorage:
    """The storage a Config names: a :class:`LocalStorage` or an :class:`~.s3.S3Storage`."""
    if config.storage.startswith("file://"):
        return LocalStorage(config.storage[len("file://") :], config.public_url)
    if config.storage.startswith("s3://"):
        from .s3 import S3Storage  # boto3 is imported only by sites that use it

        return S3Storage(config)
    raise ConfigError(
        f"storage: {config.storage.split('://')[0]}:// storage is not available in this version"
    )
