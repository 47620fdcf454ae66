"""Settings from a TOML file, for ``fileproc --config FILE`` (or ``FILEPROC_CONFIG=FILE``).

The file holds :class:`~fileproc_wsgi.config.Config` keys at its top level, the names
Django's ``FILEPROCESSOR`` uses::

    database_url = "sqlite:///.fileproc/fileproc.db"
    storage = ".fileproc/results"
    source_roots = { default = "media" }

Relative paths in it (a SQLite database, a storage directory, source root directories)
are resolved against the file's own directory, never the working directory, and a file
that sets no ``database_url`` or ``storage`` keeps them in ``.fileproc/`` beside it, so
one file names the same store wherever a command runs. ``FILEPROC_*`` variables that are set win
over the file, key by key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Any

from .config import ENV_PREFIX, Config, absolute_database_url, storage_root, storage_url
from .errors import ConfigError

VARIABLE = "FILEPROC_CONFIG"


def config_from_file(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """The Config the file at ``path`` describes, with ``FILEPROC_*`` variables of
    ``environ`` (default: the process's) winning over it; errors name the file."""
    environ = os.environ if environ is None else environ
    values = read_settings(path)
    variables = {name: value for name, value in environ.items() if name != VARIABLE}
    from_file = {key: value for key, value in values.items() if ENV_PREFIX + key.upper() not in variables}
    try:
        return Config.from_env(variables, **from_file)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def read_settings(path: str) -> dict[str, Any]:
    """The settings in the file at ``path``, relative paths made absolute against its directory."""
    try:
        with open(path, "rb") as file:
            values = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"settings file {path}: no such file") from None
    except OSError as error:
        raise ConfigError(f"settings file {path}: cannot read it ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"settings file {path}: not valid TOML ({error})") from None
    base = os.path.dirname(os.path.abspath(path))
    values = {key.lower(): value for key, value in values.items()}
    # Config's own default is under the working directory, which a command run from
    # elsewhere would not find (nor the results the site's pages point at).
    if not values.get("database_url"):
        values["database_url"] = f"sqlite:///{os.path.join(base, '.fileproc', 'fileproc.db')}"
    if not values.get("storage"):
        values["storage"] = os.path.join(base, ".fileproc", "results")
    # The office PDF cache too, and a relative one is taken from the file like the others.
    document_cache = values.get("document_cache") or os.path.join(".fileproc", "documents")
    if isinstance(document_cache, str):
        values["document_cache"] = os.path.join(base, os.path.expanduser(document_cache))
    if isinstance(values.get("database_url"), str):
        values["database_url"] = absolute_database_url(values["database_url"], base)
    if isinstance(values.get("storage"), str):
        try:
            values["storage"] = storage_url(values["storage"], base)
        except ConfigError as error:
            raise ConfigError(f"settings file {path}: {error}") from None
    roots = values.get("source_roots")
    if isinstance(roots, Mapping):
        values["source_roots"] = {name: _root(root, base) for name, root in roots.items()}
    elif roots is not None:
        raise ConfigError(
            f"settings file {path}: source_roots must be a table such as "
            f'{{ default = "media" }}, got {roots!r}'
        )
    return values


def _root(root: Any, base: str) -> Any:
    if not isinstance(root, str) or not root or storage_root(root):
        return root  # a storage, kept as written; Config names what is wrong with the others
    return os.path.join(base, root)
