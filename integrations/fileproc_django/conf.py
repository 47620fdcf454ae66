"""Django settings turned into one Config and one registrar per process.

``FILEPROCESSOR`` is a dict whose keys are :class:`fileproc_wsgi.Config` fields. A key it
leaves out takes its default from the project's own settings, not from the working
directory:

- ``database_url``: the database ``DATABASES[FILEPROCESSOR_DATABASE]`` (alias
  ``"default"`` unless set), SQLite or PostgreSQL, as a SQLAlchemy URL;
- ``storage``: the directory ``MEDIA_ROOT/fileproc`` (served by the middleware under
  ``<prefix>/files/`` unless ``public_url`` says where the web server serves it);
- ``source_roots``: ``{"default": "django:default"}``, the ``default`` storage; roots the
  project names are added to it, unless one of them is itself named ``default``.

``FILEPROCESSOR_CACHE`` (an alias in ``CACHES`` shared by the app servers) completes
them. Settings are read the first time the template tag or :func:`fileproc_django.wrap`
needs them, never at import, and again after one of them changes (``override_settings``
in tests).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db.utils import ConnectionHandler
from django.dispatch import receiver
from sqlalchemy.engine import URL, make_url

from fileproc_wsgi.config import Config
from fileproc_wsgi.errors import ConfigError
from fileproc_wsgi.registrar import registrar_for

if TYPE_CHECKING:
    from fileproc_wsgi.registrar import Registrar
    from fileproc_wsgi.remote import RemoteRegistrar

# Settings the Config is built from: a change to one of them (override_settings) rebuilds it.
SETTINGS = frozenset(
    {"FILEPROCESSOR", "FILEPROCESSOR_CACHE", "FILEPROCESSOR_DATABASE", "DATABASES", "MEDIA_ROOT", "STORAGES"}
)
DEFAULT_SOURCE_ROOTS = {"default": "django:default"}
# OPTIONS of Django's PostgreSQL backend that are Django's own, not libpq parameters.
_DJANGO_ONLY_OPTIONS = frozenset(
    {"isolation_level", "server_side_binding", "pool", "assume_role", "cursor_factory", "context"}
)


class SettingsDefaultError(ImproperlyConfigured):
    """A default that Django's settings cannot give; ``check_id`` is the system check reporting it."""

    def __init__(self, message: str, check_id: str):
        super().__init__(message)
        self.check_id = check_id


@dataclasses.dataclass(frozen=True)
class _Loaded:
    config: Config
    registrar: Registrar | RemoteRegistrar


_loaded: _Loaded | None = None
_lock = threading.Lock()


class DjangoCache:
    """The Django cache ``alias`` as the registrar's shared cache (``get``/``set``; the
    registrar wraps it in :class:`fileproc_wsgi.cache.SharedCache`, which makes its errors
    misses).

    Entries are keyed by checksum and never change, so they are stored without expiry.
    The cache is looked up on every call because Django's cache objects belong to one
    thread; the registrar only calls it for registrations it has not seen yet.
    """

    def __init__(self, alias: str):
        self.alias = alias

    def get(self, key: str):
        return caches[self.alias].get(key)

    def set(self, key: str, value) -> None:
        caches[self.alias].set(key, value, timeout=None)


def get_config() -> Config:
    """The Config built from ``settings.FILEPROCESSOR``; raises ImproperlyConfigured."""
    return _load().config


def get_registrar():
    """The process's registrar: a ``Registrar``, or a ``RemoteRegistrar`` when the
    config names a ``registrar_url``; raises ImproperlyConfigured."""
    return _load().registrar


def _load() -> _Loaded:
    global _loaded
    loaded = _loaded
    if loaded is not None:
        return loaded
    with _lock:
        if _loaded is None:
            config = config_from_settings()
            alias = cache_alias_from_settings()
            cache = DjangoCache(alias) if alias else None
            _loaded = _Loaded(config, registrar_for(config, cache=cache))
        return _loaded


def config_from_settings() -> Config:
    """A new Config from ``settings.FILEPROCESSOR`` and, for the keys it leaves out,
    Django's own settings; raises ImproperlyConfigured naming the setting."""
    values = getattr(settings, "FILEPROCESSOR", None)
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ImproperlyConfigured(
            f"FILEPROCESSOR: expected a dict of fileproc_wsgi.Config fields, got {type(values).__name__}"
        )
    try:
        # The project's own keys are judged first: a typo there is the error to report,
        # not a default that the key would have replaced.
        Config.from_mapping(values)
    except ConfigError as error:
        raise ImproperlyConfigured(f"FILEPROCESSOR: {error}") from error
    given = {str(key).lower(): value for key, value in values.items()}
    defaults: dict[str, object] = {}
    # With registrar_url another server keeps the store and the results: nothing to derive.
    local = not given.get("registrar_url")
    if "database_url" not in given and local:
        defaults["database_url"] = database_url_from_settings()
    if "storage" not in given and local:
        defaults["storage"] = storage_from_settings()
    if "document_cache" not in given:
        defaults["document_cache"] = document_cache_default()
    roots = _with_default_root(given)
    if roots is not None:
        values = {key: value for key, value in values.items() if str(key).lower() != "source_roots"}
        defaults["source_roots"] = roots
    try:
        return Config.from_mapping({**defaults, **values})
    except ConfigError as error:
        raise ImproperlyConfigured(f"FILEPROCESSOR: {error}") from error


def _with_default_root(given: Mapping) -> dict | None:
    """The source roots with the ``default`` root kept, or None when the project's own
    are to be taken as they are (it names a ``default`` root, or has no such key)."""
    if "source_roots" not in given:
        return dict(DEFAULT_SOURCE_ROOTS)
    roots = given["source_roots"]
    if not isinstance(roots, Mapping) or "default" in roots:
        return None
    # A project adding a root for one model's storage would otherwise lose the default
    # storage, and every source="photos/a.jpg" with it, without a word.
    return {**roots, **DEFAULT_SOURCE_ROOTS}


def database_alias_from_settings() -> str:
    """``settings.FILEPROCESSOR_DATABASE`` (default ``"default"``) once found in ``DATABASES``."""
    alias = getattr(settings, "FILEPROCESSOR_DATABASE", "default")
    databases = getattr(settings, "DATABASES", None) or {}
    if not isinstance(alias, str) or alias not in databases:
        named = "FILEPROCESSOR_DATABASE" if hasattr(settings, "FILEPROCESSOR_DATABASE") else "DATABASES"
        known = ", ".join(sorted(databases)) or "none"
        raise SettingsDefaultError(
            f"{named}: the store goes in the project's database {alias!r}, which DATABASES does not "
            f"define (aliases: {known}); name one in FILEPROCESSOR_DATABASE or set "
            "FILEPROCESSOR['database_url']",
            "fileproc_django.E003",
        )
    return alias


def database_url_from_settings() -> str:
    """The SQLAlchemy URL of ``DATABASES[FILEPROCESSOR_DATABASE]``."""
    alias = database_alias_from_settings()
    # A connection object of our own (never connected) on the settings as they are now:
    # django.db.connections keeps the ones it made before override_settings.
    # Copies, because the handler fills in defaults where it is given them (OPTIONS may
    # hold objects that cannot be deep-copied, and it leaves them alone).
    databases = {
        name: {**entry, "TEST": dict(entry.get("TEST") or {})} for name, entry in settings.DATABASES.items()
    }
    return database_url_for(ConnectionHandler(databases)[alias])


def database_url_for(connection) -> str:
    """The SQLAlchemy URL of a Django database connection (not connected by this).

    It reads the connection's settings as they are now: under ``manage.py test`` they
    name the test database, so a project's tests keep their jobs there. An in-memory
    SQLite database (the test runner's default) cannot be shared with another
    connection without Django's open transactions locking it, so the store gets an
    in-memory database of its own, named after the alias, for this process only.
    """
    params = connection.settings_dict
    where = f"DATABASES[{connection.alias!r}]"
    if connection.vendor == "sqlite":
        name = os.fspath(params.get("NAME") or "")
        if not name:
            raise SettingsDefaultError(
                f"{where}: NAME is empty; the store needs a SQLite file", "fileproc_django.E003"
            )
        if name == ":memory:" or "mode=memory" in name:
            database, query = f"file:fileproc-{connection.alias}?mode=memory&cache=shared", {"uri": "true"}
        elif name.startswith("file:"):  # Django opens every NAME as a URI (uri=True) too
            database, query = name, {"uri": "true"}
        else:
            database, query = os.path.abspath(name), {}
        return URL.create("sqlite", database=database, query=query).render_as_string(hide_password=False)
    if connection.vendor == "postgresql":
        return _postgresql_url(params, where)
    raise SettingsDefaultError(
        f"{where}: the store runs on SQLite or PostgreSQL, and this database uses {params.get('ENGINE')}; "
        "set FILEPROCESSOR['database_url'] to a SQLite file or a PostgreSQL URL",
        "fileproc_django.E003",
    )


def _postgresql_url(params: Mapping, where: str) -> str:
    options = params.get("OPTIONS") or {}
    query = {
        key: str(value)
        for key, value in options.items()
        if key not in _DJANGO_ONLY_OPTIONS and isinstance(value, (str, int)) and not isinstance(value, bool)
    }
    host = str(params.get("HOST") or "") or None
    if host and host.startswith("/"):  # a socket directory: libpq's host, not a URL's
        query["host"], host = host, None
    port = params.get("PORT") or None
    try:
        port = int(port) if port is not None else None
    except ValueError:
        raise SettingsDefaultError(
            f"{where}: PORT {port!r} is not a number", "fileproc_django.E003"
        ) from None
    # psycopg 3 as Django 4.2+ prefers it; a project still on psycopg2 keeps its driver.
    has_psycopg2 = importlib.util.find_spec("psycopg2") is not None
    driver = "psycopg2" if importlib.util.find_spec("psycopg") is None and has_psycopg2 else "psycopg"
    return URL.create(
        f"postgresql+{driver}",
        username=params.get("USER") or None,
        password=params.get("PASSWORD") or None,
        host=host,
        port=port,
        database=params.get("NAME") or None,
        query=query,
    ).render_as_string(hide_password=False)


def storage_from_settings() -> str:
    """``MEDIA_ROOT/fileproc``: results sit beside the media they were made from."""
    media_root = os.fspath(getattr(settings, "MEDIA_ROOT", "") or "")
    if not media_root:
        # Django's own default is "", which would put results wherever the process started.
        raise SettingsDefaultError(
            "MEDIA_ROOT: results go under MEDIA_ROOT/fileproc, and MEDIA_ROOT is not set; set it, "
            "or FILEPROCESSOR['storage'] to a directory or 's3://bucket/prefix'",
            "fileproc_django.E004",
        )
    return os.path.join(os.path.abspath(media_root), "fileproc")


def document_cache_default() -> str:
    """The office PDF cache when FILEPROCESSOR names none: the user's cache directory
    (``$XDG_CACHE_HOME/fileproc/documents``, else ``~/.cache/fileproc/documents``).

    Not under the working directory (``manage.py`` and the server run from different
    places), not under MEDIA_ROOT (served to anyone: a PDF of every document would be
    public), not beside a SQLite file (the store may be PostgreSQL). It is a cache, each
    PDF made again from its document when missing: the user's cache directory is private
    to the server's user and meant for exactly that."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "fileproc", "documents")


def cache_alias_from_settings() -> str | None:
    """``settings.FILEPROCESSOR_CACHE`` once checked against ``CACHES``, or None."""
    alias = getattr(settings, "FILEPROCESSOR_CACHE", None)
    if alias is None:
        return None
    if not isinstance(alias, str) or alias not in settings.CACHES:
        raise ImproperlyConfigured(
            f"FILEPROCESSOR_CACHE: expected one of the aliases in CACHES "
            f"({', '.join(sorted(settings.CACHES))}), got {alias!r}"
        )
    return alias


def loaded_config() -> Config | None:
    """The Config in use, or None before first use (or after :func:`reset`)."""
    loaded = _loaded
    return None if loaded is None else loaded.config


def in_memory(database_url: str) -> bool:
    """Whether a store URL is an in-memory SQLite database, which lives only in this process."""
    url = make_url(database_url)
    name = url.database or ""
    return url.get_backend_name() == "sqlite" and (name in ("", ":memory:") or "mode=memory" in name)


def reset() -> None:
    """Forget the config and registrar, closing the registrar's connections; the next
    use reads the settings again."""
    global _loaded
    with _lock:
        loaded, _loaded = _loaded, None
    if loaded is None:
        return
    loaded.registrar.close()


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs) -> None:
    if setting in SETTINGS:
        reset()
