"""Jobs in worker processes: hard time and memory limits, and native crashes contained.

Decoders are native code fed with files from strangers. In the web process, a render
that never returns outlives every deadline, a segfault takes down every request the
process was answering, and one allocation can take the host's memory. So
:class:`~fileproc_wsgi.processing.Processor` hands each job's decode → steps → encode to
a long-lived worker process from :class:`WorkerPool` and keeps the claim, the lease, the
fencing and the storing itself: a worker only returns bytes, so a worker killed mid-job
leaves no file behind.

- **Time.** The web process waits for the answer until the job's deadline
  (``max_processing_seconds``), then kills the worker's whole process group (a decoder
  may have started Ghostscript) with SIGKILL and raises :class:`TimeLimitError`.
- **Memory.** Each job runs under an address-space limit (``RLIMIT_AS`` =
  ``max_job_memory``): an allocation past it fails inside the job and refuses it with a
  :class:`LimitError`, instead of waking the host's OOM killer.
- **Crashes.** A worker killed by SIGSEGV, SIGBUS, SIGABRT, SIGFPE or SIGILL fails its
  job for good (:class:`ProcessingError`): the same source would crash the next worker
  too. Any other death (SIGKILL from the OOM killer or an operator, an exit) is a fault of
  the surroundings: :class:`WorkerLostError`, an :class:`UnavailableError` retried with
  backoff.
- **Errors** cross the boundary as :func:`.errors.describe` dicts, never pickled
  exceptions; a non-FileProcError escaping the pipeline is a bug, logged by the web
  process with the worker's traceback and raised as :class:`WorkerBugError`.

Workers are started with :mod:`subprocess` (``python -c`` running :func:`.worker.serve`),
never forked from the web process: forking a threaded server copies locks held by other
threads, and a fresh interpreter is as safe under gunicorn's pre-fork as anywhere. A
start costs about 0.7 s of one core (the engines' imports), paid once per worker; a job
waits for a fresh worker to be ready and its time limit counts from then, and a worker
killed, crashed or retired is replaced at once, before the next job asks. One pool
serves every Processor of a process; its size follows the jobs running (each Processor
holds at most ``max_concurrent_jobs``). A worker is replaced after ``worker_max_jobs``
jobs, when its resident memory stays above :data:`.worker.RSS_CEILING` after a job, and
after running out of memory; an idle one leaves after :data:`IDLE_SECONDS`. A forked web
process starts a pool of its own, and every worker is stopped at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from socket import socketpair

from .config import Config
from .errors import FileProcError, ProcessingError, TimeLimitError, UnavailableError, restore

log = logging.getLogger(__name__)

# An idle worker costs its resident memory and nothing else; a quiet site gives it back.
IDLE_SECONDS = 300.0
# Signals a native library dies of when a source breaks it: the source would break the
# next worker too, so the job is refused for good.
CRASH_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE, signal.SIGILL})
# glibc reserves 64 MiB of address space per thread arena (up to 8 per core), which
# RLIMIT_AS counts although it is never touched: FFmpeg's or ImageMagick's threads would
# use up max_job_memory without allocating anything.
_WORKER_ENVIRONMENT = {"MALLOC_ARENA_MAX": "2"}
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A worker is a fresh interpreter running worker.serve; the package's parent directory
# comes first on its path, so it imports the same fileproc_wsgi as the web process
# whatever the working directory.
_WORKER_COMMAND = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from fileproc_wsgi.worker import serve; serve(int(sys.argv[2]))"
)
_HANDOFF_ATTEMPTS = 3  # workers tried for one job when each left before taking it
_START_SECONDS = 60.0  # a worker's imports take about 0.7 s; a machine may be very busy
# A header read in a worker (LibRaw opening a camera file: milliseconds) holds up a page
# render: one that takes longer is refused rather than waited for.
PROBE_SECONDS = 10.0


class WorkerLostError(UnavailableError):
    """The worker running a job died of something other than the source: killed by the
    OOM killer or an operator, or exited. Transient: the job is tried again later."""


class WorkerBugError(Exception):
    """The pipeline raised something that is not a FileProcError in a worker: a bug here.
    Like any unexpected error, the processor logs it and retries the job later."""


class IsolatedJobs:
    """Runs the jobs of one :class:`Config` in the process's shared :class:`WorkerPool`."""

    def __init__(self, config: Config):
        self.config = config
        # Sent with every job: the worker keeps the Config and its Sources per distinct
        # blob. Config holds a mappingproxy, which does not pickle; its fields do.
        values = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
        values["source_roots"] = dict(values["source_roots"])
        self._blob = pickle.dumps(values)

    def run(
        self,
        text: str,
        output_format: str,
        deadline: float,
        *,
        source_path: str | None = None,
        stats: dict | None = None,
    ) -> tuple[bytes, int, int]:
        """``(data, width, height)`` of the job with canonical instructions ``text``, made
        in a worker; raises the job's FileProcError, :class:`TimeLimitError` when it runs
        past ``deadline`` (a :func:`time.monotonic` time, moved on by the time a fresh
        worker took to start) or the errors above.

        ``source_path`` is the file the web process found (or spooled) for the source,
        which the worker then reads under the source's reference; without it the worker
        resolves the reference itself. ``stats`` is given what the worker measured of the
        job (:func:`.processing.produce`), made or refused."""
        return shared_pool().run(self._blob, self.config, text, output_format, deadline, source_path, stats)

    def probe(self, text: str, source_path: str, seconds: float = PROBE_SECONDS) -> tuple:
        """:func:`.engines.probe` of the source of ``text`` (read from ``source_path``)
        with its native library, in a worker: ``(format, width, height, has_alpha,
        frames, engine)``. Raises the probe's refusal, :class:`TimeLimitError` past
        ``seconds``, or :class:`ProcessingError` when the library crashed the worker."""
        return shared_pool().probe(self._blob, self.config, text, source_path, seconds)


@dataclasses.dataclass(eq=False)
class _Worker:
    process: subprocess.Popen
    connection: Connection
    environment: int  # _environment() when it started
    idle_since: float = 0.0
    ready: bool = False


class WorkerPool:
    """Worker processes for jobs, started on demand and reused one job at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._closed = False
        self.pid = os.getpid()

    def run(
        self,
        blob: bytes,
        config: Config,
        text: str,
        output_format: str,
        deadline: float,
        source_path: str | None = None,
        stats: dict | None = None,
    ) -> tuple[bytes, int, int]:
        """Run one job in a worker; see :meth:`IsolatedJobs.run`."""
        seconds = deadline - time.monotonic()
        request = ("job", blob, text, output_format, source_path, seconds)
        return self._request(request, config, seconds, text, functools.partial(_time_limit, config), stats)

    def probe(self, blob: bytes, config: Config, text: str, source_path: str, seconds: float) -> tuple:
        """Read a header in a worker; see :meth:`IsolatedJobs.probe`."""
        request = ("probe", blob, text, None, source_path, seconds)
        return self._request(request, config, seconds, text, functools.partial(_probe_time_limit, seconds))

    def _request(self, request: tuple, config: Config, seconds: float, text: str, expired, stats=None):
        """Send ``request`` to a worker and return what it made; ``expired(what)`` is the
        TimeLimitError for a request that ran past ``seconds``. ``stats`` is updated with
        what the worker measured."""
        for _ in range(_HANDOFF_ATTEMPTS):
            if seconds <= 0:
                raise expired("before a worker took it")
            worker = self._acquire()
            if not worker.ready:
                self._wait_until_ready(worker)
            # A worker's start (its imports) is not the job's time: the clock starts now.
            deadline = time.monotonic() + seconds
            job = pickle.dumps((*request, config.max_job_memory, config.worker_max_jobs))
            try:
                worker.connection.send_bytes(job)
            except OSError:  # it left (idle, or killed while idle) before the job reached it
                self._discard(worker)
                continue
            reply = self._answer(worker, deadline, expired)
            if reply is None:  # it said goodbye (idle) as the job arrived: nobody ran the job
                self._discard(worker)
                continue
            kind, payload, retiring, measured = reply
            if stats is not None and measured:
                stats.update(measured)
            if retiring:
                self._discard(worker)
                self._spare()
            else:
                self._release(worker)
            if kind == "done":
                return payload
            if kind == "refused":
                raise restore(payload)
            log.error("fileproc_wsgi: a job raised an unexpected error in its worker:\n%s", payload)
            raise WorkerBugError(f"unexpected error in the worker making {text!r} (logged)")
        raise WorkerLostError("no worker process could take the job; ask again shortly")

    def _wait_until_ready(self, worker: _Worker) -> None:
        try:
            if (
                worker.connection.poll(_START_SECONDS)
                and pickle.loads(worker.connection.recv_bytes())[0] == "ready"
            ):
                worker.ready = True
                return
        except (EOFError, OSError):
            pass
        self._kill(worker)
        log.error("fileproc_wsgi: a worker process did not start (exit status %s)", worker.process.returncode)
        raise WorkerLostError("no worker process could be started; ask again shortly")

    def _answer(self, worker: _Worker, deadline: float, expired) -> tuple | None:
        """The worker's reply, or None for its goodbye; kills it at the deadline."""
        connection = worker.connection
        try:
            if not connection.poll(max(0.0, deadline - time.monotonic())):
                self._kill(worker)
                self._spare()
                raise expired("the worker was stopped")
            reply = pickle.loads(connection.recv_bytes())
        except (EOFError, OSError):
            raise self._death(worker) from None
        return None if reply[0] == "retired" else reply

    def _death(self, worker: _Worker) -> FileProcError:
        """The error for a job whose worker died under it, by the way it died."""
        self._discard(worker)
        self._spare()
        status = worker.process.returncode
        if status is not None and -status in CRASH_SIGNALS:
            name = signal.Signals(-status).name
            log.warning("fileproc_wsgi: worker %d died of %s", worker.process.pid, name)
            return ProcessingError(f"a library crashed while processing this source ({name})")
        how = (
            f"was killed ({signal.Signals(-status).name})" if status and status < 0 else f"exited ({status})"
        )
        log.warning("fileproc_wsgi: worker %d %s mid-job", worker.process.pid, how)
        return WorkerLostError(f"the worker process making this result {how}; it will be tried again")

    def warm(self, count: int) -> int:
        """Start workers until ``count`` are alive, so a server's first jobs do not wait
        for the engines' imports; how many were started. Never waits for them."""
        with self._lock:
            if self._closed:
                return 0
            missing = count - len(self._busy) - sum(w.process.poll() is None for w in self._idle)
            for _ in range(missing):
                worker = self._start()
                worker.idle_since = time.monotonic()
                self._idle.append(worker)
        return max(0, missing)

    def _acquire(self) -> _Worker:
        now = time.monotonic()
        with self._lock:
            if self._closed:
                raise UnavailableError("this server is shutting down")
            # Most recently used first: the others stay idle long enough to leave. A worker
            # started before the environment a job reads changed (credentials set, a proxy,
            # TZ) would make the job in another world than the web process's: it leaves.
            environment = _environment()
            outdated = []
            while self._idle:
                worker = self._idle.pop()
                if worker.process.poll() is not None:
                    self._reap(worker)
                elif worker.environment != environment:
                    outdated.append(worker)
                else:
                    break
            else:
                worker = self._start()
            stale = [w for w in self._idle if now - w.idle_since > IDLE_SECONDS]
            self._idle = [w for w in self._idle if w not in stale]
            self._busy.add(worker)
        for old in stale + outdated:
            self._stop(old)
        return worker

    def _spare(self) -> None:
        """Start a worker for the next job now, when none is idle: it imports while no
        request waits for it."""
        with self._lock:
            if not self._idle and not self._closed:
                worker = self._start()
                worker.idle_since = time.monotonic()
                self._idle.append(worker)

    def _release(self, worker: _Worker) -> None:
        worker.idle_since = time.monotonic()
        with self._lock:
            self._busy.discard(worker)
            if self._closed:
                self._stop(worker)
            else:
                self._idle.append(worker)

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
        self._stop(worker)

    def _start(self) -> _Worker:
        ours, theirs = socketpair()
        with ours, theirs:
            process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_COMMAND, _PACKAGE_PARENT, str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else None,
                pass_fds=(theirs.fileno(),),
                env={**os.environ, **_WORKER_ENVIRONMENT},
                # Its own process group, so a kill reaches whatever it started (Ghostscript
                # under ImageMagick), and a terminal's Ctrl-C reaches only the web process.
                start_new_session=True,
            )
            connection = Connection(os.dup(ours.fileno()))
        return _Worker(process, connection, _environment())

    def _kill(self, worker: _Worker) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            worker.process.kill()
        self._discard(worker)

    @staticmethod
    def _stop(worker: _Worker, timeout: float = 5.0) -> None:
        """Close its connection (it leaves at once when idle) and wait for it."""
        worker.connection.close()
        try:
            worker.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.kill()
            worker.process.wait()

    @staticmethod
    def _reap(worker: _Worker) -> None:
        worker.connection.close()
        worker.process.wait()

    def close(self) -> None:
        """Stop every worker: idle ones leave, busy ones are killed."""
        with self._lock:
            self._closed = True
            idle, busy = self._idle, list(self._busy)
            self._idle = []
        for worker in busy:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.process.pid, signal.SIGKILL)
        for worker in idle:
            self._stop(worker)

    def size(self) -> tuple[int, int]:
        """(idle, busy) workers, for the command line and tests."""
        with self._lock:
            return len(self._idle), len(self._busy)


# What a job's libraries read from the environment: S3 credentials and endpoints, proxies
# and certificates for downloads, ImageMagick's and FFmpeg's settings, the time zone and
# locale, temporary files, HOME (~/.aws) and PYTHONPATH (where a worker's imports come
# from). Other variables change without meaning
# anything to a job (a test runner names the running test in one), and a worker's start
# costs half a second.
_JOB_ENVIRONMENT = (
    "AWS_", "BOTO", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "SSL_CERT_",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "MAGICK_", "FFREPORT", "AV_LOG", "TZ", "LANG", "LC_",
    "TMPDIR", "HOME", "XDG_", "FILEPROC_", "PYTHONPATH",
)  # fmt: skip


def _environment() -> int:
    """A fingerprint of the environment variables a job reads (a few microseconds)."""
    return hash(
        frozenset(item for item in os.environ.items() if item[0].upper().startswith(_JOB_ENVIRONMENT))
    )


def _time_limit(config: Config, what: str) -> TimeLimitError:
    return TimeLimitError(
        f"processing took longer than max_processing_seconds={config.max_processing_seconds:g} ({what})"
    )


def _probe_time_limit(seconds: float, what: str) -> TimeLimitError:
    return TimeLimitError(f"reading the source's header took longer than {seconds:g} s ({what})")


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):  # pytest's capture, a StringIO
        return False
    return True


_pool: WorkerPool | None = None
_pool_lock = threading.Lock()
_turns: tuple[int, JobTurns] | None = None


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class JobTurns:
    """Turns to run a job, one per usable core: jobs are CPU-bound, so a job beyond the
    cores only slows the others down (and starts one more worker, about 0.2 s of a core).
    A request that waits for a turn goes before the background: a job a browser is
    waiting for is never queued behind one made ahead of time."""

    def __init__(self, count: int):
        self.count = count
        self._free = count
        self._requests_waiting = 0
        self._condition = threading.Condition()

    def acquire(self, timeout: float, *, background: bool = False) -> bool:
        deadline = time.monotonic() + timeout
        with self._condition:
            if not background:
                self._requests_waiting += 1
            try:
                while not self._free or (background and self._requests_waiting):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._condition.wait(remaining)
                self._free -= 1
                return True
            finally:
                if not background:
                    self._requests_waiting -= 1
                    self._condition.notify_all()  # the background may go now

    def release(self) -> None:
        with self._condition:
            self._free += 1
            self._condition.notify_all()

    def in_use(self) -> int:
        return self.count - self._free


def job_turns() -> JobTurns:
    """This process's :class:`JobTurns`, shared by all its Processors (a forked child gets
    its own)."""
    global _turns
    turns = _turns
    if turns is None or turns[0] != os.getpid():
        with _pool_lock:
            if _turns is None or _turns[0] != os.getpid():
                _turns = (os.getpid(), JobTurns(usable_cores()))
            turns = _turns
    return turns[1]


def state() -> tuple[int, int, int]:
    """(idle workers, busy workers, job turns in use) of this process, for the metrics;
    starts neither a pool nor its turns."""
    pool, turns = _pool, _turns
    idle, busy = pool.size() if pool is not None and pool.pid == os.getpid() else (0, 0)
    in_use = turns[1].in_use() if turns is not None and turns[0] == os.getpid() else 0
    return idle, busy, in_use


def shared_pool() -> WorkerPool:
    """This process's pool, started on first use (a forked child gets a new one)."""
    global _pool
    pool = _pool
    if pool is not None and pool.pid == os.getpid():
        return pool
    with _pool_lock:
        if _pool is None or _pool.pid != os.getpid():
            _pool = WorkerPool()
        return _pool


def _forget_after_fork() -> None:
    """In a forked child: the parent's workers are the parent's. Drop their sockets (so a
    worker still sees its web process leave) without a word to them."""
    global _pool, _pool_lock, _turns
    pool, _pool, _pool_lock, _turns = _pool, None, threading.Lock(), None
    if pool is not None:
        for worker in [*pool._idle, *pool._busy]:
            worker.connection.close()
            worker.process.returncode = 0  # not our child: never wait for it here


def _shutdown() -> None:
    if _pool is not None and _pool.pid == os.getpid():
        _pool.close()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(_shutdown)
