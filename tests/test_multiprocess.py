"""Exactly-once processing across real server processes (issue 5, item 6).

Two gunicorn servers, each a pre-forking arbiter with threaded workers bound to
127.0.0.1, share one PostgreSQL database and one results directory, as two hosts behind
a load balancer would. Only the store's claim can keep them from doing the same work
twice: the in-process lock of one worker knows nothing of the others. What was processed
is counted from the store (``attempts`` counts claims, ``token`` is the fencing token),
never from logs. Besides the herd and a worker killed with SIGKILL mid-job, a worker
stopped with SIGSTOP past its lease shows that its late verdict cannot land over the
worker that took over. Each test has a database of its own on the session's PostgreSQL;
the servers' logs are printed when a test fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.client
import io
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from fileproc_wsgi.config import Config
from fileproc_wsgi.registrar import Registrar
from support import Gunicorn, gunicorn, http_get

SIZE = (6000, 4000)
PREDICTED = (400, 267)
# Blurring before fitting defeats JPEG draft decoding: about 1.5 s of work on the
# 24-megapixel source, long enough for the whole herd to arrive while it runs and for a
# worker to be caught in the middle of it.
TEXT = "big.jpg | blur 4 | fit 400x300 | format jpeg"
HERD = 50
# Short, to keep the tests that wait for a lease to expire short; a job may take at most
# MAX_PROCESSING seconds, which must be less than the lease (Config refuses otherwise).
LEASE = 6.0
MAX_PROCESSING = 5.0

# A fresh PostgreSQL database per test (conftest's ``database_url``), never SQLite.
pytestmark = [pytest.mark.integration, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """A source root holding one 24-megapixel JPEG with some texture to decode."""
    directory = tmp_path_factory.mktemp("media")
    noise = Image.effect_noise(SIZE, 60)
    gradient = Image.linear_gradient("L").resize(SIZE)
    Image.merge("RGB", (noise, gradient, noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT))).save(
        directory / "big.jpg", quality=90
    )
    return directory


@dataclasses.dataclass
class Cluster:
    """Two servers and what the test process needs to talk to the same installation."""

    servers: list[Gunicorn]
    registrar: Registrar
    results: Path

    @property
    def store(self):
        return self.registrar.store

    def result_files(self) -> list[Path]:
        """Every file under the results directory, temporary ones included."""
        return sorted(path for path in self.results.rglob("*") if path.is_file())


@pytest.fixture
def cluster(database_url, media, tmp_path) -> Iterator[Cluster]:
    """Servers A and B on one database and one results directory; the test registers through ``registrar``."""
    results = tmp_path / "results"
    settings = {
        "FILEPROC_DATABASE_URL": database_url,
        "FILEPROC_SOURCE_ROOTS": f"default={media}",
        "FILEPROC_STORAGE": str(results),
        "FILEPROC_WAIT_TIMEOUT": "60",
        "FILEPROC_LEASE_SECONDS": str(LEASE),
        "FILEPROC_MAX_PROCESSING_SECONDS": str(MAX_PROCESSING),
    }
    env = {key: value for key, value in os.environ.items() if not key.startswith("FILEPROC_")}
    env.update(settings)
    registrar = Registrar(Config.from_env(settings))
    registrar.store.create_tables()  # before the servers, so no two processes race to create it
    with contextlib.ExitStack() as stack:
        stack.callback(registrar.store.dispose)
        # 2 servers x 2 workers x 16 threads: the whole herd is in flight at once; a worker
        # stopped with SIGSTOP must not be recycled by the arbiter meanwhile (timeout 60).
        servers = [
            stack.enter_context(gunicorn(name, env=env, logs=tmp_path, threads=16, timeout=60))
            for name in ("A", "B")
        ]
        yield Cluster(servers, registrar, results)


def showing_server_logs(test):
    """Print the servers' logs when ``test`` fails: pytest shows a failed test's output."""

    @functools.wraps(test)
    def run(cluster: Cluster) -> None:
        try:
            test(cluster)
        except BaseException:
            for server in cluster.servers:
                print(f"---- gunicorn {server.name} log ----\n{server.log.read_text(errors='replace')}")
            raise

    return run


@dataclasses.dataclass
class Answer:
    status: int | None = None
    location: str | None = None
    sent_at: float | None = None  # store clock (unix seconds), when the request had been written
    error: BaseException | None = None


def ask(port: int, path: str, answer: Answer, timeout: float = 90) -> Answer:
    """One GET; failures are kept in ``answer`` for the test to assert on, not raised in a thread."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        answer.sent_at = time.time()
        response = connection.getresponse()
        response.read()
        answer.status, answer.location = response.status, response.getheader("Location")
    except Exception as error:
        answer.error = error
    finally:
        connection.close()
    return answer


def in_thread(port: int, path: str) -> tuple[threading.Thread, Answer]:
    answer = Answer()
    thread = threading.Thread(target=ask, args=(port, path, answer), daemon=True)
    thread.start()
    return thread, answer


def wait_for_state(cluster: Cluster, checksum: str, state: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        job = cluster.store.get(checksum)
        if job.state == state or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def assert_lease_held(cluster: Cluster, job) -> None:
    """Watch ``job``'s row until its lease runs out: until then no one else may claim it."""
    seen = 0
    while cluster.store.now() < job.lease_until - 0.1:
        current = cluster.store.get(job.checksum)
        if cluster.store.now() < job.lease_until:  # so the row was read while the lease still held
            assert current.token == job.token, "the job was claimed again before its lease expired"
            seen += 1
        time.sleep(0.05)
    assert seen, "the test process was too slow to look at the row while the lease held"


def assert_one_result(cluster: Cluster, job) -> None:
    """The result is the only file in the results directory, whole, at the predicted size."""
    path = cluster.results / job.result_key
    assert cluster.result_files() == [path], "a temporary or second file was left in the results directory"
    assert path.stat().st_size == job.result_bytes
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        image.load()
        assert (image.format, image.size) == ("JPEG", PREDICTED)


@showing_server_logs
def test_a_herd_on_two_servers_is_processed_once(cluster):
    representation = cluster.registrar.register(TEXT)
    assert (representation.width, representation.height) == PREDICTED
    ports = [server.port for server in cluster.servers]
    answers = [Answer() for _ in range(HERD)]
    start = threading.Barrier(HERD)

    def first_request(index: int) -> None:
        try:
            start.wait(timeout=30)
        except threading.BrokenBarrierError as error:
            answers[index].error = error
            return
        ask(ports[index % len(ports)], representation.url, answers[index])

    threads = [threading.Thread(target=first_request, args=(i,), daemon=True) for i in range(HERD)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 100
    for thread in threads:
        thread.join(timeout=max(0.1, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "requests still unanswered after 100 s"

    assert [answer.error for answer in answers if answer.error] == []
    assert {answer.status for answer in answers} == {301}
    locations = {answer.location for answer in answers}
    assert len(locations) == 1 and None not in locations
    job = cluster.store.get(representation.checksum)
    assert (job.state, job.attempts, job.token) == ("done", 1, 1)
    assert locations == {cluster.registrar.config.public_url + job.result_key}
    # Every request was on the wire before the result existed: a real herd, not a queue.
    assert max(answer.sent_at for answer in answers) < job.completed_at
    assert_one_result(cluster, job)


@showing_server_logs
def test_a_worker_killed_mid_job_is_recovered_by_the_other_server(cluster):
    a, b = cluster.servers
    representation = cluster.registrar.register(TEXT)
    checksum = representation.checksum
    thread, first = in_thread(a.port, representation.url)
    job = wait_for_state(cluster, checksum, "working")
    assert (job.state, job.attempts, job.token) == ("working", 1, 1)
    for pid in a.workers():
        os.kill(pid, signal.SIGKILL)
    assert cluster.store.get(checksum).state == "working", "the job finished first: make TEXT slower"
    thread.join(timeout=30)
    assert first.status is None and first.error is not None, "the killed worker answered"

    # Server B, asked while the dead worker's lease still runs, waits for it to expire
    # and then does the job itself.
    waiter, recovered = in_thread(b.port, representation.url)
    assert_lease_held(cluster, job)
    waiter.join(timeout=60)
    assert (recovered.error, recovered.status) == (None, 301)
    job = cluster.store.get(checksum)
    assert (job.state, job.attempts, job.token) == ("done", 2, 2)
    assert recovered.location == cluster.registrar.config.public_url + job.result_key
    assert_one_result(cluster, job)
    # Server A's respawned workers find the result done and send the same redirect.
    status, headers, _ = http_get(a.port, representation.url)
    assert (status, headers["Location"]) == (301, recovered.location)
    assert cluster.store.get(checksum).attempts == 2


@showing_server_logs
def test_a_stalled_worker_cannot_complete_over_the_worker_that_took_over(cluster):
    """SIGSTOP instead of SIGKILL: the first worker wakes up after its lease expired and
    another server finished the job; its late verdict must not land (fencing token)."""
    a, b = cluster.servers
    representation = cluster.registrar.register(TEXT)
    checksum = representation.checksum
    thread, late = in_thread(a.port, representation.url)
    job = wait_for_state(cluster, checksum, "working")
    workers = a.workers()
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        assert cluster.store.get(checksum).state == "working", "the job finished first: make TEXT slower"
        waiter, recovered = in_thread(b.port, representation.url)
        assert_lease_held(cluster, job)
        waiter.join(timeout=60)
        assert (recovered.error, recovered.status) == (None, 301)
        taken_over = cluster.store.get(checksum)
        assert (taken_over.state, taken_over.attempts, taken_over.token) == ("done", 2, 2)
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    thread.join(timeout=60)
    assert not thread.is_alive()
    # The stalled worker finished its work, lost the fenced write, and answered with the
    # result the other server recorded.
    assert (late.error, late.status, late.location) == (None, 301, recovered.location)
    job = cluster.store.get(checksum)
    assert (job.state, job.attempts, job.token) == ("done", 2, 2)
    assert job.completed_at == taken_over.completed_at
    assert f"lease on {checksum} expired while processing" in a.log.read_text(errors="replace")
    assert_one_result(cluster, job)
