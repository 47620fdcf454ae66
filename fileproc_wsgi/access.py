"""Last access, recorded cheaply: ``accessed_at`` is what ``fileproc gc`` reads.

A result is in use when a page prints it or a browser asks for it. The middleware and the
registrar each add what they served to an in-process set (the warm path's only extra
cost), and one daemon thread per process writes each one's set every
``access_flush_seconds`` with one batched
:meth:`~fileproc_wsgi.store.InstructionStore.touch`. Never a write per request or render,
and nothing waits for one; a process that exits loses at most that interval. The same
thread hands the warm paths' counts over to the metrics once a tick
(:func:`fileproc_wsgi.metrics.publish`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from .errors import FileProcError

log = logging.getLogger(__name__)


class Recorder(Protocol):
    """What the flusher drives: ``flush_access()`` when ``flush_at`` (monotonic) has come."""

    access_flush_seconds: float
    flush_at: float

    def flush_access(self) -> int: ...


class AccessFlusher:
    """One daemon thread per process that flushes every added recorder when due;
    recorders are held weakly, and a forked child starts its own thread."""

    tick = 1.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._ticks: list[Callable[[], None]] = []

    def add(self, recorder: Recorder) -> None:
        with self._lock:
            recorder.flush_at = time.monotonic() + recorder.access_flush_seconds
            self._recorders.add(recorder)
            self._start()

    def every_tick(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` from the thread once a tick as well (the metrics' hand-over
        of the warm paths' counts); added once however often it is asked."""
        with self._lock:
            if callback not in self._ticks:
                self._ticks.append(callback)
            self._start()

    def _start(self) -> None:
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="fileproc-access", daemon=True)
            self._thread.start()

    def remove(self, recorder: Recorder) -> None:
        """Flush ``recorder`` one last time and forget it (it is closing)."""
        with self._lock:
            self._recorders.discard(recorder)
        recorder.flush_at = 0.0
        recorder.flush_access()

    def _run(self) -> None:
        while True:
            time.sleep(self.tick)
            now = time.monotonic()
            with self._lock:
                due = [recorder for recorder in self._recorders if recorder.flush_at <= now]
            for recorder in due:
                recorder.flush_at = now + recorder.access_flush_seconds
                try:
                    recorder.flush_access()
                except Exception:  # never let the thread die
                    log.exception("fileproc_wsgi: recording last access failed")
            for callback in self._ticks:
                try:
                    callback()
                except Exception:
                    log.exception("fileproc_wsgi: %r failed in the flusher thread", callback)


def touch(store, checksums: set[str]) -> int:
    """Write ``checksums``' last access now (one batched ``touch``); how many were written.
    A store that cannot be reached costs a warning: an access is not worth an error."""
    if not checksums:
        return 0
    try:
        store.touch(checksums)
    except FileProcError as error:
        log.warning("fileproc_wsgi: could not record last access: %s", error)
        return 0
    return len(checksums)


FLUSHER = AccessFlusher()
