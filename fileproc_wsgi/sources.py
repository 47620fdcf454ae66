"""Resolving source references to files, refusing anything outside the configured roots.

A reference is ``path`` (under the ``default`` root) or ``root:path``. Absolute paths,
``..`` components, unknown roots and symlinks that lead out of their root are refused
with a :class:`~fileproc_wsgi.errors.SourceError` that names the reference, never the
server's directories. ``http(s)://`` references become
:class:`~fileproc_wsgi.http_sources.HttpSource` objects when their host is on
``allowed_hosts``, and are refused while that list is empty; ``s3://bucket/key``
references become :class:`~fileproc_wsgi.s3_sources.S3Source` objects when the bucket's
exact name is on ``allowed_hosts``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections.abc import Mapping

from .errors import LimitError, SourceError, SourceNotFoundError
from .http_sources import HttpSettings, HttpSource, check_url
from .s3_sources import S3Settings, S3Source
from .s3_sources import parse as parse_s3

_ROOT_PREFIX = re.compile(r"^([a-z][a-z0-9_-]*):(?!//)")
_REMOTE = ("http://", "https://", "s3://")


@dataclasses.dataclass(frozen=True)
class LocalSource:
    """A regular file inside a source root; ``path`` is its real (symlink-free) path."""

    reference: str
    path: str

    def version(self) -> str:
        """Size and modification time: a file replaced under the same name gets a new value."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise SourceNotFoundError(f"source {self.reference!r} does not exist") from None
        return f"{info.st_size}:{info.st_mtime_ns}"

    def open(self, max_bytes: int):
        """The file opened for reading, after checking it is still a regular file within limits."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise SourceNotFoundError(f"source {self.reference!r} does not exist") from None
        except OSError as error:
            raise SourceError(f"source {self.reference!r} cannot be read ({error.strerror})") from None
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            handle.close()
            raise SourceError(f"source {self.reference!r} is not a regular file")
        if info.st_size > max_bytes:
            handle.close()
            raise LimitError(
                f"source {self.reference!r} has {info.st_size} bytes, more than max_source_bytes={max_bytes}"
            )
        return handle


class Sources:
    """Turns references into :class:`LocalSource` (or :class:`HttpSource`) objects for
    one set of roots and, given ``http``, the hosts it may fetch from."""

    def __init__(
        self, roots: Mapping[str, str], *, http: HttpSettings | None = None, s3: S3Settings | None = None
    ):
        self._roots = dict(roots)
        self._real_roots: dict[str, str] = {}
        self._http = http
        self._s3 = s3

    @classmethod
    def for_config(cls, config) -> Sources:
        """The sources a :class:`~fileproc_wsgi.config.Config` allows: its roots and its hosts."""
        return cls(
            config.source_roots, http=HttpSettings.from_config(config), s3=S3Settings.from_config(config)
        )

    def resolve(self, reference: str) -> LocalSource | HttpSource | S3Source:
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
        real_root = self._real_root(root)
        real = os.path.realpath(os.path.join(real_root, relative))
        if os.path.commonpath((real, real_root)) != real_root:
            raise SourceError(f"source {reference!r} leads outside its root (through a symlink)")
        try:
            info = os.stat(real)
        except FileNotFoundError:
            raise SourceNotFoundError(f"source {reference!r} does not exist") from None
        except OSError as error:
            raise SourceError(f"source {reference!r} cannot be read ({error.strerror})") from None
        if not stat.S_ISREG(info.st_mode):
            raise SourceError(f"source {reference!r} is not a regular file")
        return LocalSource(reference, real)

    def _real_root(self, name: str) -> str:
        real = self._real_roots.get(name)
        if real is None:
            real = self._real_roots[name] = os.path.realpath(self._roots[name])
        return real
