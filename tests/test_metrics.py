"""Metrics, health and the job log (fileproc_wsgi.metrics), against real gunicorn servers.

A gunicorn server with two worker processes sharing a PROMETHEUS_MULTIPROC_DIR makes a
result, refuses one, fails one for now and serves a herd waiting on one job (its source
held back by a tiny origin server until the whole herd has asked); the metrics scraped
over HTTP from 127.0.0.1 count exactly those. Health answers 503 while a PostgreSQL
server of this module's own is stopped.
"""

from __future__ import annotations

import dataclasses
import http.server
import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from webob import Request

from fileproc_wsgi import metrics
from fileproc_wsgi.config import Config
from fileproc_wsgi.middleware import FileProcessor
from fileproc_wsgi.registrar import Registrar
from support import free_port, gunicorn_command, halves, http_get, serving, write

ROOT = Path(__file__).resolve().parent.parent
HERD = 6


def _jpeg(width: int = 320, height: int = 240) -> bytes:
    buffer = io.BytesIO()
    halves(width, height).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class _Origin:
    """An http(s) source server: ``/slow.jpg`` waits while ``gate`` is closed, ``/flaky.jpg``
    answers 503 while ``down`` is set."""

    def __init__(self, body: bytes):
        origin = self
        self.body = body
        self.gate = threading.Event()
        self.gate.set()
        self.down = False
        self.slow_requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                if self.path == "/slow.jpg":
                    origin.slow_requests += 1
                    origin.gate.wait(60)
                if self.path == "/flaky.jpg" and origin.down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(origin.body)))
                self.end_headers()
                self.wfile.write(origin.body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@dataclasses.dataclass
class _Server:
    port: int
    registrar: Registrar
    media: Path
    origin: _Origin
    multiproc: Path


def _environment(settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FILEPROC_", "PROMETHEUS_"))}
    env.update(settings)
    return env


@pytest.fixture
def server(tmp_path) -> Iterator[_Server]:
    media = tmp_path / "media"
    media.mkdir()
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    origin = _Origin(_jpeg(400, 300))
    settings = {
        "FILEPROC_DATABASE_URL": f"sqlite:///{tmp_path / 'fileproc.db'}",
        "FILEPROC_SOURCE_ROOTS": f"default={media}",
        "FILEPROC_STORAGE": str(tmp_path / "results"),
        "FILEPROC_WAIT_TIMEOUT": "60",
        "FILEPROC_ALLOWED_HOSTS": f"127.0.0.1:{origin.port}",
        "FILEPROC_ALLOW_PRIVATE_ADDRESSES": "true",
        "FILEPROC_METRICS_PATH": "/metrics",
    }
    registrar = Registrar(Config.from_env(settings))
    registrar.store.create_tables()  # before the server, so no two processes race to create it
    port = free_port()
    env = _environment({**settings, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)})
    try:
        with serving(
            gunicorn_command(port, threads=16, timeout=60), port=port, cwd=ROOT, env=env, timeout=60
        ):
            _wait_for(lambda: http_get(port, "/_fp/health")[0] == 200, "the server's health")
            yield _Server(port, registrar, media, origin, multiproc)
    finally:
        origin.close()
        registrar.close()


def _wait_for(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.1)


def _samples(text: str) -> dict[tuple, float]:
    """Every sample of a scrape, by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _scrape(port: int, path: str = "/metrics") -> dict[tuple, float]:
    status, headers, body = http_get(port, path)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=")
    return _samples(body.decode())


def _ask_all(port: int, paths: list[str]) -> list[int]:
    statuses: list[int] = [0] * len(paths)

    def ask(index: int, path: str) -> None:
        statuses[index] = http_get(port, path)[0]

    threads = [threading.Thread(target=ask, args=(i, path)) for i, path in enumerate(paths)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    return statuses


def test_a_gunicorn_servers_metrics_count_its_requests(server):
    registrar, port = server.registrar, server.port
    photo = write(server.media, "photo.jpg", halves(320, 240), quality=90)
    made = registrar.register("photo.jpg | fit 40x30")
    assert http_get(port, made.url)[0] == 301

    write(server.media, "junk.jpg", halves(320, 240), quality=90)
    refused = registrar.register("junk.jpg | fit 40x30")
    Path(server.media, "junk.jpg").write_bytes(b"not a picture at all")
    assert http_get(port, refused.url)[0] == 422

    flaky = registrar.register(server.origin.url("/flaky.jpg") + " | fit 40x30")
    server.origin.down = True
    assert http_get(port, flaky.url)[0] == 503  # failed for now: the origin answered 503
    assert http_get(port, flaky.url)[0] == 503  # and waiting for its retry time

    slow = registrar.register(server.origin.url("/slow.jpg") + " | fit 40x30")
    fetched = server.origin.slow_requests  # the registration's
    server.origin.gate.clear()
    herd: list[int] = []
    asking = threading.Thread(target=lambda: herd.extend(_ask_all(port, [slow.url] * HERD)))
    asking.start()
    _wait_for(lambda: server.origin.slow_requests == fetched + 1, "the herd's job to fetch its source")
    time.sleep(1.5)  # the rest of the herd reaches its wait
    server.origin.gate.set()
    asking.join(90)
    assert herd == [301] * HERD
    assert server.origin.slow_requests == fetched + 1

    # One by one: the process that made it answers each from its cache, the other all
    # but its first.
    again = 10
    assert [http_get(port, made.url)[0] for _ in range(again)] == [301] * again

    results = {job.checksum: job for job in registrar.store.list(state="done")}
    assert set(results) == {made.checksum, slow.checksum}
    sizes = os.path.getsize(photo) + len(b"not a picture at all") + len(server.origin.body)

    def counted() -> dict[tuple, float]:
        samples = _scrape(port)
        hits = samples.get(("fileproc_redirect_cache_hits_total", ()), 0)
        busy = samples.get(("fileproc_workers", (("state", "busy"),)), 0)
        # The warm redirects, and a worker freed in the other process, reach the metrics
        # with that process's next flusher tick (a second).
        return samples if hits >= again - 1 and busy == 0 else {}

    _wait_for(counted, "the warm redirects and freed workers to be counted", timeout=15)
    samples = counted()

    def value(name: str, **labels) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0)

    assert value("fileproc_jobs_total", outcome="made", engine="raster") == 2
    assert value("fileproc_jobs_total", outcome="refused", engine="other") == 1
    assert value("fileproc_jobs_total", outcome="failed", engine="unknown") == 1
    assert sum(v for (name, _), v in samples.items() if name == "fileproc_jobs_total") == 4
    assert value("fileproc_job_seconds_count", engine="raster", stage="total") == 2
    assert value("fileproc_job_seconds_count", engine="raster", stage="decode") == 2
    assert value("fileproc_job_seconds_count", engine="raster", stage="store") == 2
    assert value("fileproc_source_bytes_total") == sizes
    assert value("fileproc_result_bytes_total") == sum(job.result_bytes for job in results.values())
    assert value("fileproc_waits_total", outcome="made") == HERD - 1
    assert value("fileproc_unavailable_total", reason="source") == 1
    assert value("fileproc_unavailable_total", reason="retry-later") == 1
    assert sum(v for (name, _), v in samples.items() if name == "fileproc_unavailable_total") == 2
    assert again - 1 <= value("fileproc_redirect_cache_hits_total") <= again
    # Registrations were made by the test's own registrar, not by the server.
    assert value("fileproc_registrations_total", kind="cold") == 0
    assert value("fileproc_workers", state="busy") == 0
    assert value("fileproc_workers", state="idle") >= 1
    assert value("fileproc_job_turns_in_use") == 0
    assert value("fileproc_background_queue") == 0

    # The same figures from the standalone application, in a server of its own.
    other = free_port()
    command = gunicorn_command(other, threads=2, timeout=30, app="fileproc_wsgi.metrics:application")
    env = _environment({"PROMETHEUS_MULTIPROC_DIR": str(server.multiproc)})
    with serving(command, port=other, cwd=ROOT, env=env, timeout=60):
        alone = _scrape(other, "/anything")
    assert alone[("fileproc_jobs_total", (("engine", "raster"), ("outcome", "made")))] == 2
    assert alone[("fileproc_waits_total", (("outcome", "made"),))] == HERD - 1


# --------------------------------------------------------------------------- in-process


def _app(tmp_path, **settings) -> FileProcessor:
    settings.setdefault("database_url", f"sqlite:///{tmp_path / 'fileproc.db'}")
    settings.setdefault("storage", str(tmp_path / "results"))
    settings.setdefault("source_roots", {"default": str(tmp_path)})
    settings.setdefault("background_jobs", 0)
    return FileProcessor(None, Config(**settings))


def _get(app, path: str, remote_addr: str = "127.0.0.1"):
    response = Request.blank(path, remote_addr=remote_addr).get_response(app)
    response.body  # noqa: B018 - read it all, as a server would
    return response


@pytest.mark.parametrize(
    ("settings", "path", "client", "status"),
    [
        pytest.param({}, "/metrics", "127.0.0.1", 404, id="off-by-default"),
        pytest.param({}, "/_fp/metrics", "127.0.0.1", 404, id="off-by-default-under-prefix"),
        pytest.param({"metrics_path": "/metrics"}, "/metrics", "10.1.2.3", 404, id="not-an-allowed-client"),
        pytest.param(
            {"metrics_path": "/_fp/metrics"}, "/_fp/metrics", "10.1.2.3", 404, id="not-allowed-prefix"
        ),
        pytest.param({"metrics_path": "/metrics"}, "/metrics", "127.0.0.1", 200, id="loopback"),
        pytest.param({"metrics_path": "/metrics"}, "/metrics", "::1", 200, id="loopback-ipv6"),
        pytest.param(
            {"metrics_path": "/metrics", "metrics_allowed": "10.0.0.0/8"},
            "/metrics",
            "10.1.2.3",
            200,
            id="network",
        ),
        pytest.param(
            {"metrics_path": "/metrics", "metrics_allowed": "10.0.0.0/8"},
            "/metrics",
            "127.0.0.1",
            404,
            id="not-loopback",
        ),
    ],
)
def test_the_metrics_path_answers_only_allowed_clients(tmp_path, settings, path, client, status):
    app = _app(tmp_path, **settings)
    try:
        response = _get(app, path, client)
        assert response.status_int == status, response.text
        if status == 200:
            assert "fileproc_jobs_total" in response.text or "fileproc_jobs" in response.text
            assert response.cache_control.no_store
    finally:
        app.close()


def test_the_metrics_path_is_validated():
    from fileproc_wsgi.errors import ConfigError

    with pytest.raises(ConfigError, match="metrics_path"):
        Config(metrics_path="metrics")
    with pytest.raises(ConfigError, match="metrics_allowed"):
        Config(metrics_allowed="localhost")
    assert Config.from_env({"FILEPROC_METRICS_ALLOWED": "10.0.0.0/8,::1"}).metrics_allowed == (
        "10.0.0.0/8",
        "::1/128",
    )


def test_warm_registrations_and_redirects_are_counted_without_a_call_on_their_path(tmp_path):
    from prometheus_client import REGISTRY

    app = _app(tmp_path, metrics_path="/metrics")
    registrar = Registrar(app.config, store=app.store)
    try:
        write(tmp_path, "a.jpg", halves(64, 48))

        def value(name: str, **labels) -> float:
            metrics.publish()
            return REGISTRY.get_sample_value(name, labels) or 0

        cold, warm, hits = (
            value("fileproc_registrations_total", kind="cold"),
            value("fileproc_registrations_total", kind="warm"),
            value("fileproc_redirect_cache_hits_total"),
        )
        url = registrar.register("a.jpg | fit 10x10").url
        for _ in range(7):
            registrar.register("a.jpg | fit 10x10")
        assert _get(app, url).status_int == 301
        for _ in range(5):
            assert _get(app, url).status_int == 301
        assert registrar.warm_registrations == 7 and app.warm_hits == 5
        assert value("fileproc_registrations_total", kind="cold") - cold == 1
        assert value("fileproc_registrations_total", kind="warm") - warm == 7
        assert value("fileproc_redirect_cache_hits_total") - hits == 5
    finally:
        registrar.close()
        app.close()


# --------------------------------------------------------------------------- the job log


def _job_lines(caplog) -> list[dict]:
    return [
        json.loads(record.getMessage()) for record in caplog.records if record.name == "fileproc_wsgi.jobs"
    ]


@pytest.mark.parametrize("isolate_jobs", [True, False], ids=["in-a-worker", "in-process"])
def test_each_job_logs_one_json_line(tmp_path, caplog, isolate_jobs):
    caplog.set_level(logging.INFO, logger="fileproc_wsgi.jobs")
    app = _app(tmp_path, isolate_jobs=isolate_jobs)
    registrar = Registrar(app.config, store=app.store)
    try:
        source = write(tmp_path, "a.jpg", halves(640, 480), quality=90)
        made = registrar.register("a.jpg | fit 64x48 | format webp")
        write(tmp_path, "b.jpg", halves(64, 48))
        refused = registrar.register("b.jpg | fit 10x10")
        Path(tmp_path, "b.jpg").write_bytes(b"junk")
        assert _get(app, made.url).status_int == 301
        assert _get(app, made.url).status_int == 301  # no second job, no second line
        assert _get(app, refused.url).status_int == 422
        lines = _job_lines(caplog)
        assert [line["outcome"] for line in lines] == ["made", "refused"]
        line = lines[0]
        job = app.store.get(made.checksum)
        assert line["checksum"] == made.checksum
        assert (line["source"], line["engine"], line["attempt"]) == ("local", "raster", 1)
        assert line["bytes_in"] == os.path.getsize(source)
        assert line["bytes_out"] == job.result_bytes > 0
        assert set(line["ms"]) == {"decode", "steps", "encode", "store", "total"}
        assert all(value >= 0 for value in line["ms"].values())
        assert line["ms"]["total"] >= line["ms"]["decode"] + line["ms"]["encode"]
        line = lines[1]
        assert (line["checksum"], line["engine"], line["bytes_in"], line["bytes_out"]) == (
            refused.checksum,
            "other",
            4,
            None,
        )
        assert "not in a format this server reads" in line["reason"]
    finally:
        registrar.close()
        app.close()


# --------------------------------------------------------------------------- health


def _health(app):
    response = _get(app, "/_fp/health")
    assert response.content_type == "text/plain"
    assert response.cache_control.no_store
    return response.status_int, response.text


def test_health_names_a_storage_that_cannot_be_written(tmp_path):
    Path(tmp_path, "a-file").write_text("")
    app = _app(tmp_path, storage=str(tmp_path / "a-file" / "results"))
    try:
        assert _health(app) == (503, "unavailable: storage\n")
    finally:
        app.close()
    app = _app(tmp_path, storage=str(tmp_path / "not-yet" / "results"))
    try:
        assert _health(app) == (200, "ok\n")
    finally:
        app.close()


def test_health_answers_within_a_second_when_the_database_hangs(tmp_path, monkeypatch):
    app = _app(tmp_path)
    release = threading.Event()
    try:
        assert _health(app) == (200, "ok\n")
        monkeypatch.setattr(
            app._health, "checks", {**app._health.checks, "database": lambda: release.wait(10)}
        )
        started = time.monotonic()
        assert _health(app) == (503, "unavailable: database\n")
        assert _health(app) == (503, "unavailable: database\n")  # the hanging check is not started again
        assert time.monotonic() - started < 3
        assert sum(t.name == "fileproc-health-database" and t.is_alive() for t in threading.enumerate()) == 1
    finally:
        release.set()
        app.close()


def test_health_follows_the_database_of_a_gunicorn_server(own_postgres, tmp_path):
    url = own_postgres.database()
    settings = {
        "FILEPROC_DATABASE_URL": url,
        "FILEPROC_STORAGE": str(tmp_path / "results"),
        "FILEPROC_SOURCE_ROOTS": f"default={tmp_path}",
    }
    registrar = Registrar(Config.from_env(settings))
    registrar.store.create_tables()
    registrar.close()
    port = free_port()
    command = gunicorn_command(port, threads=4, timeout=30)
    with serving(command, port=port, cwd=ROOT, env=_environment(settings), timeout=60):
        _wait_for(lambda: http_get(port, "/_fp/health")[0] == 200, "health before the outage")
        status, headers, body = http_get(port, "/_fp/health")
        assert (status, body) == (200, b"ok\n")
        assert headers["Cache-Control"] == "no-store"
        own_postgres.stop()
        try:
            for _ in range(3):  # each worker process, whichever answers
                status, headers, body = http_get(port, "/_fp/health")
                assert (status, body) == (503, b"unavailable: database\n")
                assert headers["Content-Type"].startswith("text/plain")
                assert headers["Cache-Control"] == "no-store"
        finally:
            own_postgres.start()
        _wait_for(lambda: http_get(port, "/_fp/health")[0] == 200, "health after the restart")
        assert http_get(port, "/_fp/health")[2] == b"ok\n"


def test_without_prometheus_client_the_metrics_say_so_once(monkeypatch, caplog):
    import sys

    monkeypatch.setattr(metrics, "_metrics", None)
    monkeypatch.setattr(metrics, "_missing", False)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    caplog.set_level(logging.WARNING, logger="fileproc_wsgi.metrics")
    assert metrics.enable() is False
    assert metrics.enable() is False  # a second scrape
    warnings = [record for record in caplog.records if "metrics are off" in record.getMessage()]
    assert len(warnings) == 1
    body = []
    answer = metrics.metrics_app({"REQUEST_METHOD": "GET"}, lambda status, headers: body.append(status))
    assert body == ["503 Service Unavailable"] and b"not installed" in b"".join(answer)
