"""A Flask app's ``FILEPROC_*`` config keys turned into one :class:`fileproc_wsgi.Config`.

Each key is ``FILEPROC_`` and a Config field in capitals. A value may be the Python value
(``{"avatars": "uploads"}``, ``True``, ``2048``) or a string written as in a
``FILEPROC_*`` environment variable (what ``app.config.from_prefixed_env()`` or a
``.env`` file leaves): strings are read by the core's own parser, so both spellings
mean the same.

Nothing depends on the working directory. What fileproc writes is the app's state, so a
relative ``storage`` and a relative SQLite file are taken from ``app.instance_path``, as
Flask-SQLAlchemy takes ``sqlite:///site.db`` (the same file for both), and land beside
the defaults. What it reads ships with the code, so relative source roots (and a relative
``UPLOAD_FOLDER`` used as one) are taken from ``app.root_path``, as Flask takes
``static_folder`` and ``template_folder``. With no key at all the store and the results
live in ``<instance folder>/fileproc/``; the source roots are ``static`` (the static
folder) and ``default``: the app's ``UPLOAD_FOLDER`` if it sets one, else the static
folder too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

# The parser of FILEPROC_* variables, so that a string means here what it means there.
from fileproc_wsgi.config import ENV_PREFIX, Config, parse_setting, storage_root, storage_url
from fileproc_wsgi.errors import ConfigError

_FIELDS = {field.name: field for field in dataclasses.fields(Config)}


def config_from_app(app) -> Config:
    """A new Config from ``app.config``; raises ConfigError naming the key at fault."""
    values: dict[str, Any] = {}
    for key, value in app.config.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in _FIELDS or key != key.upper():
            raise ConfigError(
                f"app.config[{key!r}] is not a fileproc setting; known keys: "
                + ", ".join(ENV_PREFIX + field.upper() for field in sorted(_FIELDS))
            )
        where = f"app.config[{key!r}]"
        values[name] = parse_setting(where, _FIELDS[name], value) if isinstance(value, str) else value
    try:
        return Config.from_mapping(_with_app_paths(app, values))
    except ConfigError as error:
        field = str(error).split(":", 1)[0]
        where = f"app.config[{ENV_PREFIX + field.upper()!r}]" if field in _FIELDS else "app.config"
        raise ConfigError(f"{where}: {error}") from None


def _with_app_paths(app, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the app's defaults filled in and relative paths made absolute."""
    values = dict(values)
    home = os.path.join(app.instance_path, "fileproc")
    database_url = values.get("database_url") or f"sqlite:///{os.path.join(home, 'fileproc.db')}"
    values["database_url"] = _sqlite_under(app.instance_path, database_url)

    # The office PDF cache beside them, private (the instance folder is never served).
    document_cache = values.get("document_cache") or os.path.join(home, "documents")
    if isinstance(document_cache, (str, os.PathLike)):
        values["document_cache"] = os.path.join(app.instance_path, os.fspath(document_cache))

    storage = values.get("storage") or os.path.join(home, "results")
    if isinstance(storage, (str, os.PathLike)):
        values["storage"] = storage_url(os.fspath(storage), app.instance_path)

    roots = values.get("source_roots")
    if roots is None:
        # Thumbnails are mostly of what users upload, so that folder (Flask's documented
        # UPLOAD_FOLDER) is the default root when there is one: source=user.picture then
        # works with the bare file name the app stores.
        roots = {}
        uploads = app.config.get("UPLOAD_FOLDER")
        if app.static_folder:
            roots["static"] = app.static_folder
        if uploads or app.static_folder:
            roots["default"] = uploads or app.static_folder
    if isinstance(roots, Mapping):
        values["source_roots"] = {name: _under(app.root_path, directory) for name, directory in roots.items()}
    return values


def _under(base: str, directory):
    """``directory`` against ``base``; a storage root ("django:default") and anything
    that is not a path are left for Config to judge."""
    if not isinstance(directory, (str, os.PathLike)):
        return directory
    text = os.fspath(directory)
    if not text or storage_root(text):
        return text
    return os.path.join(base, text)


def _sqlite_under(base: str, database_url: str) -> str:
    """A relative SQLite file taken from ``base``; other URLs as they are."""
    if not isinstance(database_url, str):
        return database_url
    try:
        url = sa.make_url(database_url)
    except sa.exc.ArgumentError:
        return database_url  # the store names the bad URL when it opens it
    database = url.database
    if (
        url.get_backend_name() != "sqlite"
        or not database
        or database == ":memory:"
        or database.startswith("file:")
        or os.path.isabs(database)
    ):
        return database_url
    return url.set(database=os.path.join(base, database)).render_as_string(hide_password=False)
