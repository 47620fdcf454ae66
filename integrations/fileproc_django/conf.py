"""Django settings turned into one Config and one registrar per process.

``FILEPROCESSOR`` (a dict whose keys are :class:`fileproc_wsgi.Config` fields; absent
means the embedded defaults) and ``FILEPROCESSOR_CACHE`` (an alias in ``CACHES`` shared
by the app servers) are read the first time the template tag or
:func:`fileproc_django.wrap` needs them, never at import, and again after either
changes (``override_settings`` in tests).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping

from django.conf import settings
from django.core import checks
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from fileproc_wsgi.config import Config
from fileproc_wsgi.errors import ConfigError
from fileproc_wsgi.registrar import registrar_for

SETTINGS = frozenset({"FILEPROCESSOR", "FILEPROCESSOR_CACHE"})


@dataclasses.dataclass(frozen=True)
class _Loaded:
    config: Config
    registrar: object


_loaded: _Loaded | None = None
_lock = threading.Lock()


class SharedCache:
    """The registrar's shared cache on the Django cache ``alias``.

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
            cache = SharedCache(alias) if alias else None
            _loaded = _Loaded(config, registrar_for(config, cache=cache))
        return _loaded


def config_from_settings() -> Config:
    """A new Config from ``settings.FILEPROCESSOR``; raises ImproperlyConfigured naming the key."""
    values = getattr(settings, "FILEPROCESSOR", None)
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ImproperlyConfigured(
            f"FILEPROCESSOR: expected a dict of fileproc_wsgi.Config fields, got {type(values).__name__}"
        )
    try:
        return Config.from_mapping(values)
    except ConfigError as error:
        raise ImproperlyConfigured(f"FILEPROCESSOR: {error}") from error


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


def check_settings(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """System check: the settings build a Config and name a configured cache."""
    errors = []
    for read, check_id in (
        (config_from_settings, "fileproc_django.E001"),
        (cache_alias_from_settings, "fileproc_django.E002"),
    ):
        try:
            read()
        except ImproperlyConfigured as error:
            errors.append(checks.Error(str(error), id=check_id))
    return errors
