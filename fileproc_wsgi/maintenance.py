"""Maintenance of the store and its results: what ``fileproc warm``, ``gc``, ``stats`` and
``purge`` run.

Plain functions over an :class:`~fileproc_wsgi.store.InstructionStore` and a result
storage, returning small reports; printing is left to the caller (the command line here,
Django management commands later). Every scan is paged by checksum, so memory stays flat
however many rows or files there are.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .config import Config
from .errors import FileProcError
from .processing import Processor
from .storage import StoredFile, parse_key
from .store import InstructionStore, Job

log = logging.getLogger(__name__)

DAY = 86400.0
# Files younger than this are never orphans: a temporary file may still be being written.
GRACE_SECONDS = 3600.0
_PAGE = 500


@dataclasses.dataclass
class WarmReport:
    total: int  # claimable when the run started
    done: int = 0
    failed: int = 0
    skipped: int = 0  # held by another worker when their turn came
    seconds: float = 0.0
    reasons: Counter = dataclasses.field(default_factory=Counter)

    @property
    def handled(self) -> int:
        return self.done + self.failed + self.skipped

    @property
    def rate(self) -> float:
        return self.handled / self.seconds if self.seconds > 0 else 0.0


def warm(
    config: Config,
    store: InstructionStore,
    storage,
    *,
    workers: int = 4,
    progress: Callable[[WarmReport], None] | None = None,
    progress_interval: float = 0.25,
) -> WarmReport:
    """Make every job that could be made now, with ``workers`` threads.

    Claimable jobs (see :meth:`InstructionStore.claimable`) are listed a page at a time in
    checksum order and handed to :meth:`Processor.ensure`, so the store's claim keeps two
    concurrent runs (or a run and live requests) from making a job twice. Stopping and
    running again continues with what is still pending. ``progress`` is called at most once
    per ``progress_interval`` seconds, and once at the end.
    """
    workers = max(1, workers)
    if config.max_concurrent_jobs < workers:
        config = dataclasses.replace(config, max_concurrent_jobs=workers)
    processor = Processor(config, store, storage)
    report = WarmReport(total=store.count_claimable())
    started = time.monotonic()
    lock = threading.Lock()
    jobs = _claimable_jobs(store)
    last_progress = [0.0]

    def next_job() -> Job | None:
        with lock:
            return next(jobs, None)

    def record(outcome: str, reason: str | None = None) -> None:
        with lock:
            setattr(report, outcome, getattr(report, outcome) + 1)
            if reason:
                report.reasons[reason] += 1
            now = time.monotonic()
            report.seconds = now - started
            due = progress is not None and now - last_progress[0] >= progress_interval
            if due:
                last_progress[0] = now
        if due and progress is not None:
            progress(report)

    def work() -> None:
        while (job := next_job()) is not None:
            current = store.find(job.checksum)  # another run may have taken it meanwhile
            if current is None or current.state == "done":
                record("skipped")
                continue
            if current.state == "working" and (current.lease_until or 0) >= store.now():
                record("skipped")
                continue
            try:
                processor.ensure(current)
            except FileProcError as error:
                record("failed", str(error).splitlines()[0] if str(error) else type(error).__name__)
            except Exception:
                log.exception("fileproc warm: %s failed unexpectedly", job.checksum)
                record("failed", "internal error")
            else:
                record("done")

    threads = [threading.Thread(target=work, name=f"fileproc-warm-{n}", daemon=True) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.monotonic() - started
    if progress is not None:
        progress(report)
    return report


def _claimable_jobs(store: InstructionStore) -> Iterator[Job]:
    after = None
    while page := store.claimable(after=after, limit=_PAGE):
        yield from page
        after = page[-1].checksum


@dataclasses.dataclass
class GcReport:
    days: float
    deleted: bool
    stale: int = 0  # done results not requested for ``days``
    stale_bytes: int = 0
    orphans: int = 0  # result files with no row
    orphan_bytes: int = 0
    temporary: int = 0  # leftover ``.tmp-*.part`` files
    temporary_bytes: int = 0
    unknown: int = 0  # files not named like results, left alone
    seconds: float = 0.0


def gc(
    store: InstructionStore,
    storage,
    *,
    days: float = 30.0,
    delete: bool = False,
    now: float | None = None,
) -> GcReport:
    """Find (and with ``delete``, remove) results not requested for ``days`` and orphans.

    A stale result is a done row whose ``accessed_at`` (or ``completed_at``, never
    requested) is older than ``days``. Removing it deletes its file and sets its row back
    to pending: the row is kept, so the URL, wherever it is still rendered or cached,
    makes the result again on its next request (``fileproc warm`` leaves such rows
    alone). Orphans are result files with no row and temporary files a crashed writer
    left, both only when older than an hour; files named otherwise are counted, never
    touched.
    """
    started = time.monotonic()
    report = GcReport(days=days, deleted=delete)
    cutoff = (store.now() if now is None else now) - days * DAY
    report.stale, report.stale_bytes = store.stale_totals(cutoff)
    if delete:
        after = None
        while page := store.stale(cutoff, after=after, limit=_PAGE):
            after = page[-1].checksum
            for _checksum, key in store.evict_stale([job.checksum for job in page], cutoff):
                if key:
                    storage.delete(key)
    old = time.time() - GRACE_SECONDS  # file times are wall-clock times
    for batch in _batches(storage.keys(), _PAGE):
        results: dict[str, StoredFile] = {}
        for stored in batch:
            name = stored.key.rpartition("/")[2]
            if name.startswith(".tmp-") and name.endswith(".part"):
                if stored.modified < old:
                    report.temporary += 1
                    report.temporary_bytes += stored.size
                    if delete:
                        storage.delete(stored.key)
            elif (parsed := parse_key(stored.key)) is not None:
                if stored.modified < old:
                    results[parsed[0]] = stored
            else:
                report.unknown += 1
        if not results:
            continue
        registered = store.existing(results)
        for checksum, stored in results.items():
            if checksum not in registered:
                report.orphans += 1
                report.orphan_bytes += stored.size
                if delete:
                    storage.delete(stored.key)
    report.seconds = time.monotonic() - started
    return report


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def stats(store: InstructionStore, *, top: int = 10) -> dict[str, Any]:
    """Counts by state, the ``top`` failure reasons with their counts, the results' total
    size (from the rows, no storage listing) and the oldest pending job's creation time."""
    started = time.monotonic()
    found = store.statistics(top=top)
    found["now"] = store.now()
    found["seconds"] = time.monotonic() - started
    return found


@dataclasses.dataclass
class PurgeReport:
    source: str
    rows: int = 0
    files: int = 0
    result_bytes: int = 0


def purge(store: InstructionStore, storage, source: str) -> PurgeReport:
    """Delete every row made from ``source`` (the reference as in the instructions, e.g.
    ``photos/a.jpg``) and their results. A page that still uses the source registers it
    again on its next render (with the new version, for a changed file)."""
    report = PurgeReport(source=source)
    while page := store.by_source(source, limit=_PAGE):
        sizes = {job.checksum: job.result_bytes or 0 for job in page}
        for checksum, key in store.delete(sizes):
            report.rows += 1
            report.result_bytes += sizes[checksum]
            if key:
                storage.delete(key)
                report.files += 1
    return report


def human_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


__all__ = ["GcReport", "PurgeReport", "WarmReport", "gc", "human_bytes", "purge", "stats", "warm"]
