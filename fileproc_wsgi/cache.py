"""The optional cache registrars share between app servers (Django's, Redis, memcached ...).

Anything with ``get(key)`` and ``set(key, value)`` will do. It only saves work, so a
failing cache (a Redis outage) must never fail a render: :class:`SharedCache` turns its
errors into misses, logged once a minute at most.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

_QUIET_SECONDS = 60.0


class SharedCache:
    """Wraps a cache so that its errors are misses (``get`` → None, ``set`` → nothing)."""

    def __init__(self, cache):
        self.cache = cache
        self._logged = float("-inf")

    def get(self, key: str):
        try:
            return self.cache.get(key)
        except Exception as error:  # any backend's error: the cache is an optimisation
            self._complain("read", error)
            return None

    def set(self, key: str, value) -> None:
        try:
            self.cache.set(key, value)
        except Exception as error:
            self._complain("write", error)

    def _complain(self, what: str, error: Exception) -> None:
        now = time.monotonic()
        if now - self._logged >= _QUIET_SECONDS:
            self._logged = now
            log.warning("fileproc_wsgi: the shared cache failed to %s (%s); working without it", what, error)
