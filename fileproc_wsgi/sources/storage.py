"""Sources in storages that are not plain files, read through a backend.

A root may name a storage instead of a directory: ``"<kind>:<argument>"`` such as
``"django:default"``. Whatever provides that kind (``fileproc_django`` for ``django``)
calls :func:`register_storage_kind` with an opener that turns the argument into a
:class:`StorageBackend`. A backend that is plain files (``local_directory()``) is then a
directory root like any other; the others give :class:`StorageSource` objects, read
through the backend and spooled to a temporary file. Whatever a backend raises becomes a
:class:`~fileproc_wsgi.errors.UnavailableError` naming the storage (tried again later),
except a missing file, which is a :class:`~fileproc_wsgi.errors.SourceNotFoundError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol

from ..config import is_storage_kind
from ..errors import (
    ConfigError,
    FileProcError,
    LimitError,
    SourceNotFoundError,
    TimeLimitError,
    UnavailableError,
)

_CHUNK = 64 * 1024
# Who registers a kind, for the message a process that has not loaded it gives.
_PROVIDERS = {
    "django": "fileproc_django (add it to INSTALLED_APPS, or run `manage.py fileproc`)",
}

log = logging.getLogger(__name__)


class StorageBackend(Protocol):
    """What an opener registered with :func:`register_storage_kind` returns.

    ``label`` names the storage in messages ("Django storage 'default' (S3Storage)");
    never a server path or a secret. ``local_directory()`` is a directory when the storage
    is plain files, which the root then is in every respect, or None. ``version(name)``
    changes when the file does (size and modified time, or an ETag); ``open(name)`` is a
    readable binary file object. Both raise
    :class:`~fileproc_wsgi.errors.SourceNotFoundError` (or ``FileNotFoundError``) for a
    file that is not there; anything else they raise counts as the storage being down.
    """

    label: str

    def local_directory(self) -> str | None: ...

    def version(self, name: str) -> str: ...

    def open(self, name: str) -> BinaryIO: ...


_openers: dict[str, Callable[[str], StorageBackend]] = {}
_openers_lock = threading.Lock()


def register_storage_kind(kind: str, opener: Callable[[str], StorageBackend]) -> None:
    """Make roots ``"<kind>:<argument>"`` usable in this process: ``opener(argument)``
    gives their :class:`StorageBackend`. Registering a kind again replaces its opener
    (Django may run ``ready()`` more than once)."""
    if not is_storage_kind(kind):
        raise ConfigError(f"storage kind {kind!r}: expected two or more lower-case letters")
    if not callable(opener):
        raise ConfigError(f"storage kind {kind!r}: the opener must be callable, got {opener!r}")
    with _openers_lock:
        _openers[kind] = opener


@contextlib.contextmanager
def _storage_boundary(reference: str, label: str, doing: str) -> Iterator[None]:
    """Where a backend's own exceptions become this project's: a missing file is
    SourceNotFoundError; our own errors pass; anything else (the storage library's
    errors, the network's, a bug in the backend) is the storage being unavailable."""
    try:
        yield
    except (SourceNotFoundError, FileNotFoundError):
        raise SourceNotFoundError(f"source {reference!r} does not exist in {label}") from None
    except FileProcError:
        raise
    except Exception as error:
        log.info("fileproc_wsgi: %s failed %s %r", label, doing, reference, exc_info=True)
        detail = str(error).splitlines()[0][:300] if str(error) else None
        raise UnavailableError(
            f"source {reference!r}: {label} failed {doing} ({type(error).__name__})", detail=detail
        ) from None


def opener_for(kind: str, reference: str, root: str) -> Callable[[str], StorageBackend]:
    """The opener registered for ``kind``; a ConfigError naming what to load when none is."""
    opener = _openers.get(kind)
    if opener is None:
        provider = _PROVIDERS.get(kind, f"a module that registers the {kind!r} kind")
        # A fault of this process's set-up, not of the source: a job refused for it is
        # tried again once the set-up is right.
        raise ConfigError(
            f"source {reference!r}: root {root!r} names a {kind} storage; this process has "
            f"not loaded {provider}"
        )
    return opener


@dataclasses.dataclass(frozen=True)
class StorageSource:
    """A file in a storage that is not plain files, read through its backend.

    ``name`` is the path under the storage (already checked like a path under a
    directory root). :meth:`open` spools what it reads into a temporary file as the
    reader asks for it, so a header read fetches the first chunks only (when the backend
    streams), and holds it to ``max_bytes`` whatever the backend says of its size.
    """

    reference: str
    backend: StorageBackend
    name: str

    @property
    def label(self) -> str:
        return str(getattr(self.backend, "label", None) or type(self.backend).__name__)

    def version(self) -> str:
        """The backend's version of the file: a file replaced under the same name gets a new one."""
        with _storage_boundary(self.reference, self.label, "to give the file's version"):
            version = self.backend.version(self.name)
        if not isinstance(version, str) or not version:
            raise UnavailableError(
                f"source {self.reference!r}: {self.label} gave no version for the file ({version!r})"
            )
        return version

    def open(self, max_bytes: int) -> BinaryIO:
        """A seekable handle on the file's bytes; closing it deletes what was spooled.

        A failure of the storage while the handle is read (a library may swallow it and
        report a broken file instead) is what leaving its ``with`` block raises.
        """
        stream = self._open(max_bytes)
        try:
            spool = _Spool(self, stream, max_bytes)
        except BaseException:
            _close_quietly(stream)
            raise
        return _StorageHandle(spool, _CHUNK)

    def copy_to(self, target: BinaryIO, max_bytes: int, deadline: float | None = None) -> int:
        """Write the whole file into ``target``; the bytes written. Raises LimitError
        past ``max_bytes`` and TimeLimitError past ``deadline`` (a :func:`time.monotonic`
        time), checked between chunks."""
        stream = self._open(max_bytes)
        written = 0
        try:
            while True:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeLimitError(
                        f"source {self.reference!r}: reading it from {self.label} took longer than "
                        "max_processing_seconds"
                    )
                with _storage_boundary(self.reference, self.label, "while reading the file"):
                    chunk = stream.read(_CHUNK)
                if not chunk:
                    return written
                written += len(chunk)
                if written > max_bytes:
                    raise _too_big(self.reference, max_bytes)
                target.write(chunk)
        finally:
            _close_quietly(stream)

    @contextlib.contextmanager
    def spooled(self, max_bytes: int, deadline: float | None = None) -> Iterator[str]:
        """The whole file copied to a private temporary file, for a worker process to
        read (it cannot open the storage: that needs the web framework loaded). The file
        is in a directory of its own that only this user may enter, and both are removed
        when the block ends, whatever happened. Raises as :meth:`copy_to`."""
        directory = tempfile.mkdtemp(prefix="fileproc-job-")
        try:
            descriptor, path = tempfile.mkstemp(dir=directory, prefix="source-")
            with os.fdopen(descriptor, "wb") as target:
                self.copy_to(target, max_bytes, deadline)
            yield path
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _open(self, max_bytes: int):
        with _storage_boundary(self.reference, self.label, "to open the file"):
            stream = self.backend.open(self.name)
            if stream is None or not callable(getattr(stream, "read", None)):
                raise TypeError(f"open() gave {type(stream).__name__}, not a readable file")
            try:
                # Django's File objects say their size: a file over the limit is then
                # refused before a byte is read, at registration as for a local file.
                # What is read is counted all the same: a size can be wrong.
                declared = getattr(stream, "size", None)
                if isinstance(declared, int) and not isinstance(declared, bool) and declared > max_bytes:
                    raise LimitError(
                        f"source {self.reference!r} has {declared} bytes, more than "
                        f"max_source_bytes={max_bytes}"
                    )
            except BaseException:
                _close_quietly(stream)
                raise
        return stream


def _too_big(reference: str, max_bytes: int) -> LimitError:
    return LimitError(f"source {reference!r} has more than max_source_bytes={max_bytes} bytes")


def _close_quietly(stream) -> None:
    with contextlib.suppress(Exception):
        stream.close()


class _Spool(io.RawIOBase):
    """A backend's stream made seekable: bytes are copied into a temporary file as far
    as a read or seek needs them (to the end for a seek from the end)."""

    def __init__(self, source: StorageSource, stream, max_bytes: int):
        super().__init__()
        self._source = source
        self._stream = stream
        self._max_bytes = max_bytes
        # A real file, not a SpooledTemporaryFile: a job's source can be 100 MB.
        self._file = tempfile.TemporaryFile(prefix="fileproc-storage-")  # noqa: SIM115 - closed in close()
        self._have = 0
        self._ended = False
        self._position = 0
        self.failure: FileProcError | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            self._fill(None)
            position = self._have + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if position < 0:
            raise OSError(22, "negative seek position")
        self._position = position
        return position

    def readinto(self, buffer) -> int:
        wanted = len(buffer)
        if not wanted:
            return 0
        self._fill(self._position + wanted)
        self._file.seek(self._position)
        count = self._file.readinto(buffer)
        self._position += count
        return count

    def _fill(self, upto: int | None) -> None:
        """Copy from the stream until the file holds ``upto`` bytes (None: all of them)."""
        source = self._source
        try:
            while not self._ended and (upto is None or self._have < upto):
                with _storage_boundary(source.reference, source.label, "while reading the file"):
                    chunk = self._stream.read(_CHUNK)
                if not chunk:
                    self._ended = True
                    break
                if self._have + len(chunk) > self._max_bytes:
                    raise _too_big(source.reference, self._max_bytes)
                self._file.seek(self._have)
                self._file.write(chunk)
                self._have += len(chunk)
        except FileProcError as error:
            self.failure = self.failure or error
            raise

    def close(self) -> None:
        if not self.closed:
            _close_quietly(self._stream)
            self._file.close()
        super().close()


class _StorageHandle(io.BufferedReader):
    """The spool, buffered; leaving its ``with`` block raises the storage's failure in
    place of whatever a library made of it (PDFium and PyAV read through callbacks
    that turn any exception into "cannot read the file")."""

    raw: _Spool

    def __exit__(self, kind, error, traceback):
        failure = self.raw.failure
        self.close()
        if error is not None and failure is not None and error is not failure:
            raise failure from None
        return False
