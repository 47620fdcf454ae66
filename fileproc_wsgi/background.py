"""Making a page's new results before the browser asks for them.

A cold page used to start each job only when the browser's request for it arrived: after
the HTML had crossed the network, been parsed, and the browser had opened its connections.
:class:`BackgroundJobs` starts them as soon as the page's registrations are written (the
:class:`~fileproc_wsgi.registrar.Registrar` hands it the new rows' checksums, in page order),
on a few daemon threads, through the same :meth:`~fileproc_wsgi.processing.Processor.ensure`
a request uses. A request for a result already under way here waits for it (the processor's
single flight); one under way in another process waits on the store's claim; one not
started yet is made by the request itself, and the queue then finds it done.

The queue is bounded (what does not fit is made on request, as before) and deduplicated;
a job the queue reaches that is no longer pending (made, failed, claimed elsewhere) is
skipped. Threads start with the first work and end after a quiet minute.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from collections.abc import Callable, Iterable

from .errors import FileProcError
from .pool import usable_cores
from .store import Job

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
_IDLE_SECONDS = 60.0


def default_threads(max_concurrent_jobs: int) -> int:
    """One thread per CPU core this process may use, at most ``max_concurrent_jobs``: a
    job runs only in one of the process's turns (:func:`.pool.job_turns`), one per core."""
    return max(1, min(usable_cores(), max_concurrent_jobs))


class BackgroundJobs:
    """A bounded, deduplicated queue of checksums made by ``threads`` daemon threads.

    ``ensure`` makes one job (the processor's), ``find`` reads its row, and ``made`` is
    told of each result made here (checksum, result key).
    """

    def __init__(
        self,
        ensure: Callable[[Job], Job],
        find: Callable[[str], Job | None],
        *,
        threads: int,
        made: Callable[[str, str], None] | None = None,
        limit: int = QUEUE_LIMIT,
    ):
        self._ensure = ensure
        self._find = find
        self._made = made
        self._threads = threads
        self._limit = limit
        self._queue: collections.deque[str] = collections.deque()
        self._queued: set[str] = set()  # waiting or being made
        self._running = 0
        self._pid = os.getpid()
        self._condition = threading.Condition()

    def submit(self, checksums: Iterable[str]) -> int:
        """Queue the ones not queued yet, while there is room; how many were queued."""
        if self._threads < 1:
            return 0
        queued = 0
        with self._condition:
            if self._pid != os.getpid():  # a forked child inherits the deque, not the threads
                self._pid, self._running = os.getpid(), 0
                self._queue.clear()
                self._queued.clear()
            for checksum in checksums:
                if checksum in self._queued or len(self._queue) >= self._limit:
                    continue
                self._queue.append(checksum)
                self._queued.add(checksum)
                queued += 1
            if not queued:
                return 0
            idle = self._running - self._busy_count()
            for _ in range(min(self._threads - self._running, queued - max(0, idle))):
                self._running += 1
                threading.Thread(target=self._work, name="fileproc-background", daemon=True).start()
            self._condition.notify(queued)
        return queued

    def close(self, timeout: float = 10.0) -> None:
        """Drop what waits, queue nothing more, and wait up to ``timeout`` seconds for the
        jobs being made to finish (their threads then end)."""
        with self._condition:
            self._threads = 0
            for checksum in self._queue:
                self._queued.discard(checksum)
            self._queue.clear()
            self._condition.notify_all()
            self._condition.wait_for(lambda: not self._running, timeout)

    def pending(self) -> int:
        """How many checksums wait or are being made."""
        with self._condition:
            return len(self._queued)

    def waiting(self) -> int:
        """How many checksums wait for a thread (the metrics' queue length)."""
        return len(self._queue)

    def _busy_count(self) -> int:
        return len(self._queued) - len(self._queue)

    def _work(self) -> None:
        while True:
            with self._condition:
                while not self._queue:
                    if not self._threads or (not self._condition.wait(_IDLE_SECONDS) and not self._queue):
                        self._running -= 1
                        self._condition.notify_all()  # close() may be waiting for the last one
                        return
                checksum = self._queue.popleft()
            try:
                self._make(checksum)
            finally:
                with self._condition:
                    self._queued.discard(checksum)

    def _make(self, checksum: str) -> None:
        try:
            job = self._find(checksum)
            if job is None or job.state != "pending":
                return  # made, failed or claimed since it was queued, or purged
            job = self._ensure(job)
        except FileProcError as error:
            # Recorded in the store where it is a verdict; a busy or lost moment is simply
            # left to the request, which will make it or answer for it.
            log.debug("fileproc_wsgi: background job %s: %s", checksum, error)
            return
        except Exception:
            log.exception("fileproc_wsgi: background job %s failed unexpectedly", checksum)
            return
        if self._made is not None and job.state == "done" and job.result_key:
            self._made(checksum, job.result_key)
