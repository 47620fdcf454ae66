"""The WSGI middleware: answers ``<prefix>/...`` and passes every other path through.

``FileProcessor(app, config)`` decides "mine or not" with one string comparison before
building anything. For ``GET <prefix>/<checksum>[.<ext>]`` it makes the result if needed
(once, however many ask at the same moment) and answers with a redirect to it; finished
redirects are remembered in-process, so a warm hit is a dictionary lookup (forgotten when
``purge`` or ``gc --delete`` raise the store's generation, read once per
``source_check_interval``; presigned
ones expire, so they are made afresh each time and sent as temporary redirects). With local
storage it also serves ``<prefix>/files/...``, remaking a registered result whose file
has gone missing. Errors are turned into responses in one place, ``_error_response``;
no traceback ever reaches a client.

Last access (``accessed_at``, which ``fileproc gc`` reads) is recorded cheaply: a request
adds its path to an in-process set (the warm hit's only extra cost), written in batches
by :mod:`fileproc_wsgi.access`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from http import HTTPStatus

from webob import Request, Response

from . import access, metrics, pool, remote
from .access import FLUSHER
from .background import BackgroundJobs, default_threads
from .cache import Generation
from .config import Config
from .errors import FileProcError, NotRegisteredError, RequestTooLargeError, UnavailableError
from .formats import CONTENT_TYPES, EXTENSIONS, FORMAT_OF_EXTENSION
from .instructions import is_checksum
from .processing import Processor
from .registrar import Registrar
from .storage import LocalStorage, ResultStorage, open_storage, parse_key, result_key
from .storage.base import IMMUTABLE
from .store import InstructionStore

log = logging.getLogger(__name__)

_READ_METHODS = ("GET", "HEAD")
_PERMANENT = (301, 308)
_REDIRECT_CACHE_SIZE = 100_000
_OUTAGE_LOG_SECONDS = 10.0


class FileProcessor:
    """WSGI middleware serving fileproc_wsgi's URLs in front of ``app`` (or of nothing).

    ``store`` and ``storage`` default to the ones the config names. Given the
    ``registrar`` the application renders with, every request passed to the application
    runs inside ``registrar.batch()``: the page's new registrations are written in one
    transaction when the application returns, before its body is sent.
    """

    def __init__(
        self,
        app,
        config: Config | None = None,
        *,
        store: InstructionStore | None = None,
        storage: ResultStorage | None = None,
        registrar=None,
    ):
        self.app = app
        self.config = config or Config()
        self.registrar = registrar
        self._endpoint_registrar: Registrar | None = None
        if store is None and registrar is not None and getattr(registrar, "store", None) is not None:
            store = registrar.store
        self.store = store or InstructionStore(self.config.database_url)
        self.storage = storage or open_storage(self.config)
        self.processor = Processor(self.config, self.store, self.storage)
        threads = self.config.background_jobs
        if threads is None:
            threads = default_threads(self.config.max_concurrent_jobs)
        ensure = functools.partial(self.processor.ensure, background=True)
        self.background = BackgroundJobs(ensure, self.store.find, threads=threads, made=self._made)
        # Workers for the first page's jobs start importing now, while the server starts.
        self.processor.warm(threads)
        if isinstance(registrar, Registrar):
            registrar.pair(self.storage, self.background.submit)
        self._mount = self.config.prefix + "/"
        self._redirect_status = _status_line(self.config.redirect_status)
        self._redirect_cache_control = IMMUTABLE if self.config.redirect_status in _PERMANENT else "no-cache"
        self._redirects: dict[str, list[tuple[str, str]]] = {}
        self._redirects_lock = threading.Lock()
        # purge and gc --delete remove rows and results: forget every redirect then, or a
        # warm process keeps sending clients to a result that no longer exists.
        self._generation = Generation(self.store, self.config.source_check_interval, self._forget_redirects)
        self._accessed: set[str] = set()  # paths requested since the last flush
        self._outage_logged = float("-inf")
        self.flush_at = 0.0  # set by the flusher, which this joins on the first request made
        # Warm redirects answered: a plain int on the warm path, handed to the metrics by
        # metrics.publish (an increment lost to a thread switch costs a count, no more).
        self.warm_hits = 0
        self._metrics_path = self.config.metrics_path or None
        metrics.hand_over(self, "warm_hits")
        metrics.watch_queue(self.background)
        metrics.watch_pool(pool.state)
        if metrics.wanted(self.config):
            metrics.enable()
        self._health = _Health(self.store, self.storage)

    access_flush_seconds = 60.0

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith(self._mount) and path != self.config.prefix:
            if path == self._metrics_path and self._metrics_allowed(environ):
                return self._answer(Request(environ), self._metrics)(environ, start_response)
            if self.app is None:
                return self._error_response(NotRegisteredError("not found"))(environ, start_response)
            if self.registrar is None:
                return self.app(environ, start_response)
            return self._call_app_in_batch(environ, start_response)
        # One read, never a look then a read: another thread may empty the cache between them.
        headers = self._redirects.get(path)
        if headers is not None and environ.get("REQUEST_METHOD") in _READ_METHODS:
            if time.monotonic() >= self._generation.due:  # once per source_check_interval
                self._generation.check()
                headers = self._redirects.get(path)
            if headers is not None:
                self._accessed.add(path)
                self.warm_hits += 1
                start_response(self._redirect_status, headers)
                return [b""]
        return self._answer(Request(environ), self._dispatch)(environ, start_response)

    def _answer(self, request: Request, handler):
        """``handler(request)``'s answer, or its error's: never a traceback."""
        try:
            return handler(request)
        except FileProcError as error:
            return self._error_response(error)
        except Exception:
            log.exception("fileproc_wsgi: unexpected error answering %s", request.path_info)
            return self._error_response(FileProcError("internal error"))

    def _call_app_in_batch(self, environ, start_response):
        result = None
        try:
            with self.registrar.batch():
                result = self.app(environ, start_response)
        except FileProcError as error:
            if result is None:  # raised by the application itself, not by the write
                raise
            # The page is made but its new registrations could not be written (an
            # outage). Send the page anyway, as an unregistered thumbnail would be sent:
            # they were not remembered, so the next render registers them again.
            log.error("fileproc_wsgi: could not save this page's registrations: %s", error)
        return result

    def _dispatch(self, request: Request):
        """A WSGI application answering the request (a Response, or the redirect)."""
        name = request.path_info[len(self._mount) :]
        if request.path_info == self._metrics_path:
            if not self._metrics_allowed(request.environ):
                raise NotRegisteredError("not found")
            return self._metrics(request)
        if name == "health":
            self._allow(request, _READ_METHODS)
            return self._health.response()
        if name == "register":
            if not self.config.secret:
                raise NotRegisteredError("remote registration is off here: it needs a secret")
            return self._register(request)
        if name.startswith("files/") and self.storage.local:
            self._allow(request, _READ_METHODS)
            return self._serve_file(name[len("files/") :])
        self._allow(request, _READ_METHODS)
        checksum, dot, extension = name.partition(".")
        if not is_checksum(checksum) or (dot and extension not in FORMAT_OF_EXTENSION):
            raise NotRegisteredError("not a fileproc URL: expected <checksum>.<extension>")
        generation = self._generation.check()  # before the row is read: see _remember_redirect
        job = self.store.find(checksum)
        if job is None:
            raise NotRegisteredError(f"no instructions registered under {checksum}")
        if dot and extension != EXTENSIONS[job.output_format]:
            raise NotRegisteredError(
                f"{checksum} is registered as .{EXTENSIONS[job.output_format]}, not .{extension}"
            )
        job = self.processor.ensure(job)
        key = job.result_key
        assert key is not None, "ensure() answers with a made job"
        self._made(job.checksum, key)
        self._accessed.add(request.path_info)
        if not self.flush_at:
            FLUSHER.add(self)
        if self.config.serve_results and self.storage.local:
            return self._serve_file(key)
        location = self.storage.url(key)
        if self.storage.temporary_urls:
            return self._expiring_redirect(location)
        headers = [
            ("Location", location),
            ("Cache-Control", self._redirect_cache_control),
            ("Content-Length", "0"),
        ]
        self._remember_redirect(request.path_info, headers, generation)
        return self._redirect(headers)

    def _remember_redirect(self, path: str, headers: list[tuple[str, str]], generation: int | None) -> None:
        """Keep a redirect worked out from a row read in ``generation``, unless a purge or gc
        has moved the generation since (the row or its result may be gone) or it is unknown."""
        with self._redirects_lock:  # not on the warm path, which only reads
            if generation is None or generation != self._generation.value:
                return
            if len(self._redirects) >= _REDIRECT_CACHE_SIZE:
                self._redirects = {}
            self._redirects[path] = headers

    def _forget_redirects(self) -> None:
        with self._redirects_lock:
            self._redirects = {}

    def _register(self, request: Request) -> Response:
        """``POST <prefix>/register``: signed JSON texts in, representations out."""
        self._allow(request, ("POST",))
        limit = self.config.max_register_bytes
        if request.content_length is not None and request.content_length > limit:
            raise RequestTooLargeError(f"the body is over max_register_bytes ({limit} bytes)")
        body = request.body_file.read(limit + 1)  # never more than the cap, even chunked
        if len(body) > limit:
            raise RequestTooLargeError(f"the body is over max_register_bytes ({limit} bytes)")
        assert self.config.secret, "the register endpoint is routed only with a secret"
        remote.verify(
            self.config.secret,
            request.headers.get(remote.TIMESTAMP_HEADER),
            request.headers.get(remote.SIGNATURE_HEADER),
            body,
            now=time.time(),
        )
        reply = remote.answer(self._local_registrar(), remote.texts_of(body))
        # WebOb takes charset=None (a bytes body with no charset); its stubs say str.
        response = Response(body=reply, content_type="application/json", charset=None)  # type: ignore[arg-type]
        response.cache_control = "no-store"
        return response

    def _metrics_allowed(self, environ) -> bool:
        return metrics.allowed(environ.get("REMOTE_ADDR", ""), self.config.metrics_allowed)

    def _metrics(self, request: Request) -> Response:
        """``GET <metrics_path>``: every metric, in Prometheus' text format."""
        self._allow(request, _READ_METHODS)
        if not metrics.enable():
            raise UnavailableError("metrics are off here: prometheus_client is not installed")
        body, content_type = metrics.exposition()
        response = Response(body=body, charset=None)  # type: ignore[arg-type]  # as above
        response.headers["Content-Type"] = content_type
        response.cache_control = "no-store"
        return response

    def _local_registrar(self) -> Registrar:
        if isinstance(self.registrar, Registrar):
            return self.registrar
        if self._endpoint_registrar is None:  # built on first use: most sites never register remotely
            registrar = Registrar(self.config, store=self.store)
            registrar.pair(self.storage, self.background.submit)
            self._endpoint_registrar = registrar
        return self._endpoint_registrar

    def _made(self, checksum: str, result_key: str | None) -> None:
        """Tell the registrars of this process that a result is stored: their pages print
        its own URL from the next render on."""
        if not result_key:
            return
        for registrar in (self.registrar, self._endpoint_registrar):
            if isinstance(registrar, Registrar):
                registrar.made(checksum, result_key)

    def _redirect(self, headers: list[tuple[str, str]]):
        """The redirect with these headers, as a WSGI application."""

        # Sent as-is rather than through webob.Response, which would make Location
        # absolute: the first answer and the cached ones must be byte-identical.
        def redirect(environ, start_response):
            start_response(self._redirect_status, headers)
            return [b""]

        return redirect

    def close(self) -> None:
        """Stop making results in the background (queued jobs are left to requests), write
        the last accesses not written yet, and close the database connections: what a
        server or a test calls when this middleware is done with. A request after it
        still works (the store reconnects)."""
        self.background.close()
        FLUSHER.remove(self)
        self.store.dispose()

    def flush_access(self) -> int:
        """Write the last-access time of every result requested since the last flush (one
        batched ``touch``); how many were written. The flusher thread calls it by itself."""
        paths, self._accessed = self._accessed, set()
        checksums = {path[len(self._mount) :].partition(".")[0] for path in paths}
        return access.touch(self.store, {checksum for checksum in checksums if is_checksum(checksum)})

    def _expiring_redirect(self, location: str):
        """A redirect to a URL that expires (presigned): temporary, never stored by a cache
        or in ``_redirects``, since either would outlive the signature."""
        status = 302 if self.config.redirect_status in _PERMANENT else self.config.redirect_status
        headers = [("Location", location), ("Cache-Control", "no-store"), ("Content-Length", "0")]

        def redirect(environ, start_response):
            start_response(_status_line(status), headers)
            return [b""]

        return redirect

    def _allow(self, request: Request, methods: tuple[str, ...]) -> None:
        if request.method not in methods:
            raise _MethodNotAllowed(methods)

    def _serve_file(self, key: str) -> Response:
        parsed = parse_key(key)
        if parsed is None or key != result_key(*parsed):  # another fan-out directory is not its name
            raise NotRegisteredError("no such result")
        checksum, extension = parsed
        try:
            handle = open(self.storage.path(key), "rb")  # noqa: SIM115 - _FileBody closes it
        except FileNotFoundError:
            job = self.store.find(checksum)
            if job is None or EXTENSIONS[job.output_format] != extension:
                raise NotRegisteredError("no such result") from None
            log.info("fileproc_wsgi: result %s is missing from storage; making it again", key)
            self.processor.ensure(job, redo=True)
            try:
                handle = open(self.storage.path(key), "rb")  # noqa: SIM115
            except FileNotFoundError:
                error = UnavailableError("the result could not be stored; ask again shortly")
                raise metrics.reason(error, "storage") from None
        try:
            info = os.fstat(handle.fileno())
        except OSError:
            handle.close()
            raise
        return Response(
            app_iter=_FileBody(handle),
            content_type=CONTENT_TYPES[FORMAT_OF_EXTENSION[extension]],
            content_length=info.st_size,
            last_modified=info.st_mtime,
            etag=checksum,
            cache_control=IMMUTABLE,
            accept_ranges="bytes",
            conditional_response=True,
        )

    def _log_outage(self, error: UnavailableError) -> None:
        """What the backend said (host, port, endpoint) goes to the log, not to clients;
        once per ``_OUTAGE_LOG_SECONDS`` at most, as an outage fails every request."""
        detail = getattr(error, "detail", None)
        now = time.monotonic()
        if detail and now - self._outage_logged >= _OUTAGE_LOG_SECONDS:
            self._outage_logged = now
            log.warning("fileproc_wsgi: %s (%s)", error, detail)

    def _error_response(self, error: FileProcError) -> Response:
        """The only place an exception becomes an HTTP answer: status and one line of text."""
        message = str(error).splitlines()[0] if str(error) else HTTPStatus(error.status).phrase
        response = Response(
            status=_status_line(error.status),
            content_type="text/plain",
            charset="utf-8",
            body=(message + "\n").encode(),
        )
        response.cache_control = "no-store"
        if isinstance(error, UnavailableError):
            response.retry_after = error.retry_after
            self._log_outage(error)
            metrics.unavailable(error)
        if isinstance(error, _MethodNotAllowed):
            response.allow = error.methods
        return response


class _Health:
    """``GET <prefix>/health``: ``200 ok`` when the database answers one short query and
    the result storage is reachable, each within :attr:`seconds`; else ``503`` naming
    which did not. A check that hangs (a network that drops packets) is not started again
    while it hangs: the next asks find it still running and answer 503 at once."""

    seconds = 1.0

    def __init__(self, store: InstructionStore, storage: ResultStorage):
        self.checks: dict[str, Callable[[], object]] = {
            "database": store.generation,
            "storage": functools.partial(_reach, storage),
        }
        self._running: dict[str, tuple[threading.Thread, list[str]]] = {}
        self._lock = threading.Lock()
        self._logged = float("-inf")

    def response(self) -> Response:
        deadline = time.monotonic() + self.seconds
        started = [(name, self._start(name)) for name in self.checks]
        failed = []
        for name, (thread, outcome) in started:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                failed.append((name, f"no answer within {self.seconds:g} s"))
            elif outcome:
                failed.append((name, outcome[0]))
        if failed:
            now = time.monotonic()
            if now - self._logged >= _OUTAGE_LOG_SECONDS:
                self._logged = now
                log.warning("fileproc_wsgi: health: %s", "; ".join(f"{name}: {why}" for name, why in failed))
            body = "unavailable: " + ", ".join(name for name, _ in failed)
        else:
            body = "ok"
        response = Response(
            status=503 if failed else 200,
            content_type="text/plain",
            charset="utf-8",
            body=(body + "\n").encode(),
        )
        response.cache_control = "no-store"
        return response

    def _start(self, name: str) -> tuple[threading.Thread, list[str]]:
        """The thread running check ``name`` (the one still hanging, if any) and the list it
        puts its failure in."""
        with self._lock:
            running = self._running.get(name)
            if running is not None and running[0].is_alive():
                return running
            outcome: list[str] = []

            def run():
                try:
                    self.checks[name]()
                except Exception as error:  # whatever it is, the check failed: no traceback
                    outcome.append(str(error).partition("\n")[0] or type(error).__name__)

            thread = threading.Thread(target=run, name=f"fileproc-health-{name}", daemon=True)
            self._running[name] = (thread, outcome)
            thread.start()
            return thread, outcome


def _reach(storage: ResultStorage) -> None:
    """Raise unless the result storage can be reached: a local directory (or, before the
    first result, the nearest path above it that exists, which must be a directory)
    writable by this process; any other storage asked whether one key exists (one request)."""
    if isinstance(storage, LocalStorage):
        path = storage.directory
        while not os.path.exists(path) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
            raise UnavailableError("result storage unavailable: its directory cannot be written")
        return
    storage.exists("fileproc-health-check")


class _FileBody:
    """A served file's body, ``start`` to ``stop``, read in blocks; the file is closed at
    the end of the bytes or by ``close``, whichever comes first.

    WebOb's FileIter closes in its generator's ``finally``, which never runs when the
    generator is closed before it starts: a 304, a HEAD, a Range request (WebOb asks
    ``app_iter_range`` for a new iterator and drops this one) or a client that hangs up
    before the first block. WSGI servers call ``close`` on every response, iterated or not.
    """

    block_size = 1 << 16

    def __init__(self, file, start: int = 0, stop: int | None = None):
        self.file = file
        self._position = start
        self._stop = stop

    def app_iter_range(self, start: int, stop: int | None) -> _FileBody:
        # WebOb's ranged responses: the new body owns the file (this one is dropped unclosed).
        return _FileBody(self.file, start, stop)

    def __iter__(self) -> _FileBody:
        return self

    def __next__(self) -> bytes:
        if self.file.closed:
            raise StopIteration
        size = self.block_size if self._stop is None else min(self.block_size, self._stop - self._position)
        # pread: each body keeps its own position, whatever another body of the file did.
        data = os.pread(self.file.fileno(), size, self._position) if size > 0 else b""
        if not data:
            self.close()
            raise StopIteration
        self._position += len(data)
        return data

    def close(self) -> None:
        self.file.close()


class _MethodNotAllowed(FileProcError):
    status = 405

    def __init__(self, methods: tuple[str, ...]):
        self.methods = methods
        super().__init__(f"method not allowed here; use {' or '.join(methods)}")


def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"
