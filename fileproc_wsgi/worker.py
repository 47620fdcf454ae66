"""The worker side of :mod:`.pool`: what runs inside a worker process.

A worker is a fresh interpreter started by :class:`.pool.WorkerPool` as ``python -c`` with
:func:`serve`, one end of a socket pair its only line to the web process. It loads the
engines' native libraries before saying it is ready, then takes one request at a time
(make a result through :func:`.processing.produce`, or read a header with
:func:`.engines.probe`) under the job's address-space limit, and answers with bytes or a
:func:`.errors.describe` dict, never a pickled exception. Everything that decides what a
job may take, and what a worker's death means, stays in the web process (:mod:`.pool`);
this module is the pipeline's side only, so the pool that hands jobs out never imports
the pipeline it hands them to.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import os
import pickle
import resource
import signal
import time
import traceback
from multiprocessing.connection import Connection

from . import engines
from .config import Config
from .errors import FileProcError, LimitError, describe
from .instructions import parse
from .pool import IDLE_SECONDS
from .processing import produce
from .sources import LocalSource, Sources

# A worker holding more than this after a job (fragmented heap, a library's caches) is
# replaced rather than kept: max_concurrent_jobs of them would otherwise each keep the
# peak of the largest job they ever ran. A fresh worker holds about 60 MiB.
RSS_CEILING = 512 * 1024 * 1024
_CONFIGS_KEPT = 8  # configurations a worker keeps parsed (a test suite makes hundreds)


def serve(fd: int) -> None:
    """A worker's life: take jobs from the web process on ``fd`` until it leaves, this
    worker has made its share, or it has been idle for :data:`.pool.IDLE_SECONDS`."""
    # Every engine's libraries now, before "ready": the web process never loads them,
    # and in a job their import time and address space would count against its limits.
    engines.load_libraries()
    faulthandler.enable()  # a crashing library leaves the Python stack in the log
    # The parent's deadline is the limit; a SIGINT meant for it must not stop a job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    connection = Connection(fd)
    unlimited = resource.getrlimit(resource.RLIMIT_AS)
    try:
        connection.send_bytes(pickle.dumps(("ready", None, False, None)))
    except OSError:
        return
    configs: dict[bytes, tuple[Config, Sources]] = {}
    made = 0
    while True:
        try:
            if not connection.poll(IDLE_SECONDS):
                connection.send_bytes(pickle.dumps(("retired", None, True, None)))
                return
            kind, blob, text, output_format, source_path, seconds, memory, max_jobs = pickle.loads(
                connection.recv_bytes()
            )
        except (EOFError, OSError):  # the web process has gone or closed the pool
            return
        deadline = time.monotonic() + seconds
        stats: dict = {}
        reply: tuple  # (kind, payload, retiring, stats)
        made += 1
        retiring = made >= max_jobs
        hard = unlimited[1]
        resource.setrlimit(
            resource.RLIMIT_AS, (memory if hard == resource.RLIM_INFINITY else min(memory, hard), hard)
        )
        try:
            if blob not in configs:
                values = pickle.loads(blob)
                config = Config(**values)
                configs[blob] = (config, Sources.for_config(config))
                while len(configs) > _CONFIGS_KEPT:
                    del configs[next(iter(configs))]
            config, sources = configs[blob]
            instructions = parse(text)
            # A file the web process found or spooled: storage backends live only there.
            source = (
                sources.resolve(instructions.source)
                if source_path is None
                else LocalSource(instructions.source, source_path)
            )
            if kind == "probe":
                with source.open(config.max_source_bytes) as handle:
                    info = engines.probe(handle, source.reference, instructions, config, whole_text=False)
                reply = ("done", dataclasses.astuple(info), retiring, None)
            else:
                result = produce(instructions, source, output_format, config, deadline=deadline, stats=stats)
                reply = ("done", (result.data, result.width, result.height), retiring, stats)
        except FileProcError as error:
            reply = ("refused", describe(error), retiring, stats)
        except MemoryError:
            reply = (
                "refused",
                describe(LimitError(f"this job needs more memory than max_job_memory={memory} bytes allows")),
                True,  # a heap that ran dry may be left in a state best not reused
                stats,
            )
        except Exception:
            reply = ("bug", traceback.format_exc(), retiring, stats)
        finally:
            resource.setrlimit(resource.RLIMIT_AS, unlimited)
        if _resident_bytes() > RSS_CEILING:
            reply = (reply[0], reply[1], True, reply[3])
        try:
            connection.send_bytes(pickle.dumps(reply))
        except OSError:  # the web process left mid-job
            return
        if reply[2]:
            return


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
