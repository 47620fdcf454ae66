"""Where results are kept, and the URL they are reachable at.

Results are immutable: a key is derived from the checksum, so a finished file is never
rewritten with other content. Local storage writes a temporary file in the target
directory and renames it into place, so a reader sees either nothing or the whole file;
S3 storage (:mod:`fileproc_wsgi.storage.s3`) gets the same from one conditional PUT.
"""

from __future__ import annotations

from ..config import Config
from ..errors import ConfigError
from .base import ResultStorage, StoredFile, parse_key, result_key
from .local import LocalStorage

__all__ = ["LocalStorage", "ResultStorage", "StoredFile", "open_storage", "parse_key", "result_key"]


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
