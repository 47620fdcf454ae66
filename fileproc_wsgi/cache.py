"""What keeps remembered answers right: the shared cache and the store's generation.

The optional cache registrars share between app servers (Django's, Redis, memcached ...):
anything with ``get(key)`` and ``set(key, value)`` will do. It only saves work, so a
failing cache (a Redis outage) must never fail a render: :class:`SharedCache` turns its
errors into misses, logged once a minute at most.

:class:`Generation` tells a process when ``fileproc purge`` or ``fileproc gc --delete``
(in any process, on any host) removed rows or results, so that it forgets the
registrations and redirects it remembers: they may name what was removed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

_QUIET_SECONDS = 60.0
# After failing to read the generation (the database is down), wait at least this long
# before asking again: each attempt may wait for a connection timeout.
_OUTAGE_PAUSE = 5.0


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


class Generation:
    """The store's generation as this process last read it, read again at most once per
    ``interval`` seconds; ``forget`` is called when it has moved since.

    :meth:`check` is what a warm path pays: one clock read, and once per interval one
    short query. Its value is ``None`` until first read; while the store cannot be read
    the last value is kept (remembered answers keep working through an outage) and
    asked for again after a pause, the failure logged once a minute at most.
    """

    def __init__(self, store, interval: float, forget: Callable[[], None]):
        self.store = store
        self.interval = interval
        self.value: int | None = None
        self._forget = forget
        self.due = float("-inf")  # when to read it again: a warm path may compare first
        self._lock = threading.Lock()  # one reader at a time; the others keep the last value
        self._logged = float("-inf")

    def check(self) -> int | None:
        """The generation, read again first when the interval has passed."""
        now = time.monotonic()
        if now < self.due or not self._lock.acquire(blocking=False):
            return self.value
        try:
            self.due = now + self.interval
            try:
                value = self.store.generation()
            except Exception as error:  # an outage, never a reason to fail a render or request
                self.due = now + max(self.interval, _OUTAGE_PAUSE)
                if now - self._logged >= _QUIET_SECONDS:
                    self._logged = now
                    log.warning("fileproc_wsgi: could not read the store's generation (%s)", error)
                return self.value
            if value != self.value:
                # The new value first: an answer worked out under the old one, and remembered
                # after this, is then refused rather than kept.
                self.value = value
                self._forget()
            return value
        finally:
            self._lock.release()
