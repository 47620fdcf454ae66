"""Files under a directory root: :class:`LocalSource` and the check that finds one.

A reference's path has already been checked by :class:`~fileproc_wsgi.sources.Sources`
(no absolute path, no ``..``); here the file itself must be a regular file reached
without leaving its root through a symlink.
"""

from __future__ import annotations

import dataclasses
import os
import stat

from ..errors import ConfigError, LimitError, SourceError, SourceNotFoundError


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


def local_file(reference: str, relative: str, real_root: str) -> LocalSource:
    """The file ``relative`` under a directory root: a regular file, reached without
    leaving the root through a symlink."""
    real = os.path.realpath(os.path.join(real_root, relative))
    if os.path.commonpath((real, real_root)) != real_root:
        raise SourceError(f"source {reference!r} leads outside its root (through a symlink)")
    try:
        info = os.stat(real)
    except FileNotFoundError:
        if not os.path.isdir(real_root):
            # Settings that do not match this machine (a command run with another site's
            # roots, a volume not mounted yet), not a missing file: recorded as permanent,
            # it would keep a good image broken after the settings are put right.
            raise ConfigError(
                f"source {reference!r}: its root is not a directory on this server (see source_roots)"
            ) from None
        raise SourceNotFoundError(f"source {reference!r} does not exist") from None
    except OSError as error:
        raise SourceError(f"source {reference!r} cannot be read ({error.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise SourceError(f"source {reference!r} is not a regular file")
    return LocalSource(reference, real)
