"""Metrics, job logs and traces: what an operator watches, owned by this one module.

The rest of the package calls the small functions here (:func:`job_finished`,
:func:`waited`, :func:`unavailable`, :func:`registered` ...); each is a no-op until
:func:`enable` has found ``prometheus_client``, which the middleware calls when
``metrics_path`` is set or ``PROMETHEUS_MULTIPROC_DIR`` is (a gunicorn server scraped
through :data:`application` on a port of its own). Under gunicorn, set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the server starts, and
:func:`child_exit` as its ``child_exit`` hook: every worker process then writes its
figures there and a scrape, in whichever process, reads them all.

The warm paths (a remembered registration, a remembered redirect) never call
``prometheus_client``: they add one to a plain int on their own object, and
:func:`publish` hands the difference over once a second from the access flusher's thread
(:mod:`fileproc_wsgi.access`) and before every scrape, with the gauges of the worker pool
and the background queues.

One JSON line per job goes to the logger ``fileproc_wsgi.jobs`` (at INFO) whether or not
metrics are on: checksum, source kind, engine, milliseconds per stage, bytes in and out,
outcome and attempt. With ``opentelemetry-api`` importable, :func:`span` opens a span
around each job and each cold registration; without it, it does nothing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeVar

log = logging.getLogger(__name__)
job_log = logging.getLogger("fileproc_wsgi.jobs")

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Seconds per stage: a thumbnail's decode takes milliseconds, a document's tens of seconds.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STAGES = ("decode", "steps", "encode", "store", "total")

_Error = TypeVar("_Error", bound=Exception)

_lock = threading.Lock()
_metrics: _Metrics | None = None
_missing = False  # prometheus_client was looked for and is not installed
# Owners of plain-int counts (the warm paths): owner -> {attribute: value already handed over}.
_hot: weakref.WeakKeyDictionary[Any, dict[str, int]] = weakref.WeakKeyDictionary()
_queues: weakref.WeakSet[Any] = weakref.WeakSet()  # BackgroundJobs, for their length
# () -> (idle workers, busy workers, job turns in use): pool.state, given by the middleware
# (the pool's workers import the processing layer, which imports this module).
_pool_state: list[Callable[[], tuple[int, int, int]]] = []
_publishing = threading.Lock()


class _Metrics:
    """Every metric, made once per process by :func:`enable`."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.jobs = Counter(
            "fileproc_jobs", "Jobs by outcome (made, refused, failed, lost)", ["outcome", "engine"]
        )
        self.seconds = Histogram(
            "fileproc_job_seconds", "Seconds of a job's stages", ["engine", "stage"], buckets=_BUCKETS
        )
        self.bytes_read = Counter("fileproc_source_bytes", "Bytes of sources read by jobs")
        self.bytes_written = Counter("fileproc_result_bytes", "Bytes of results written by jobs")
        self.waits = Counter(
            "fileproc_waits", "Requests that waited for another worker's job, by how it ended", ["outcome"]
        )
        self.unavailable = Counter("fileproc_unavailable", "503 answers, by reason", ["reason"])
        self.registrations = Counter(
            "fileproc_registrations", "Registrations: cold (worked out) or warm (remembered)", ["kind"]
        )
        self.redirect_hits = Counter(
            "fileproc_redirect_cache_hits", "Redirects answered from the in-process cache"
        )
        live: Final = "livesum"  # under gunicorn: the sum over the processes alive (see child_exit)
        self.workers = Gauge("fileproc_workers", "Worker processes", ["state"], multiprocess_mode=live)
        self.turns = Gauge(
            "fileproc_job_turns_in_use", "Job turns (one per core) held", multiprocess_mode=live
        )
        self.queue = Gauge(
            "fileproc_background_queue", "Jobs queued to be made ahead", multiprocess_mode=live
        )
        # The warm paths' plain ints, by the attribute their owners keep them in.
        self.hot = {"warm_hits": self.redirect_hits, "warm_registrations": self.registrations.labels("warm")}


def enable() -> bool:
    """Record metrics in this process from now on; False when ``prometheus_client`` is
    not installed (then every function here stays a no-op)."""
    global _metrics, _missing
    with _lock:
        if _metrics is None:
            if _missing:
                return False
            try:
                _metrics = _Metrics()
            except ImportError:
                _missing = True  # said once per process, not at every scrape
                log.warning("fileproc_wsgi: metrics are off: pip install 'fileproc-wsgi[metrics]'")
                return False
    from .access import FLUSHER

    FLUSHER.every_tick(publish)
    return True


def enabled() -> bool:
    return _metrics is not None


def wanted(config) -> bool:
    """Whether a server with ``config`` records metrics: it serves them itself, or a
    gunicorn server's processes share them through a directory."""
    return bool(config.metrics_path or os.environ.get(MULTIPROCESS_VARIABLE))


# --------------------------------------------------------------------------- recording


def hand_over(owner: Any, *attributes: str) -> None:
    """Count ``owner``'s plain ints ``attributes`` (see :data:`_Metrics.hot`) from now on:
    :func:`publish` adds what they grew by since it last looked."""
    with _publishing:
        _hot[owner] = {attribute: getattr(owner, attribute, 0) for attribute in attributes}


def watch_queue(queue: Any) -> None:
    """Report ``queue.waiting()`` in the background queue gauge."""
    _queues.add(queue)


def watch_pool(state: Callable[[], tuple[int, int, int]]) -> None:
    """Report ``state()`` (idle workers, busy workers, job turns in use) in the gauges."""
    _pool_state[:] = [state]


def publish() -> None:
    """Hand the warm paths' counts and this process's gauges over to prometheus_client;
    run once a second by the access flusher and before a scrape."""
    metrics = _metrics
    if metrics is None:
        return
    with _publishing:
        for owner, seen in list(_hot.items()):
            for attribute, before in seen.items():
                now = getattr(owner, attribute, before)
                if now > before:
                    metrics.hot[attribute].inc(now - before)
                seen[attribute] = now
        if _pool_state:
            idle, busy, turns = _pool_state[0]()
            metrics.workers.labels("idle").set(idle)
            metrics.workers.labels("busy").set(busy)
            metrics.turns.set(turns)
        metrics.queue.set(sum(queue.waiting() for queue in list(_queues)))


def registered(cold: int) -> None:
    if _metrics is not None and cold:
        _metrics.registrations.labels("cold").inc(cold)


def waited(outcome: str) -> None:
    """A request waited for a job another thread or process was making, which ended
    ``outcome``: made, refused, failed or timeout."""
    if _metrics is not None:
        _metrics.waits.labels(outcome).inc()


def reason(error: _Error, label: str) -> _Error:
    """``error``, marked with the reason its 503 is counted under."""
    vars(error)["unavailable_reason"] = label  # read back by reason_of
    return error


def unavailable(error: Exception) -> None:
    """Count a 503 answer by its reason."""
    if _metrics is not None:
        _metrics.unavailable.labels(reason_of(error)).inc()


def reason_of(error: Exception) -> str:
    """The reason a 503 is counted under: marked where it was raised (busy, overloaded,
    cores, retry-later ...), else told by the backend named in its message."""
    label = getattr(error, "unavailable_reason", None)
    if label:
        return label
    message = str(error)
    for prefix, label in (
        ("database", "database"),
        ("result storage", "storage"),
        ("source", "source"),
        ("registrar", "registrar"),
        ("this server is shutting down", "shutdown"),
    ):
        if message.startswith(prefix):
            return label
    if "worker" in message:
        return "worker"
    return "other"


def job_finished(
    checksum: str, stats: dict[str, Any], outcome: str, *, attempt: int, reason: str = ""
) -> None:
    """One job has ended in this process: its metrics, and its line on ``fileproc_wsgi.jobs``.

    ``stats`` holds what the job measured: ``source`` (kind), ``engine``, seconds per
    stage under the names of :data:`STAGES`, ``bytes_in`` and ``bytes_out``."""
    engine = stats.get("engine") or "unknown"
    metrics = _metrics
    if metrics is not None:
        metrics.jobs.labels(outcome, engine).inc()
        for stage in STAGES:
            seconds = stats.get(stage)
            if seconds is not None:
                metrics.seconds.labels(engine, stage).observe(seconds)
        if stats.get("bytes_in"):
            metrics.bytes_read.inc(stats["bytes_in"])
        if outcome == "made" and stats.get("bytes_out"):
            metrics.bytes_written.inc(stats["bytes_out"])
    if job_log.isEnabledFor(logging.INFO):
        line = {
            "checksum": checksum,
            "source": stats.get("source", ""),
            "engine": engine,
            "ms": {stage: round(stats[stage] * 1000, 1) for stage in STAGES if stats.get(stage) is not None},
            "bytes_in": stats.get("bytes_in"),
            "bytes_out": stats.get("bytes_out") if outcome == "made" else None,
            "outcome": outcome,
            "attempt": attempt,
        }
        if reason:
            line["reason"] = reason
        job_log.info(json.dumps(line, separators=(",", ":")))


# --------------------------------------------------------------------------- traces


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """An OpenTelemetry span around the block when ``opentelemetry-api`` is importable
    (what it records then depends on the SDK the application configured), else nothing."""
    tracer = _tracer()
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span(name, attributes=attributes):
        yield


_tracer_found: list = []


def _tracer():
    if not _tracer_found:
        try:
            from opentelemetry.trace import get_tracer
        except ImportError:
            _tracer_found.append(None)
        else:
            _tracer_found.append(get_tracer("fileproc_wsgi"))
    return _tracer_found[0]


# --------------------------------------------------------------------------- exposition


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format and its content type: this process's,
    or every process's when they share ``PROMETHEUS_MULTIPROC_DIR``."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    publish()
    if os.environ.get(MULTIPROCESS_VARIABLE):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def allowed(address: str, networks: Iterable[str]) -> bool:
    """Whether a client at ``address`` (REMOTE_ADDR) is in one of ``networks``
    (``Config.metrics_allowed``)."""
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    if client.version == 6 and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    return any(client in ipaddress.ip_network(network) for network in networks)


def metrics_app(environ, start_response):
    """A WSGI application answering every GET with the metrics; serve it on a port of its
    own that only the scraper reaches (it checks no client address)."""
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0")])
        return [b""]
    if not enable():
        body = b"metrics are off: prometheus_client is not installed\n"
        start_response("503 Service Unavailable", _text_headers(body))
        return [body]
    body, content_type = exposition()
    start_response(
        "200 OK",
        [("Content-Type", content_type), ("Cache-Control", "no-store"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _text_headers(body: bytes) -> list[tuple[str, str]]:
    return [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Cache-Control", "no-store"),
        ("Content-Length", str(len(body))),
    ]


def child_exit(server, worker) -> None:
    """gunicorn's ``child_exit`` hook (``child_exit = fileproc_wsgi.metrics.child_exit``
    in its config file): a worker that has left no longer counts in the gauges."""
    if os.environ.get(MULTIPROCESS_VARIABLE):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


# ``fileproc_wsgi.metrics:application``, for a server of its own (it enables recording on
# its first request; a process that also makes jobs enables it when its middleware starts).
application = metrics_app
