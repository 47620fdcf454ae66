"""Jobs in worker processes (fileproc_wsgi.pool): hard time limit, memory limit, crashes.

The hang is a real one, in native code: a PDF page of hundreds of thousands of random
strokes keeps PDFium busy for seconds in one call, which no check between stages can
stop. A worker is found mid-job by the source file it holds open (``/proc/PID/fd``), so
the tests kill real workers without any hook in the code under test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from fileproc_wsgi.config import Config
from fileproc_wsgi.errors import ConfigError
from fileproc_wsgi.middleware import FileProcessor
from fileproc_wsgi.registrar import Registrar
from fileproc_wsgi.samples import scribbled_pdf
from fileproc_wsgi.store import InstructionStore
from support import free_port, halves, http_get, serving, write

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def slow_pdf_bytes() -> bytes:
    return scribbled_pdf(300_000, seed=10)


def holders_of(path: Path) -> list[int]:
    """Processes that have ``path`` open: the worker decoding it, mid-job."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            directory = f"/proc/{pid}/fd"
            if any(os.readlink(f"{directory}/{fd}") == str(path) for fd in os.listdir(directory)):
                found.append(int(pid))
    return found


def wait_for_holder(path: Path, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holders = [pid for pid in holders_of(path) if pid != os.getpid()]
        if holders:
            return holders[0]
        time.sleep(0.02)
    raise AssertionError(f"no process opened {path.name} within {timeout} s")


def stored_files(site) -> list[str]:
    results = site.root / "results"
    return sorted(path.name for path in results.rglob("*") if path.is_file())


class Later:
    """A request answered in a thread, with the time its answer arrived."""

    def __init__(self, function):
        self.answer = self.error = None
        self.finished = 0.0
        self._thread = threading.Thread(target=self._run, args=(function,), daemon=True)
        self._thread.start()

    def _run(self, function):
        try:
            self.answer = function()
        except Exception as error:  # re-raised by result()
            self.error = error
        self.finished = time.monotonic()

    def result(self, timeout: float = 60.0):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the request did not finish"
        if self.error is not None:
            raise self.error
        return self.answer


# --------------------------------------------------------------------------- the time limit


@pytest.mark.integration
def test_a_native_hang_is_killed_at_the_time_limit_while_the_server_answers_others(tmp_path, slow_pdf_bytes):
    media = tmp_path / "media"
    media.mkdir()
    (media / "slow.pdf").write_bytes(slow_pdf_bytes)
    write(media, "photo.png", halves(300, 200))
    settings = {
        "database_url": f"sqlite:///{tmp_path / 'fileproc.db'}",
        "storage": str(tmp_path / "results"),
        "source_roots": {"default": str(media)},
        "max_processing_seconds": 1.5,
    }
    registrar = Registrar(Config(**settings))
    try:
        slow = registrar.register("slow.pdf | format png")
        quick = [registrar.register(f"photo.png | fit {width}x") for width in (100, 101, 102)]
    finally:
        registrar.close()
    environment = {
        **os.environ,
        "FILEPROC_DATABASE_URL": settings["database_url"],
        "FILEPROC_STORAGE": settings["storage"],
        "FILEPROC_SOURCE_ROOTS": f"default={media}",
        "FILEPROC_MAX_PROCESSING_SECONDS": "1.5",
    }
    port = free_port()
    command = [sys.executable, "-m", "fileproc_wsgi.cli", "serve", "--port", str(port), "--threads", "8"]
    with serving(command, port=port, cwd=tmp_path, env=environment) as server:
        # Two jobs at once start two workers, so the requests below find one idle each.
        warm = [Later(lambda url=r.url: http_get(port, url)) for r in quick[:2]]
        assert [later.result()[0] for later in warm] == [301, 301]

        started = time.monotonic()
        hung = Later(lambda: http_get(port, slow.url))
        wait_for_holder(media / "slow.pdf")
        other = http_get(port, quick[2].url)
        answered_meanwhile = time.monotonic()
        status, headers, body = hung.result()

        assert other[0] == 301 and answered_meanwhile < hung.finished
        assert (status, body.decode()) == (
            503,
            "processing took longer than max_processing_seconds=1.5 (the worker was stopped)\n",
        )
        assert headers["Retry-After"] == "30"
        # PDFium alone needs several seconds for this page; the job stopped at its limit.
        assert 1.5 <= hung.finished - started < 3.0
        assert server.poll() is None
        assert http_get(port, quick[0].url)[0] == 301  # and the next request is answered as usual
    assert not any(path.name.startswith(slow.checksum) for path in (tmp_path / "results").rglob("*"))


class _Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_hang_is_retried_with_backoff_then_refused_for_good(site, slow_pdf_bytes):
    (site.media / "slow.pdf").write_bytes(slow_pdf_bytes)
    clock = _Clock()
    store = InstructionStore(site.config.database_url, clock=clock)
    app = FileProcessor(None, dataclasses.replace(site.config, max_processing_seconds=0.5), store=store)
    representation = site.registrar.register("slow.pdf")
    message = "processing took longer than max_processing_seconds=0.5 (the worker was stopped)\n"
    try:
        answers = []
        for _ in range(4):
            started = time.monotonic()
            response = _get(app, representation.url)
            answers.append((response.status_int, response.headers.get("Retry-After"), response.text))
            assert time.monotonic() - started < 2.5  # never the whole render
            clock.now = store.get(representation.checksum).retry_at or clock.now
        assert answers == [
            (503, "30", message),
            (503, "60", message),
            (422, None, message),
            (422, None, message),
        ]
        job = store.get(representation.checksum)
        assert (job.state, job.attempts, job.failure_status) == ("failed", 3, 422)
        assert stored_files(site) == []
    finally:
        store.dispose()


def _get(app, path: str):
    from webob import Request

    response = Request.blank(path).get_response(app)
    response.body  # noqa: B018 - read it all, as a server would
    return response


# --------------------------------------------------------------------------- crashes


@pytest.mark.parametrize(
    ("sent", "status", "reason"),
    [
        pytest.param(
            signal.SIGSEGV, 422, "a library crashed while processing this source (SIGSEGV)\n", id="segfault"
        ),
        pytest.param(
            signal.SIGABRT, 422, "a library crashed while processing this source (SIGABRT)\n", id="abort"
        ),
        pytest.param(
            signal.SIGKILL,
            503,
            "the worker process making this result was killed (SIGKILL); it will be tried again\n",
            id="killed",
        ),
    ],
)
def test_a_worker_dying_mid_job_costs_that_job_only(make_site, slow_pdf_bytes, sent, status, reason):
    site = make_site(max_processing_seconds=20)
    (site.media / "slow.pdf").write_bytes(slow_pdf_bytes)
    write(site.media, "photo.png", halves(300, 200))
    representation = site.registrar.register("slow.pdf")
    dying = Later(lambda: site.get(representation.url))
    worker = wait_for_holder(site.media / "slow.pdf")
    os.kill(worker, sent)
    response = dying.result()

    assert (response.status_int, response.text) == (status, reason)
    job = site.store.get(representation.checksum)
    # A crash is the source's doing and is not tried again; a kill is not, and is.
    assert (job.state, job.failure_status, job.retry_at is None) == ("failed", status, status == 422)
    assert stored_files(site) == []
    _, image = site.make("photo.png | fit 60x")  # the next request is answered as usual
    assert image.size == (60, 40)


# --------------------------------------------------------------------------- memory


def test_a_job_over_max_job_memory_is_refused_and_the_default_passes_it(make_site):
    site = make_site()
    # 49 megapixels of PNG: a worker's libraries and the 147 MB decoded image need about
    # 600 MB of address space (measured), more than the 512 MiB allowed here.
    Image.new("RGB", (7000, 7000), (200, 30, 30)).save(site.media / "big.png", compress_level=1)
    text = "big.png | fit 100x"
    tight = FileProcessor(
        None, dataclasses.replace(site.config, max_job_memory=512 * 1024 * 1024), store=site.store
    )

    refused = _get(tight, site.registrar.register(text).url)

    assert refused.status_int == 422
    assert "more memory than this server gives one job (max_job_memory)" in refused.text
    site.store.reset([site.registrar.register(text).checksum])
    _, image = site.make(text)  # the default (2 GiB) has room for it
    assert image.size == (100, 100)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param(
            {"max_job_memory": 100 * 1024 * 1024}, "max_job_memory: expected bytes, at least", id="tiny"
        ),
        pytest.param({"max_job_memory": True}, "max_job_memory: expected bytes", id="bool-memory"),
        pytest.param(
            {"worker_max_jobs": 0}, "worker_max_jobs: expected a positive whole number", id="no-jobs"
        ),
        pytest.param({"isolate_jobs": "yes"}, "isolate_jobs: expected True or False", id="not-a-bool"),
    ],
)
def test_pool_settings_are_checked(settings, message):
    with pytest.raises(ConfigError) as refused:
        Config(**settings)
    assert message in str(refused.value)


def test_pool_settings_come_from_the_environment():
    config = Config.from_env(
        {
            "FILEPROC_ISOLATE_JOBS": "false",
            "FILEPROC_MAX_JOB_MEMORY": "1073741824",
            "FILEPROC_WORKER_MAX_JOBS": "7",
        }
    )
    assert (config.isolate_jobs, config.max_job_memory, config.worker_max_jobs) == (False, 1 << 30, 7)


# --------------------------------------------------------------------------- workers' lives

# The pids of the script's own job workers, for the scripts below.
_WORKERS = """
def workers():
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                parent = int(stat.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{pid}/cmdline") as cmdline:
                if parent == os.getpid() and "fileproc_wsgi.worker" in cmdline.read():
                    found.add(int(pid))
        except OSError:
            pass
    return found
"""

_SCRIPT = """
import os, sys
from PIL import Image
from webob import Request
from fileproc_wsgi.config import Config
from fileproc_wsgi.middleware import FileProcessor
from fileproc_wsgi.registrar import Registrar

directory = sys.argv[1]
config = Config(source_roots={"default": directory}, database_url=f"sqlite:///{directory}/db.sqlite",
                storage=directory + "/results", worker_max_jobs=int(sys.argv[2]),
                background_jobs=0)  # no page's jobs in the background: no workers started ahead
Image.new("RGB", (60, 40), "red").save(directory + "/a.png")
registrar = Registrar(config)
app = FileProcessor(None, config, store=registrar.store)
{workers}seen = []
for width in range(10, 10 + int(sys.argv[3])):
    response = Request.blank(registrar.register(f"a.png | fit {width}x").url).get_response(app)
    assert response.status_int == 301, response.text
    seen.append(sorted(workers()))
print(seen, flush=True)
""".replace("{workers}", _WORKERS)


def _workers_seen(tmp_path, max_jobs: int, jobs: int) -> tuple[list, set[int]]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path), str(max_jobs), str(jobs)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    seen = eval(done.stdout)  # noqa: S307 - a list of lists of numbers this test printed
    return seen, {pid for pids in seen for pid in pids}


def test_a_worker_is_reused_until_worker_max_jobs_and_none_outlives_its_web_process(tmp_path):
    seen, pids = _workers_seen(tmp_path, max_jobs=3, jobs=6)
    # Jobs 1-3 in one worker; its replacement starts as it leaves, before job 4 asks.
    a, b, c = seen[0][0], seen[2][0], seen[5][0]
    assert seen == [[a], [a], [b], [b], [b], [c]] and len({a, b, c}) == 3
    time.sleep(0.2)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)  # stopped at interpreter exit


_PAGE_SCRIPT = """
import os, sys, threading, time
from PIL import Image
from webob import Request
from fileproc_wsgi.config import Config
from fileproc_wsgi.middleware import FileProcessor
from fileproc_wsgi.pool import usable_cores
from fileproc_wsgi.registrar import Registrar

directory, background = sys.argv[1], int(sys.argv[2])
config = Config(source_roots={"default": directory}, database_url=f"sqlite:///{directory}/db.sqlite",
                storage=directory + "/results", background_jobs=background)
Image.effect_noise((1200, 900), 60).convert("RGB").save(directory + "/a.png")
registrar = Registrar(config)
app = FileProcessor(None, config, store=registrar.store)
{workers}before = workers()
urls = [registrar.register(f"a.png | fit {width}x | format jpeg").url for width in range(10, 18)]
most, statuses = 0, []
def ask(url):
    statuses.append(Request.blank(url).get_response(app).status_int)
threads = [threading.Thread(target=ask, args=(url,)) for url in urls]
for thread in threads:
    thread.start()
while any(thread.is_alive() for thread in threads):
    most = max(most, len(workers()))
    time.sleep(0.005)
print(repr((len(before), most, sorted(statuses), usable_cores())), flush=True)
""".replace("{workers}", _WORKERS)


def _page_of_new_jobs(tmp_path, background: int) -> tuple[int, int, list[int], int]:
    done = subprocess.run(
        [sys.executable, "-c", _PAGE_SCRIPT, str(tmp_path), str(background)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return eval(done.stdout)  # noqa: S307 - a tuple of numbers this test printed


def test_a_page_of_new_jobs_runs_one_per_core_and_starts_no_more_workers(tmp_path):
    # Eight browser requests at once for eight new results: each is made (no 503), one per
    # core at a time; the others wait for a turn instead of starting more workers.
    before, most, statuses, cores = _page_of_new_jobs(tmp_path, background=0)
    assert statuses == [301] * 8
    assert before == 0, "background_jobs=0: no worker is started ahead"
    assert most <= cores, f"{most} workers alive at once on {cores} cores"


def test_a_server_starts_its_workers_before_its_first_page(tmp_path):
    before, most, statuses, _ = _page_of_new_jobs(tmp_path, background=2)
    assert before == 2, "a worker per background thread starts with the server, not with the first job"
    assert statuses == [301] * 8
    assert most <= 2


def test_a_request_waiting_for_a_turn_goes_before_the_background():
    from fileproc_wsgi.pool import JobTurns

    turns = JobTurns(1)
    assert turns.acquire(1.0)
    order = []

    def take(name: str, background: bool) -> None:
        assert turns.acquire(10.0, background=background)
        order.append(name)
        turns.release()

    queued = threading.Thread(target=take, args=("made ahead", True))
    queued.start()
    time.sleep(0.1)  # the background waits first
    asked = threading.Thread(target=take, args=("asked for", False))
    asked.start()
    time.sleep(0.1)
    turns.release()
    queued.join(10)
    asked.join(10)
    assert order == ["asked for", "made ahead"]


def test_a_job_that_finds_no_free_core_within_wait_timeout_is_a_503_then_made(make_site):
    from fileproc_wsgi.pool import job_turns, usable_cores

    site = make_site(wait_timeout=0.3, background_jobs=0)
    write(site.media, "photo.png", halves(80, 40))
    url = site.registrar.register("photo.png | fit 20x").url
    turns = job_turns()
    taken = [turns.acquire(1.0) for _ in range(usable_cores())]  # other jobs hold every core
    try:
        assert all(taken)
        busy = site.get(url)
        assert busy.status_int == 503 and busy.headers["Retry-After"]
        assert "cores are busy making other results" in busy.text
    finally:
        for _ in taken:
            turns.release()
    assert site.get(url).status_int == 301, "made once a core is free"
