"""Making a registered result exactly once and recording how it went.

:meth:`Processor.ensure` is what the middleware calls for a checksum. Within one process
a per-checksum lock lets the first request do the work while the others wait for it;
across processes and hosts the store's claim (a conditional UPDATE with a lease and a
fencing token) decides who works, and the rest wait a bounded time for the result.

Limits that belong to a job rather than to its source are kept here: at most
``max_concurrent_jobs`` jobs are under way at once in one Processor (one per process in
practice), and a request that would start one more is refused at once, never queued; of
those, one per usable CPU core runs at a time (:func:`.pool.job_turns`, shared by the
process's Processors) and the rest wait for a turn, up to ``wait_timeout``; each job has
``max_processing_seconds``. With ``isolate_jobs`` (the default) :func:`produce` runs in a
worker process (:mod:`.pool`) that is killed at that time; in the web process it is
checked between the stages of :func:`produce`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from PIL import Image

from . import engines, formats, metrics, plugins, pool
from .config import Config
from .encode import animation_frame, encode, encode_animation
from .engines.boundary import failure
from .errors import (
    PERMANENT_FAILURES,
    FileProcError,
    LeaseLostError,
    MissingLibraryError,
    RecordedFailureError,
    TimeLimitError,
    UnavailableError,
)
from .formats import ANIMATED_FORMATS, CONTENT_TYPES, EXTENSIONS
from .instructions import Instructions, parse
from .operations import RESAMPLING, SMART, WHITE, Fill, Operation, PluginOperation
from .sources import LocalSource, Sources, StorageSource
from .storage import ResultStorage, result_key

if TYPE_CHECKING:
    from .sources.http import HttpSource
    from .sources.s3 import S3Source
    from .store import InstructionStore, Job

log = logging.getLogger(__name__)

_FIRST_RETRY = 30.0
_LAST_RETRY = 3600.0
# A job that ran out of time may only have met a busy machine: the first overruns are
# retried with backoff, and the last is recorded as permanent like any other limit.
_TIME_LIMIT_ATTEMPTS = 3


class Processor:
    """Turns registered instructions into stored results for one configuration.

    ``sources`` resolves every job's source in this process. A job run in a worker
    (``isolate_jobs``) is given the file to read when it is local or in a storage; a
    worker resolves only http(s) and s3:// sources itself, from the config.
    """

    def __init__(
        self, config: Config, store: InstructionStore, storage: ResultStorage, sources: Sources | None = None
    ):
        self.config = config
        self.store = store
        self.storage = storage
        self.sources = sources or Sources.for_config(config)
        self._isolated = pool.IsolatedJobs(config) if config.isolate_jobs else None
        self._flights: dict[str, _Flight] = {}
        self._flights_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(config.max_concurrent_jobs)

    def ensure(self, job: Job, *, redo: bool = False, background: bool = False) -> Job:
        """The finished version of ``job`` (as just read from the store), made first if needed.

        ``redo`` makes a finished result again (its file has gone missing);
        ``background`` jobs (made before anyone asks) take a turn only when no request
        waits for one. Raises
        RecordedFailureError for a failure on record, and UnavailableError when another
        worker still holds the job past ``wait_timeout``.
        """
        if job.state == "done" and not redo:
            return job
        if job.state == "failed" and (job.retry_at is None or job.retry_at > self.store.now()):
            raise failure_of(job, self.store.now())
        deadline = time.monotonic() + self.config.wait_timeout
        with self._single_flight(job.checksum, deadline) as queued:
            job = self.store.get(job.checksum)  # another thread may have finished it meanwhile
            # redo: made again only if its file is really gone (another thread may have redone it)
            if job.state == "done" and (
                not redo or (job.result_key is not None and self.storage.exists(job.result_key))
            ):
                if queued:
                    metrics.waited("made")
                return job
            if queued and job.state == "failed":
                metrics.waited("refused" if job.retry_at is None else "failed")
            return self._claim_or_wait(job, redo, deadline, background)

    @contextlib.contextmanager
    def _single_flight(self, checksum: str, deadline: float):
        """Hold the in-process lock for ``checksum``: one thread works, the rest queue.
        Yields whether this thread queued behind another."""
        with self._flights_lock:
            flight = self._flights.setdefault(checksum, _Flight())
            flight.users += 1
        try:
            queued = not flight.lock.acquire(blocking=False)
            if queued and not flight.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                metrics.waited("timeout")
                raise self._busy()
            try:
                yield queued
            finally:
                flight.lock.release()
        finally:
            with self._flights_lock:
                flight.users -= 1
                if not flight.users:
                    del self._flights[checksum]

    def _busy(self) -> UnavailableError:
        error = UnavailableError(
            "the result is still being made; ask again shortly", retry_after=self.config.retry_after
        )
        return metrics.reason(error, "busy")

    def _overloaded(self) -> UnavailableError:
        error = UnavailableError(
            f"this server is busy making other results (max_concurrent_jobs="
            f"{self.config.max_concurrent_jobs}); ask again shortly",
            retry_after=self.config.retry_after,
        )
        return metrics.reason(error, "overloaded")

    def _claim_or_wait(self, job: Job, redo: bool, deadline: float, background: bool = False) -> Job:
        pause = 0.02
        waited = False  # on another process's claim
        while True:
            # Never blocks: a request beyond max_concurrent_jobs is answered at once rather
            # than queued behind work it cannot speed up.
            if self._slots.acquire(blocking=False):
                try:
                    with self._turn(deadline, background):
                        token = self.store.claim(
                            job.checksum, lease=self.config.lease_seconds, redo=redo and job.state == "done"
                        )
                        if token is not None:
                            try:
                                if waited:
                                    metrics.waited("lost")  # its lease ran out: made here
                                return self._run(job, token)
                            except LeaseLostError:
                                log.warning(
                                    "lease on %s expired while processing; another worker took over",
                                    job.checksum,
                                )
                finally:
                    self._slots.release()
            elif not self._held_elsewhere(job):
                raise self._overloaded()
            waited = True
            job = self.store.get(job.checksum)
            if job.state == "done":
                if waited:
                    metrics.waited("made")
                return job
            if job.state == "failed":
                if waited:
                    metrics.waited("refused" if job.retry_at is None else "failed")
                raise failure_of(job, self.store.now())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if waited:
                    metrics.waited("timeout")
                raise self._busy()
            # Another process holds the lease: poll gently until it finishes.
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.2)  # 0.5 s made a herd arrive up to half a second late

    @contextlib.contextmanager
    def _turn(self, deadline: float, background: bool):
        """Hold one of the process's turns (one per core) while the job is claimed and
        made: an accepted job beyond the cores waits for one here, up to ``deadline``,
        instead of running beside the others on the same cores."""
        turns = pool.job_turns()
        if not turns.acquire(max(0.0, deadline - time.monotonic()), background=background):
            error = UnavailableError(
                "this server's cores are busy making other results; ask again shortly",
                retry_after=self.config.retry_after,
            )
            raise metrics.reason(error, "cores")
        try:
            yield
        finally:
            turns.release()

    def warm(self, workers: int) -> None:
        """Start ``workers`` worker processes now (isolated jobs only), so the first jobs
        do not wait for their imports."""
        if self._isolated is not None and workers > 0:
            pool.shared_pool().warm(workers)

    def _held_elsewhere(self, job: Job) -> bool:
        """Whether another worker holds a live claim on ``job``: waiting for its result
        needs no slot, since it starts no job here."""
        return job.state == "working" and job.lease_until is not None and job.lease_until >= self.store.now()

    def _run(self, job: Job, token: int) -> Job:
        """Make and store the claimed job; its metrics and log line are written when it ends."""
        started = time.monotonic()
        stats: dict = {}
        with metrics.span("fileproc.job", checksum=job.checksum, source=job.source):
            try:
                done = self._make_and_store(job, token, stats)
            except BaseException as error:
                stats["total"] = time.monotonic() - started
                reason = str(error).partition("\n")[0] if isinstance(error, FileProcError) else "bug"
                attempt = job.attempts + 1
                metrics.job_finished(job.checksum, stats, _outcome(error), attempt=attempt, reason=reason)
                raise
        stats["total"] = time.monotonic() - started
        metrics.job_finished(job.checksum, stats, "made", attempt=job.attempts + 1)
        return done

    def _make_and_store(self, job: Job, token: int, stats: dict) -> Job:
        try:
            result = self.make(
                job, deadline=time.monotonic() + self.config.max_processing_seconds, stats=stats
            )
            stats["bytes_out"] = len(result.data)
            key = result_key(job.checksum, EXTENSIONS[job.output_format])
            # A worker that stalled past its lease must not overwrite the file the worker
            # that took over may have finished (their bytes can differ during a deploy).
            # One read narrows that window to the write itself; completion stays fenced.
            storing = time.monotonic()
            current = self.store.find(job.checksum)
            if current is None or current.token != token:
                raise LeaseLostError(f"lease on {job.checksum} was taken over before storing")
            self.storage.put(key, result.data)
        except LeaseLostError:
            raise
        except MissingLibraryError as error:
            # This host lacks what the source needs: installing it, or another host that
            # has it, must make the URL work without `fileproc retry`.
            self._fail_for_now(job, token, error)
        except PERMANENT_FAILURES as error:
            if not isinstance(error, TimeLimitError) or job.attempts + 1 >= _TIME_LIMIT_ATTEMPTS:
                # A source refused only now (replaced by a FIFO, a symlink out of its root ...)
                # is no bad request: the URL is registered and its source cannot be processed.
                status = 422 if error.status == 400 else error.status
                self.store.fail(job.checksum, token, str(error), retry_at=None, status=status)
                if status != error.status:
                    raise RecordedFailureError(str(error), status) from None
                raise
            self._fail_for_now(job, token, error)
        except Exception as error:
            self._fail_for_now(job, token, error)
        self.store.complete(
            job.checksum,
            token,
            result_key=key,
            content_type=CONTENT_TYPES[job.output_format],
            width=result.width,
            height=result.height,
            result_bytes=len(result.data),
        )
        stats["store"] = time.monotonic() - storing
        return self.store.get(job.checksum)

    def _fail_for_now(self, job: Job, token: int, error: Exception) -> NoReturn:
        """Record a failure that may pass (an outage, a busy machine) with a retry time that
        doubles with each attempt, and raise what requests get until then (a 503)."""
        if not isinstance(error, FileProcError):
            log.exception("processing %s failed unexpectedly", job.checksum)
        delay = min(_FIRST_RETRY * 2 ** max(0, job.attempts), _LAST_RETRY)
        reason = str(error) if isinstance(error, FileProcError) else "internal error while processing"
        try:
            self.store.fail(job.checksum, token, reason, retry_at=self.store.now() + delay, status=503)
        except LeaseLostError:
            raise  # another worker has the job now: answer with its verdict, not this one
        except FileProcError:
            pass  # the store may be what is down
        # The answer every request gets until the retry time: the same Retry-After. What
        # reaches here is a fault of the surroundings (the sources' disk, storage, the
        # database, a library missing on this host) or a bug, never a property of the
        # source: the engines' boundaries have made those permanent refusals already.
        detail = getattr(error, "detail", None)  # the backend's own words, for the log
        answer = UnavailableError(reason, retry_after=max(1, round(delay)), detail=detail)
        raise metrics.reason(answer, _unavailable_reason(error)) from None

    def make(self, job: Job, *, deadline: float | None = None, stats: dict | None = None) -> Result:
        """Decode, transform and encode the job's source, without touching the store.

        A size predicted at registration is checked first, so a limit lowered since then
        refuses the job before its source is opened. ``stats`` is given what was measured
        (see :func:`produce`), and the source's kind.
        """
        stats = {} if stats is None else stats
        if job.width is not None and job.height is not None:
            self.config.check_result_size(job.width, job.height)
        instructions = parse(job.instructions)
        if self._isolated is None:
            source = self.sources.resolve(instructions.source)
            stats["source"] = _SOURCE_KINDS.get(type(source).__name__, "other")
            return produce(
                instructions, source, job.output_format, self.config, deadline=deadline, stats=stats
            )
        if deadline is None:
            deadline = time.monotonic() + self.config.max_processing_seconds
        return Result(*self._run_isolated(job, instructions.source, deadline, stats))

    def _run_isolated(self, job: Job, reference: str, deadline: float, stats: dict) -> tuple[bytes, int, int]:
        """Resolve here, where every storage kind is loaded, and hand the worker a file:
        a local file's path, or a storage's file spooled to a private temporary file
        (counted in the job's time). An http(s) or s3:// source is fetched by the worker."""
        source = self.sources.resolve(reference)
        stats["source"] = _SOURCE_KINDS.get(type(source).__name__, "other")
        assert self._isolated is not None  # make() comes here only with isolate_jobs
        run = functools.partial(
            self._isolated.run, job.instructions, job.output_format, deadline, stats=stats
        )
        if isinstance(source, LocalSource):
            return run(source_path=source.path)
        if isinstance(source, StorageSource):
            with source.spooled(self.config.max_source_bytes, deadline) as path:
                return run(source_path=path)
        return run()


_SOURCE_KINDS = {"LocalSource": "local", "StorageSource": "storage", "HttpSource": "http", "S3Source": "s3"}


def _unavailable_reason(error: Exception) -> str:
    """What the 503 of a job that failed for now with ``error`` is counted under."""
    if isinstance(error, UnavailableError):
        return metrics.reason_of(error)
    if isinstance(error, TimeLimitError):
        return "time-limit"
    if isinstance(error, MissingLibraryError):
        return "missing-library"
    return "error"


def _outcome(error: BaseException) -> str:
    """How a job that raised ``error`` ended, for its metrics and log line."""
    if isinstance(error, LeaseLostError):
        return "lost"
    if isinstance(error, FileProcError) and not isinstance(error, UnavailableError):
        return "refused"
    return "failed"


@dataclasses.dataclass(slots=True)
class _Flight:
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    users: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    data: bytes
    width: int
    height: int


def produce(
    instructions: Instructions,
    source: LocalSource | StorageSource | HttpSource | S3Source,
    output_format: str,
    config: Config,
    *,
    deadline: float | None = None,
    stats: dict | None = None,
) -> Result:
    """The pipeline itself: engine → operations → encoder, within the config's limits.

    Each stage runs inside one error boundary (:func:`.engines.boundary.failure`):
    whatever a decoder, a step or an encoder raises becomes a refusal naming the format
    and the stage. Every step's size comes from the plan the registrar promised from
    (:meth:`.Instructions.plan`), is checked against the output limits before the step
    runs, and is the size the step must give: a step working on an image decoded at a
    reduced scale lands on exactly the promised size.

    An animated source (the engine's :class:`~.engines.Animation`) made into a format
    that animates (:data:`.formats.ANIMATED_FORMATS`) runs the steps on every frame as it
    is decoded, holding only the result frames; ``gravity=smart`` chooses its crop on the
    first frame and keeps it for all, so the result does not jitter.

    ``deadline`` (a :func:`time.monotonic` time; by default ``max_processing_seconds``
    from now) is checked between stages, and between frames. ``stats`` is given the
    engine, the source's bytes and the seconds of each stage as they end (an
    animation's later frames count as steps), for the job's metrics.
    """
    stats = {} if stats is None else stats
    if deadline is None:
        deadline = time.monotonic() + config.max_processing_seconds
    config.check_page(instructions.page)
    with source.open(config.max_source_bytes) as handle:  # a download's time is in none of the stages
        _measure_source(handle, stats)
        started = time.monotonic()
        decoded = engines.decode(handle, source.reference, instructions, config, deadline=deadline)
        decoding = time.monotonic()
        stats["decode"] = decoding - started
        _check_time(deadline, "decoding", config)
        plan = instructions.plan(*decoded.size)
        config.check_plan(plan)
        steps = _Steps(instructions.operations, decoded.size, plan, source.reference, config, deadline)
        animation = decoded.animation if output_format in ANIMATED_FORMATS else None
        image = steps.run(decoded.image, pin=animation is not None)
        config.check_result_size(image.width, image.height)
        if animation is not None:
            frames, durations = _animate(image, animation, steps, output_format)
    encoding = time.monotonic()
    stats["steps"] = encoding - decoding
    background = instructions.background or WHITE
    with failure(f"the result of {source.reference!r} could not be written as {output_format.upper()}"):
        if animation is not None and len(frames) > 1:
            data = encode_animation(
                frames, durations, animation.plays, output_format, instructions.output, decoded.icc_profile
            )
        else:
            data = encode(image, output_format, instructions.output, decoded.icc_profile, background)
    stats["encode"] = time.monotonic() - encoding
    _check_time(deadline, "encoding", config)
    return Result(data, image.width, image.height)


def _measure_source(handle, stats: dict) -> None:
    """The engine that will decode the source (by its first bytes, as
    :func:`.engines.engine_for` chooses: "other" for a plugin's format or none) and its
    size in bytes, into ``stats``."""
    head = handle.read(formats.HEAD_BYTES)
    handle.seek(0)
    found = formats.sniff(head)
    stats["engine"] = engines.ENGINE_OF.get(found, "other") if found else "other"
    try:
        stats["bytes_in"] = os.fstat(handle.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # a spooled download: where it ends
        stats["bytes_in"] = handle.seek(0, os.SEEK_END)
        handle.seek(0)


@dataclasses.dataclass
class _Steps:
    """The operations of one job, run on its decoded image (and on every later frame of
    an animation) at the sizes of the plan, each inside its error boundary."""

    operations: Sequence[Operation]
    size: tuple[int, int]  # the source's upright size, which the plan starts from
    plan: list[tuple[str, int, int]] | None
    reference: str
    config: Config
    deadline: float
    warned: set[str] = dataclasses.field(default_factory=set)  # plugin steps, once a job

    def run(self, image: Image.Image, *, pin: bool = False) -> Image.Image:
        """``image`` (the source, or a reduced decode of it) through the operations.
        ``pin`` fixes a smart crop where it falls on this image for every image run
        after it: the later frames of an animation are cropped alike."""
        pinned = []
        # Until the first resampling step, the image may be a reduced decode of the source;
        # only steps that do not care about scale come before it (see reduction_target).
        exact = image.size == self.size
        for index, operation in enumerate(self.operations):
            with failure(f"step {operation.word!r} failed on source {self.reference!r}"):
                if pin:
                    operation = _pinned(operation, image)
                    pinned.append(operation)
                image = operation.apply(image)
                exact = exact or isinstance(operation, RESAMPLING)
                planned = self.plan[index + 1][1:] if self.plan else None
                if exact and planned and image.size != planned:
                    # The promised size stands (the <img> and the URL carry it); a plugin
                    # whose apply() and size() disagree hears of it, as docs/plugins.md says.
                    if isinstance(operation, PluginOperation) and operation.word not in self.warned:
                        self.warned.add(operation.word)
                        log.warning(
                            "fileproc_wsgi: the plugin step %r (%s) gave %dx%d where its size() said "
                            "%dx%d, for source %r; resized to %dx%d",
                            operation.word, plugins.identity_of(operation), *image.size, *planned,
                            self.reference, *planned,
                        )  # fmt: skip
                    image = image.resize(planned, Image.Resampling.LANCZOS)
            _check_time(self.deadline, f"step {operation.word!r}", self.config)
        if pin:
            self.operations = tuple(pinned)
        return image


def _pinned(operation: Operation, image: Image.Image) -> Operation:
    """``operation``, a smart crop turned into the focus it chooses on ``image``."""
    if not isinstance(operation, Fill) or operation.focus is not None or operation.gravity != SMART:
        return operation
    left, top, right, bottom = operation.crop_box(*image.size, image=image)
    focus = ((left + right) / 2 / image.width, (top + bottom) / 2 / image.height)
    return dataclasses.replace(operation, gravity="center", focus=focus)


def _animate(
    first: Image.Image, animation: engines.Animation, steps: _Steps, output_format: str
) -> tuple[list[Image.Image], list[int]]:
    """Every frame of an animation through the steps as the engine decodes it, ``first``
    already made: only the result frames are held, as the encoder takes them, and their
    pixels too are held to max_animation_pixels."""
    frames, durations = [animation_frame(first, output_format)], [animation.duration]
    subject = f"the animated result of {steps.reference!r}"
    with failure(f"source {steps.reference!r} is an animation whose frames could not be decoded"):
        for image, duration in animation.frames():
            steps.config.check_animation(subject, len(frames) + 1, *first.size, at_least=True)
            frames.append(animation_frame(steps.run(image), output_format))
            durations.append(duration)
            _check_time(steps.deadline, f"frame {len(frames)}", steps.config)
    return frames, durations


def _check_time(deadline: float, stage: str, config: Config) -> None:
    if time.monotonic() > deadline:
        raise TimeLimitError(
            f"processing took longer than max_processing_seconds={config.max_processing_seconds:g} "
            f"(stopped after {stage})"
        )


def failure_of(job: Job, now: float) -> FileProcError:
    """The error a failed job answers with until it may be retried."""
    if job.retry_at is not None:
        error = UnavailableError(
            job.reason or "processing failed; it will be retried",
            retry_after=max(1, round(job.retry_at - now)),
        )
        return metrics.reason(error, "retry-later")
    return RecordedFailureError(job.reason or "processing failed", job.failure_status or 422)
