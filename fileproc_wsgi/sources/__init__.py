"""Resolving source references to files, refusing anything outside the configured roots.

A reference is ``path`` (under the ``default`` root) or ``root:path``. Absolute paths,
``..`` components, unknown roots and symlinks that lead out of their root are refused
with a :class:`~fileproc_wsgi.errors.SourceError` that names the reference, never the
server's directories. :class:`Sources` decides which kind of source a reference is; each
kind lives in its own module:

- :mod:`.local`: a file under a directory root (:class:`LocalSource`);
- :mod:`.storage`: a file in a storage named by a root such as ``"django:default"``
  (:class:`StorageSource`, :func:`register_storage_kind`);
- :mod:`.http`: an ``http(s)://`` URL whose host is on ``allowed_hosts``
  (:class:`~fileproc_wsgi.sources.http.HttpSource`; refused while that list is empty);
- :mod:`.s3`: ``s3://bucket/key`` when the bucket's exact name is on ``allowed_hosts``
  (:class:`~fileproc_wsgi.sources.s3.S3Source`).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import BinaryIO, Protocol

from ..config import storage_root
from ..errors import ConfigError, FileProcError, SourceError
from .http import HttpSettings, HttpSource, check_url
from .local import LocalSource, local_file
from .s3 import S3Settings, S3Source
from .s3 import parse as parse_s3
from .storage import StorageBackend, StorageSource, opener_for, register_storage_kind

__all__ = [
    "HttpSource",
    "LocalSource",
    "S3Source",
    "Source",
    "Sources",
    "StorageBackend",
    "StorageSource",
    "register_storage_kind",
]

_ROOT_PREFIX = re.compile(r"^([a-z][a-z0-9_-]*):(?!//)")
_REMOTE = ("http://", "https://", "s3://")


class Source(Protocol):
    """What every kind of source gives the registrar and the processor: its reference as
    written, a version that changes when its bytes do (part of the checksum), and its bytes,
    at most ``max_bytes`` of them (a binary file; the caller closes it)."""

    reference: str

    def version(self) -> str: ...
    def open(self, max_bytes: int) -> BinaryIO: ...


class Sources:
    """Turns references into :class:`LocalSource` (or :class:`StorageSource`,
    :class:`HttpSource`, :class:`S3Source`) objects for one set of roots and, given
    ``http`` and ``s3``, the hosts and buckets it may fetch from. A storage root's backend
    is opened once, when first used."""

    def __init__(
        self, roots: Mapping[str, str], *, http: HttpSettings | None = None, s3: S3Settings | None = None
    ):
        self._roots = dict(roots)
        self._real_roots: dict[str, str] = {}
        self._backends: dict[str, tuple[StorageBackend, str | None]] = {}
        self._backends_lock = threading.Lock()
        self._http = http
        self._s3 = s3

    @classmethod
    def for_config(cls, config) -> Sources:
        """The sources a :class:`~fileproc_wsgi.config.Config` allows: its roots and its hosts."""
        return cls(
            config.source_roots, http=HttpSettings.from_config(config), s3=S3Settings.from_config(config)
        )

    def resolve(self, reference: str) -> LocalSource | StorageSource | HttpSource | S3Source:
        """Check a reference and find its file; raises SourceError or SourceNotFoundError.

        An http(s) URL or s3:// reference is only checked against ``allowed_hosts`` here:
        no request is made until the source is opened (or, for S3, asked its version)."""
        if reference.startswith(_REMOTE):
            scheme = reference.split(":", 1)[0]
            if scheme == "s3" and self._s3 is not None and self._s3.allowed_buckets:
                return S3Source(reference, *parse_s3(reference, self._s3), self._s3)
            if scheme == "s3" or self._http is None or not self._http.allowed_hosts:
                raise SourceError(f"source {reference!r}: {scheme} sources are not enabled on this server")
            check_url(reference, reference, self._http)
            return HttpSource(reference, self._http)
        match = _ROOT_PREFIX.match(reference)
        root, relative = (match.group(1), reference[match.end() :]) if match else ("default", reference)
        if root not in self._roots:
            known = ", ".join(sorted(self._roots)) or "none"
            raise SourceError(f"source {reference!r}: unknown root {root!r} (configured roots: {known})")
        if "\0" in relative or not relative.strip():
            raise SourceError(f"source {reference!r}: expected a file path after the root")
        if relative.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", relative):
            raise SourceError(
                f"source {reference!r}: absolute paths are not allowed, use a path relative to a source root"
            )
        if ".." in re.split(r"[\\/]", relative):
            raise SourceError(f"source {reference!r}: '..' is not allowed in a source path")
        try:
            relative.encode()
        except UnicodeEncodeError:  # a lone surrogate: no file system can have that name
            raise SourceError(f"source {reference!r}: not a valid file name") from None
        storage = storage_root(self._roots[root])
        if storage is None:
            return local_file(reference, relative, self._real_root(root))
        backend, directory = self._backend(reference, root, *storage)
        if directory is not None:
            return local_file(reference, relative, directory)
        return StorageSource(reference, backend, relative)

    def _backend(self, reference: str, root: str, kind: str, argument: str):
        """The backend of a storage root and its real local directory, opened once."""
        found = self._backends.get(root)
        if found is not None:
            return found
        with self._backends_lock:
            found = self._backends.get(root)
            if found is not None:
                return found
            opener = opener_for(kind, reference, root)
            value = self._roots[root]
            try:
                backend = opener(argument)
                directory = backend.local_directory()
            except FileProcError:
                raise
            except Exception as error:
                reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
                raise ConfigError(
                    f"source_roots: root {root!r} ({value!r}) cannot be opened: {reason}"
                ) from None
            if directory is not None:
                directory = os.path.realpath(directory)
            found = self._backends[root] = (backend, directory)
            return found

    def _real_root(self, name: str) -> str:
        real = self._real_roots.get(name)
        if real is None:
            real = self._real_roots[name] = os.path.realpath(self._roots[name])
        return real
