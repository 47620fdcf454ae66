"""Results as files under one directory, written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

from ..errors import UnavailableError
from .base import StoredFile


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
