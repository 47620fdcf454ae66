"""Registering instructions at render time: parse, checksum, store, represent.

``Registrar(config).register(text)`` never touches a pixel. It reads the source's header
(size, orientation, transparency) to predict the result's size and format, stores the
instructions under their checksum if they are new, and returns a
:class:`~fileproc_wsgi.representation.Representation`. A repeated registration of the
same text is answered from an in-process LRU; the source is looked at again (one ``stat``,
or one request to a remote storage, shared by every text naming the source) at most once
per ``source_check_interval``, which is how a replaced source gets a new checksum; within
the same interval the store's generation is read, and every remembered registration
forgotten when ``purge`` or ``gc --delete`` has removed something since.

Once a result is made, its registration prints the result's own URL (local files, or S3
with a public URL; never a presigned one) instead of ``/_fp/<checksum>``, so the browser
skips a redirect. The registrar learns it without a query per render: from the
middleware serving it in the same process (:meth:`Registrar.made`), or by asking the
store which of its remembered registrations are done, once per
``source_check_interval`` (a second at least) and a bounded number at a time. A render
printing a final URL records an access (:mod:`fileproc_wsgi.access`), since the
browser never asks ``/_fp/`` for it and ``fileproc gc`` must not take it for unused.

The checksum of a result that animates (:func:`result_checksum`) carries one more salt
than the rest: such results used to be first frames, so their URLs change while every
other URL stays what it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import TYPE_CHECKING, BinaryIO

from . import access, engines, metrics
from .access import FLUSHER
from .cache import Generation, SharedCache
from .config import Config
from .errors import FileProcError, UnavailableError
from .formats import ANIMATED_FORMATS, CONTENT_TYPES, EXTENSIONS, choose_format
from .instructions import PROCESSING_VERSION, Instructions, checksum, parse, source_step
from .pool import IsolatedJobs
from .representation import Representation
from .sources import LocalSource, Sources, StorageSource
from .storage import ResultStorage, open_storage
from .store import InstructionStore

if TYPE_CHECKING:
    from .remote import RemoteRegistrar
    from .sources.http import HttpSource
    from .sources.s3 import S3Source

log = logging.getLogger(__name__)

# The least time between two asks of which remembered registrations are done, and how
# many are asked at once (the oldest first; the rest wait their turn).
_MADE_INTERVAL = 1.0
_MADE_BATCH = 500


class _Entry:
    """A remembered registration; ``checked`` is when its source was last seen unchanged,
    ``final`` whether its representation prints the result's own URL."""

    __slots__ = ("source", "version", "representation", "checked", "final")

    def __init__(
        self,
        source: LocalSource | StorageSource | HttpSource | S3Source,
        version: str,
        representation: Representation,
    ):
        self.source = source
        self.version = version
        self.representation = representation
        self.checked = time.monotonic()
        self.final = False


class _Reads(contextlib.ExitStack):
    """What the new registrations of one call share: each source's version, asked once,
    and each source's file, opened once (closed when the call ends). Through a remote
    storage each is a request, and one block of ``widths=`` and ``formats=`` names its
    source in nine texts or more."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: dict[str, str] = {}
        self.handles: dict[str, BinaryIO] = {}


@dataclasses.dataclass(frozen=True)
class _Cold:
    """A registration worked out but not yet written: its text, entry and store row, and
    the key it is shared under (the checksum before the probe said whether it animates)."""

    text: str
    entry: _Entry
    row: dict
    key: str = ""


class Registrar:
    """Registers instruction texts for one configuration; safe to share between threads.

    ``cache`` is an optional shared cache (anything with ``get(key)`` and
    ``set(key, value)``, such as a Django cache) that lets a fleet of app servers share
    what one of them registered: a hit skips the header read and the database.

    Inside ``with registrar.batch():`` new registrations are written together, in one
    transaction, when the block ends; :class:`~fileproc_wsgi.middleware.FileProcessor`
    given this registrar wraps every request of the application in such a block, so a
    page with a hundred new thumbnails costs one commit, made before the page is sent.
    That middleware is also paired with it (:meth:`pair`): the jobs of the new rows start in the
    background as soon as they are written, and results it makes reach the page at once.
    """

    access_flush_seconds = 60.0

    def __init__(self, config: Config | None = None, *, store: InstructionStore | None = None, cache=None):
        self.config = config or Config()
        self.store = store or InstructionStore(self.config.database_url)
        self.sources = Sources.for_config(self.config)
        self.cache = None if cache is None else SharedCache(cache)
        self._url_base = self.config.prefix + "/"
        self._check_interval = self.config.source_check_interval
        self._remote_check_interval = self.config.remote_source_check_interval
        self._lru: OrderedDict[str, _Entry] = OrderedDict()
        self._versions: dict[str, tuple[str, float]] = {}  # reference: (version, when asked)
        # Headers read in a worker, or its refusal: (reference, version, page) -> either.
        self._native_probes: dict[tuple, engines.SourceInfo | FileProcError] = {}
        self._isolated: IsolatedJobs | None = None
        self._lock = threading.Lock()
        # Final URLs: permanent storage URLs only (a presigned one expires), and not when
        # the middleware serves the bytes at the /_fp/ URL itself.
        self._final_urls = self.config.final_urls and not self.config.serve_results
        # Opened when first needed, unless the middleware lends its own.
        self._storage: ResultStorage | None = None
        self._start_jobs: Callable[[list[str]], object] | None = None
        self._unmade: OrderedDict[str, list[_Entry]] = OrderedDict()  # checksum -> entries
        self._made_due = 0.0
        self._made_interval = max(self._check_interval, _MADE_INTERVAL)
        self._asking = threading.Lock()
        self._accessed: set[str] = set()  # checksums printed with a final URL since the last flush
        self.flush_at = 0.0  # set by the flusher, which this joins when a first URL is final
        # purge and gc --delete remove rows and results: forget every registration then.
        self._generation = Generation(self.store, self._check_interval, self._forget)
        self.warm_registrations = 0  # a plain int on the warm path, read by metrics.publish
        metrics.hand_over(self, "warm_registrations")

    def register(self, text: str) -> Representation:
        """The representation of ``text``; raises InstructionError, SourceError or
        another FileProcError naming what is wrong."""
        generation = self._generation.check()
        if self._unmade and time.monotonic() >= self._made_due:
            self._ask_made()
        entry = self._warm(text)
        if entry is not None:
            return entry.representation
        with _Reads() as reads, metrics.span("fileproc.register"):
            cold = self._cold(text, reads)
        return self._save([cold], generation)[0]

    def register_many(self, texts: Iterable[str]) -> list[Representation]:
        """Representations of several texts, the new ones written in one transaction."""
        generation = self._generation.check()
        if self._unmade and time.monotonic() >= self._made_due:
            self._ask_made()
        found: list[Representation | None] = []
        cold: list[_Cold] = []
        with _Reads() as reads:
            for text in texts:
                entry = self._warm(text)
                if entry is None:
                    with metrics.span("fileproc.register"):
                        cold.append(self._cold(text, reads))
                found.append(None if entry is None else entry.representation)
        made = iter(self._save(cold, generation))
        return [representation or next(made) for representation in found]

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Defer writing new registrations to the end of the block (nested blocks join
        the outer one). If that write fails the registrations are forgotten, so the
        next render tries again, and the error is raised."""
        batches = _BATCHES.get()
        if self in batches:
            yield
            return
        pending: list[_Cold] = []
        token = _BATCHES.set({**batches, self: pending})
        try:
            yield
        finally:
            _BATCHES.reset(token)
            if pending:
                self._write(pending)

    def close(self) -> None:
        """Write the last accesses not written yet and close the database connections.
        A closed registrar may still be used: it reconnects when it has to."""
        FLUSHER.remove(self)
        self.store.dispose()

    def pair(self, storage, start_jobs: Callable[[list[str]], object] | None = None) -> None:
        """Called by the middleware that makes this registrar's results in this process:
        final URLs come from its ``storage``, and the checksums of the rows each write
        adds go to ``start_jobs``, which starts making them before anyone asks."""
        self._storage = storage
        self._start_jobs = start_jobs

    def made(self, checksum: str, result_key: str) -> None:
        """The result of ``checksum`` is stored under ``result_key``: registrations
        remembered with its ``/_fp/`` URL print the result's own URL from now on."""
        if not self._final_urls:
            return
        with self._lock:
            entries = self._unmade.pop(checksum, None)
        if not entries:
            return
        url = self._final_url(result_key)
        if url is None:
            return
        for entry in entries:
            entry.representation = dataclasses.replace(entry.representation, url=url)
            entry.final = True
        if not self.flush_at:
            FLUSHER.add(self)

    def flush_access(self) -> int:
        """Write the last access of every result printed with its own URL since the last
        flush (one batched ``touch``); how many. The flusher thread calls it by itself."""
        checksums, self._accessed = self._accessed, set()
        return access.touch(self.store, checksums)

    def _final_url(self, result_key: str) -> str | None:
        """The result's own URL, or None when the storage's URLs expire (then never asked again)."""
        if self._storage is None:
            try:
                self._storage = open_storage(self.config)
            except FileProcError as error:
                log.warning("fileproc_wsgi: result URLs stay %s/...: %s", self.config.prefix, error)
                self._final_urls = False
                return None
        if self._storage.temporary_urls:
            self._final_urls = False
            with self._lock:
                self._unmade.clear()
            return None
        return self._storage.url(result_key)

    def _ask_made(self) -> None:
        """Ask the store which of the oldest remembered ``/_fp/`` registrations are done
        (one query, one thread at a time); the rest wait for the next interval."""
        if not self._asking.acquire(blocking=False):
            return
        try:
            self._made_due = time.monotonic() + self._made_interval
            with self._lock:
                checksums = list(itertools.islice(self._unmade, _MADE_BATCH))
                for checksum in checksums:  # asked: to the back of the line
                    self._unmade.move_to_end(checksum)
            try:
                done = self.store.results(checksums)
            except FileProcError:
                return  # an outage: the pages keep their /_fp/ URLs, which still work
            for checksum, key in done.items():
                if key:
                    self.made(checksum, key)
        finally:
            self._asking.release()

    def _warm(self, text: str) -> _Entry | None:
        # The hot path of every warm template block: kept to a dict lookup, a clock read
        # and, once per source_check_interval, one stat.
        entry = self._lru.get(text)
        if entry is None:
            return None
        now = time.monotonic()
        if now - entry.checked >= self._interval(entry.source):
            try:
                if self._version(entry.source, now) != entry.version:
                    return None
            except UnavailableError:
                # A storage that is down says nothing about the file: the page keeps the
                # registration it had, and asks again after the next interval.
                pass
            entry.checked = now
        try:
            self._lru.move_to_end(text)
        except KeyError:  # evicted by another thread meanwhile
            pass
        if entry.final:
            self._accessed.add(entry.representation.checksum)
        self.warm_registrations += 1
        return entry

    def _cold(self, text: str, reads: _Reads) -> _Cold:
        instructions = parse(text)
        self.config.check_page(instructions.page)
        source = self.sources.resolve(instructions.source)
        version = reads.versions.get(source.reference)
        if version is None:
            # Asked afresh: the header read below must be of the file this version names.
            version = self._version(source, time.monotonic(), fresh=True)
            reads.versions[source.reference] = version
        key = instructions.checksum(version)
        shared = self._shared(key)
        if shared is not None:  # written by another app server: no header read, no row
            representation = self._representation(*shared)
            return _Cold(text, _Entry(source, version, representation), {})
        handle = reads.handles.get(source.reference)
        if handle is None:
            # Left open for the other texts of the call. An error leaving the call passes
            # through the handle's own exit, which names a storage failure a library hid.
            handle = reads.enter_context(source.open(self.config.max_source_bytes))
            reads.handles[source.reference] = handle
        handle.seek(0)
        # Probed again for each text, from the bytes already read: what a probe checks
        # depends on the text (its page or frame; a PDF page's render size on its
        # operations). Every limit the header already decides is checked here, so that no
        # page ever points at a result that is sure to be refused when first asked for.
        info = self._probe(handle, source, version, instructions)
        flattened = instructions.background is not None
        requested = instructions.output.name if instructions.output is not None else None
        output = choose_format(info.format, info.has_alpha and not flattened, requested)
        plan = instructions.plan(info.width, info.height)
        self.config.check_plan(plan)
        width, height = plan[-1][1:] if plan else (None, None)
        animates = info.frames != 1 and output in ANIMATED_FORMATS
        if animates and info.frames is not None and plan:
            # What the header already states; a GIF's frames are counted when processing.
            self.config.check_animation(f"source {source.reference!r}", info.frames, info.width, info.height)
            self.config.check_animation(
                f"the animated result of {source.reference!r}", info.frames, *plan[-1][1:]
            )
        checksum = result_checksum(instructions, version, animates=animates, engine=info.engine)
        row = {
            "checksum": checksum,
            "instructions": instructions.canonical,
            "source": instructions.source,
            "output_format": output,
            "width": width,
            "height": height,
        }
        representation = self._representation(checksum, output, width, height)
        return _Cold(text, _Entry(source, version, representation), row, key)

    def _probe(
        self, handle: BinaryIO, source, version: str, instructions: Instructions
    ) -> engines.SourceInfo:
        """The source's header, read here when that needs no native library (or jobs are
        not isolated); otherwise by the library in a worker, once per source version and
        page, so that a file that crashes LibRaw costs a worker and never this process."""
        try:
            return engines.probe(
                handle, source.reference, instructions, self.config, native=not self.config.isolate_jobs
            )
        except engines.NativeProbeNeeded:
            pass
        key = (source.reference, version, instructions.page)
        found = self._native_probes.get(key)
        if found is None:
            try:
                found = self._probe_in_worker(handle, source, instructions)
            except UnavailableError:
                raise  # a worker lost to the surroundings says nothing about the file
            except FileProcError as error:
                found = error  # a refusal is a fact about this version: asked once
            with self._lock:
                if len(self._native_probes) >= self.config.cache_size:
                    self._native_probes.clear()
                self._native_probes[key] = found
        if isinstance(found, FileProcError):
            raise found
        engines.check_text(found, source.reference, instructions, self.config)
        return found

    def _probe_in_worker(self, handle: BinaryIO, source, instructions: Instructions) -> engines.SourceInfo:
        if self._isolated is None:
            self._isolated = IsolatedJobs(self.config)
        # Only what the read depends on (the source and its page): the answer is kept for
        # every text naming that page, and each is checked against it by check_text.
        text = source_step(instructions.source)
        if instructions.page is not None:
            text += f" | page {instructions.page}"
        if isinstance(source, LocalSource):
            return engines.SourceInfo(*self._isolated.probe(text, source.path))
        # A storage's or a server's file: the bytes already read (bounded by
        # max_source_bytes), spooled once to a private file the worker reads.
        with tempfile.NamedTemporaryFile(prefix="fileproc-probe-") as spooled:
            handle.seek(0)
            shutil.copyfileobj(handle, spooled)
            spooled.flush()
            return engines.SourceInfo(*self._isolated.probe(text, spooled.name))

    def _version(self, source, now: float, *, fresh: bool = False) -> str:
        """The source's version, asked at most once per check interval for all the
        texts naming it (unless ``fresh``): through a remote storage each asking
        is a request, and a page shows one picture in several sizes."""
        seen = None if fresh else self._versions.get(source.reference)
        if seen is not None and now - seen[1] < self._interval(source):
            return seen[0]
        version = source.version()
        if len(self._versions) >= self.config.cache_size:
            self._versions.clear()  # versions are cheap to ask again; a bound is what matters
        self._versions[source.reference] = (version, now)
        return version

    def _interval(self, source) -> float:
        """How long a version of ``source`` is trusted: a ``stat`` is cheap, asking a
        storage or S3 is a request in the middle of a render."""
        return self._check_interval if type(source) is LocalSource else self._remote_check_interval

    def _representation(self, checksum: str, output: str, width: int | None, height: int | None):
        return Representation(
            checksum=checksum,
            url=f"{self._url_base}{checksum}.{EXTENSIONS[output]}",
            width=width,
            height=height,
            content_type=CONTENT_TYPES[output],
        )

    def _shared(self, checksum: str) -> tuple | None:
        """What another app server registered under ``checksum`` in this generation (it
        wrote the row then), or None; never trusted while the generation is unknown."""
        generation = self._generation.value
        if self.cache is None or generation is None:
            return None
        return self.cache.get(_cache_key(generation, checksum))

    def _save(self, cold: list[_Cold], generation: int | None) -> list[Representation]:
        """Remember new registrations, writing them now or at the end of the batch."""
        metrics.registered(len(cold))
        pending = _BATCHES.get().get(self)
        if pending is not None:
            pending.extend(cold)
            self._remember(cold, generation)
        elif cold:
            self._write(cold)
        return [item.entry.representation for item in cold]

    def _write(self, cold: list[_Cold]) -> None:
        rows = [item.row for item in cold if item.row]
        # Read before the rows are written: a purge after this raises the generation, so
        # neither this process nor the shared cache keeps answering with them.
        generation = self._generation.value
        try:
            added = self.store.add_new(rows) if rows else []
        except BaseException:
            with self._lock:
                for item in cold:
                    self._lru.pop(item.text, None)
            raise
        self._remember(cold, generation)
        if added and self._start_jobs is not None:
            self._start_jobs(added)
        if self.cache is not None and generation is not None:
            for item in cold:
                if item.row:
                    row = item.row
                    shared = (row["checksum"], row["output_format"], row["width"], row["height"])
                    self.cache.set(_cache_key(generation, item.key), shared)

    def _forget(self) -> None:
        with self._lock:
            self._lru = OrderedDict()
            self._unmade = OrderedDict()

    def _remember(self, cold: list[_Cold], generation: int | None) -> None:
        with self._lock:
            if generation != self._generation.value:
                return  # worked out before a purge or gc that the process has seen since
            for item in cold:
                replaced = self._lru.get(item.text)
                if replaced is not None:
                    self._unlist(replaced)
                self._lru[item.text] = item.entry
                if self._final_urls and not item.entry.final:
                    if not self._unmade:  # nothing was waiting: none of these is made yet
                        self._made_due = time.monotonic() + self._made_interval
                    self._unmade.setdefault(item.entry.representation.checksum, []).append(item.entry)
            while len(self._lru) > self.config.cache_size:
                self._unlist(self._lru.popitem(last=False)[1])

    def _unlist(self, entry: _Entry) -> None:
        """Stop watching for the result of an entry no longer remembered (lock held)."""
        checksum = entry.representation.checksum
        entries = self._unmade.get(checksum)
        if entries is not None and entry in entries:
            entries.remove(entry)
            if not entries:
                del self._unmade[checksum]


# Each registrar's open batch in the current context (thread, task), by registrar. One
# variable for all registrars, as Python's documentation asks (made once, at module level):
# a context holds its variables strongly, and Django makes a new registrar whenever its
# settings change.
_NO_BATCH: Mapping[Registrar, list[_Cold]] = MappingProxyType({})
_BATCHES: ContextVar[Mapping[Registrar, list[_Cold]]] = ContextVar("fileproc_batches", default=_NO_BATCH)


def _cache_key(generation: int, key: str) -> str:
    # "r:" since the value became (checksum, format, width, height): a process of an
    # earlier release, sharing the cache during a deploy, never reads one or writes one.
    return f"fileproc:{generation}:r:{key}"


# Part of the checksum of every result that animates: before issue 12 an animated source
# gave its first frame, and a browser or CDN may hold a permanent redirect to that still.
_ANIMATED_SALT = "animated"


def result_checksum(
    instructions: Instructions, source_version: str, *, animates: bool, engine: str = ""
) -> str:
    """The checksum a registration is stored and served under: the instructions' own,
    with more salt for a result that animates (an animated source without ``page``, made
    into a format of :data:`~.formats.ANIMATED_FORMATS`) and for a source an engine plugin
    reads (``engine``, its distribution and version: upgrading it gives new URLs)."""
    if not animates and not engine:
        return instructions.checksum(source_version)
    salt = [PROCESSING_VERSION]
    if animates:
        salt.append(_ANIMATED_SALT)
    if engine:
        salt.append(f"engine {engine}")
    return checksum(
        instructions.canonical,
        source_version,
        processing_version=" ".join(salt),
        plugins=instructions.plugins,
    )


def registrar_for(config: Config, *, cache=None) -> Registrar | RemoteRegistrar:
    """The registrar a template host should use: in-process, or over HTTP when the
    config names a processing server (``registrar_url``, signed with ``secret``)."""
    if config.registrar_url:
        from .remote import RemoteRegistrar

        assert config.secret  # Config refuses a registrar_url without one
        return RemoteRegistrar(config.registrar_url, secret=config.secret, cache=cache)
    return Registrar(config, cache=cache)
