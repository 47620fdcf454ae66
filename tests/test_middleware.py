"""The HTTP contract of SPEC §5, driven in-process through the WSGI callable."""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import re
import socket
import socketserver
import sys
import threading
import time
import warnings
import wsgiref.simple_server

import pytest
from PIL import Image
from webob import Request

from fileproc_wsgi.config import Config
from fileproc_wsgi.middleware import IMMUTABLE, FileProcessor
from support import decode, free_port, halves, write

CHECKSUM = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def site(make_site):
    site = make_site()
    write(site.media, "photo.jpg", halves(), quality=90)
    return site


def _path(url: str) -> str:
    return url.replace("http://localhost", "")


def test_first_request_processes_then_redirects_permanently(site):
    representation = site.registrar.register("photo.jpg | fit 300x300")
    response = site.get(representation.url)
    assert response.status_int == 301
    assert response.headers["Cache-Control"] == IMMUTABLE
    assert (
        _path(response.location) == f"/_fp/files/{representation.checksum[:2]}/{representation.checksum}.jpg"
    )
    result = site.get(_path(response.location))
    assert result.status_int == 200
    assert result.content_type == "image/jpeg"
    assert decode(result.body).size == (300, 200)
    assert site.store.get(representation.checksum).state == "done"


def test_later_requests_are_a_lookup_and_a_redirect(site):
    representation = site.registrar.register("photo.jpg | fit 100x")
    first = site.get(representation.url)
    made = site.store.get(representation.checksum).completed_at
    for _ in range(3):
        again = site.get(representation.url)
        assert (again.status_int, again.location) == (301, first.location)
    assert site.store.get(representation.checksum).completed_at == made
    assert site.store.get(representation.checksum).attempts == 1


def test_head_answers_like_get_without_a_body(site):
    representation = site.registrar.register("photo.jpg | fit 50x")
    response = site.get(representation.url, method="HEAD")
    assert response.status_int == 301 and response.body == b""


def test_url_without_extension_is_accepted(site):
    representation = site.registrar.register("photo.jpg | fit 60x")
    response = site.get(f"/_fp/{representation.checksum}")
    assert response.status_int == 301


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        pytest.param(f"/_fp/{CHECKSUM}.jpg", 404, "no instructions registered", id="unknown-checksum"),
        pytest.param("/_fp/0123.jpg", 404, "not a fileproc URL", id="short-checksum"),
        pytest.param(f"/_fp/{CHECKSUM}00.jpg", 404, "not a fileproc URL", id="overlong-checksum"),
        pytest.param(f"/_fp/{CHECKSUM.upper()}.jpg", 404, "not a fileproc URL", id="upper-case-checksum"),
        pytest.param(f"/_fp/{CHECKSUM}.exe", 404, "not a fileproc URL", id="unknown-extension"),
        pytest.param("/_fp/..%2f..%2fetc%2fpasswd", 404, "not a fileproc URL", id="encoded-traversal"),
        pytest.param("/_fp/files/../fileproc.db", 404, "no such result", id="files-traversal"),
        pytest.param(f"/_fp/files/01/{CHECKSUM}.jpg", 404, "no such result", id="files-wrong-fanout"),
        pytest.param(f"/_fp/files/01/{CHECKSUM}.jpg/x", 404, "no such result", id="files-trailing"),
        pytest.param("/_fp", 404, "not a fileproc URL", id="bare-prefix"),
        pytest.param("/_fp/", 404, "not a fileproc URL", id="prefix-slash"),
    ],
)
def test_bad_urls_are_not_found_and_write_nothing(site, path, status, message):
    before = site.store.count_by_state()
    response = site.get(path)
    assert response.status_int == status
    assert message in response.text
    assert response.headers["Cache-Control"] == "no-store"
    assert site.store.count_by_state() == before
    assert not (site.root / "results").exists()


def test_wrong_extension_of_a_registered_checksum(site):
    representation = site.registrar.register("photo.jpg | fit 60x | format webp")
    response = site.get(f"/_fp/{representation.checksum}.png")
    assert response.status_int == 404
    assert "registered as .webp, not .png" in response.text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_refused(site, method):
    representation = site.registrar.register("photo.jpg | fit 60x")
    response = site.get(representation.url, method=method)
    assert response.status_int == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert site.store.get(representation.checksum).state == "pending"


def test_other_paths_pass_through_untouched(site):
    seen = []

    def app(environ, start_response):
        seen.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"from the app"]

    wrapped = FileProcessor(app, site.config, store=site.store)
    for path in ("/", "/_fpx/a", "/static/_fp/x", "/_f"):
        response = Request.blank(path).get_response(wrapped)
        assert response.text == "from the app"
    assert seen == ["/", "/_fpx/a", "/static/_fp/x", "/_f"]


def test_without_an_app_other_paths_are_not_found(site):
    assert site.get("/anything").status_int == 404


def test_result_file_has_etag_conditional_and_range(site):
    representation = site.registrar.register("photo.jpg | fit 200x | format png")
    location = _path(site.get(representation.url).location)
    full = site.get(location)
    assert full.etag == representation.checksum
    assert full.headers["Cache-Control"] == IMMUTABLE
    assert full.content_type == "image/png"
    not_modified = site.get(location, headers={"If-None-Match": f'"{representation.checksum}"'})
    assert not_modified.status_int == 304 and not_modified.body == b""
    part = site.get(location, headers={"Range": "bytes=0-7"})
    assert part.status_int == 206
    assert part.body == full.body[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_result_is_made_again(site):
    representation = site.registrar.register("photo.jpg | fit 80x")
    location = _path(site.get(representation.url).location)
    stored = site.root / "results" / representation.checksum[:2] / f"{representation.checksum}.jpg"
    original = stored.read_bytes()
    stored.unlink()
    response = site.get(location)
    assert response.status_int == 200
    assert response.body == original
    assert stored.exists()


def test_missing_file_of_an_unregistered_checksum_is_not_found(site):
    response = site.get(f"/_fp/files/{CHECKSUM[:2]}/{CHECKSUM}.jpg")
    assert response.status_int == 404


def test_concurrent_first_requests_process_once(site):
    representation = site.registrar.register("photo.jpg | fill 123x77")
    answers, barrier = [], threading.Barrier(12)

    def ask():
        barrier.wait(timeout=10)
        response = site.get(representation.url)
        answers.append((response.status_int, response.location))

    threads = [threading.Thread(target=ask) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(answers) == 12
    assert set(answers) == {answers[0]} and answers[0][0] == 301
    job = site.store.get(representation.checksum)
    assert (job.attempts, job.token, job.state) == (1, 1, "done")


def test_failure_is_recorded_and_not_retried(site):
    representation = site.registrar.register("photo.jpg | fit 60x")
    (site.media / "photo.jpg").unlink()
    first = site.get(representation.url)
    assert first.status_int == 404
    assert first.text == "source 'photo.jpg' does not exist\n"
    write(site.media, "photo.jpg", halves(), quality=90)
    second = site.get(representation.url)
    assert (second.status_int, second.text) == (404, first.text)
    job = site.store.get(representation.checksum)
    assert (job.state, job.attempts) == ("failed", 1)


def test_unexpected_errors_answer_500_without_a_traceback(site, monkeypatch, caplog):
    representation = site.registrar.register("photo.jpg | fit 60x")

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail /etc/passwd")

    monkeypatch.setattr(site.app.store, "find", explode)
    response = site.get(representation.url)
    assert response.status_int == 500
    assert response.text == "internal error\n"
    assert "RuntimeError" in caplog.text


@pytest.mark.parametrize("status", [302, 307, 308])
def test_redirect_status_is_configurable(make_site, status):
    site = make_site(redirect_status=status)
    write(site.media, "photo.png", halves(40, 20))
    response = site.get(site.registrar.register("photo.png").url)
    assert response.status_int == status
    assert response.headers["Cache-Control"] == (IMMUTABLE if status == 308 else "no-cache")


def test_results_can_be_served_directly(make_site):
    site = make_site(serve_results=True)
    write(site.media, "photo.png", halves(40, 20))
    response = site.get(site.registrar.register("photo.png | fit 20x").url)
    assert response.status_int == 200
    assert Image.open(__import__("io").BytesIO(response.body)).size == (20, 10)


def test_custom_prefix(make_site):
    site = make_site(prefix="/media/thumbs")
    write(site.media, "photo.png", halves(40, 20))
    representation = site.registrar.register("photo.png")
    assert representation.url.startswith("/media/thumbs/")
    response = site.get(representation.url)
    assert _path(response.location).startswith("/media/thumbs/files/")
    assert site.get(_path(response.location)).status_int == 200


def test_database_outage_is_503(tmp_path):
    config = Config(database_url="postgresql+psycopg://nobody@127.0.0.1:9/none", storage=str(tmp_path))
    app = FileProcessor(None, config)
    response = Request.blank(f"/_fp/{CHECKSUM}.jpg").get_response(app)
    assert response.status_int == 503
    assert response.headers["Retry-After"]
    assert response.headers["Cache-Control"] == "no-store"
    assert "database unavailable" in response.text
    app.close()


class _EmptiedBetweenLookAndRead(dict):
    """The redirect cache as a thread sees it while another thread empties it (the cache
    reached its bound): the look finds the path, the read that follows would not."""

    def __contains__(self, key):
        found = super().__contains__(key)
        self.clear()
        return found


def test_a_redirect_cache_emptied_mid_request_still_answers(site):
    representation = site.registrar.register("photo.jpg | fit 60x")
    first = site.get(representation.url)
    site.app._redirects = _EmptiedBetweenLookAndRead(site.app._redirects)
    again = site.get(representation.url)
    assert (again.status_int, again.location) == (301, first.location)


# ---------------------------------------------------------------- files closed on every path

_BIG = 1_000_003  # bytes: many blocks, and more than a socket buffer holds


@pytest.fixture
def stored(site):
    """A result file of ``_BIG`` random bytes in the site's storage; its URL path."""
    path = site.root / "results" / CHECKSUM[:2] / f"{CHECKSUM}.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(_BIG))
    return path


def _open_files(path) -> int:
    """How many of this process's descriptors have ``path`` open."""
    count = 0
    for descriptor in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{descriptor}") == str(path)
    return count


RESPONSES = [
    # method, request headers, blocks read before the server closes (None: all), status
    pytest.param("GET", {}, None, 200, id="get"),
    pytest.param("GET", {}, 0, 200, id="get-closed-before-iterating"),
    pytest.param("GET", {}, 1, 200, id="get-client-hangs-up"),
    pytest.param("HEAD", {}, None, 200, id="head"),
    pytest.param("GET", {"Range": "bytes=10-99999"}, None, 206, id="range"),
    pytest.param("GET", {"Range": "bytes=10-99999"}, 0, 206, id="range-closed-before-iterating"),
    pytest.param("GET", {"Range": "bytes=10-99999"}, 1, 206, id="range-client-hangs-up"),
    pytest.param("HEAD", {"Range": "bytes=10-99999"}, None, 206, id="range-head"),
    pytest.param("GET", {"Range": "bytes=5000000-"}, None, 416, id="range-not-satisfiable"),
    pytest.param("GET", {"If-None-Match": f'"{CHECKSUM}"'}, None, 304, id="if-none-match"),
    pytest.param("HEAD", {"If-None-Match": f'"{CHECKSUM}"'}, None, 304, id="if-none-match-head"),
]


@pytest.mark.parametrize(("method", "headers", "blocks", "status"), RESPONSES)
def test_a_served_file_is_closed_when_the_server_closes_the_response(
    site, stored, method, headers, blocks, status
):
    environ = Request.blank(
        f"/_fp/files/{CHECKSUM[:2]}/{CHECKSUM}.jpg", method=method, headers=headers
    ).environ
    started = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        body = site.app(environ, lambda line, headers, exc_info=None: started.append(line))
        received = b"".join(itertools.islice(body, blocks))
        if hasattr(body, "close"):
            body.close()  # what every WSGI server does, iterated or not (PEP 3333)
        assert _open_files(stored) == 0, "closed by close(), not left to the garbage collector"
        del body
        gc.collect()
    assert int(started[0].split()[0]) == status
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    if blocks is None and method == "GET" and status == 206:
        assert received == stored.read_bytes()[10:100000]
    elif blocks is None and method == "GET" and status == 200:
        assert received == stored.read_bytes()


class _ThreadingServer(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def real_server(site):
    """The site's processor behind a threaded wsgiref server on 127.0.0.1, in this process
    (so its open files and its ResourceWarnings are this test's to see); its port."""
    unraisable = []
    hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    server = wsgiref.simple_server.make_server(
        "127.0.0.1", 0, site.app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        gc.collect()
        sys.unraisablehook = hook
    assert [str(u.exc_value) for u in unraisable] == []


@pytest.mark.parametrize(("method", "headers", "blocks", "status"), RESPONSES)
def test_a_real_server_leaves_no_file_open(real_server, stored, method, headers, blocks, status):
    with socket.create_connection(("127.0.0.1", real_server), timeout=30) as connection:
        lines = [f"{method} /_fp/files/{CHECKSUM[:2]}/{CHECKSUM}.jpg HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        first = connection.recv(4096)
        assert re.match(rb"HTTP/1\.[01] %d " % status, first)
        if blocks is None:  # read to the end of the answer, as a browser would
            stated = re.search(rb"Content-Length: (\d+)", first)
            length = int(stated.group(1)) if stated and method == "GET" else 0
            received = len(first.partition(b"\r\n\r\n")[2])
            while received < length:
                received += len(connection.recv(1 << 16))
    # A hung-up client is noticed on the server's next write: allow it a few seconds.
    deadline = time.monotonic() + 10
    while _open_files(stored) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _open_files(stored) == 0


def _outage_sites(make_site, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()  # nothing listens there
    database = make_site(database_url=f"postgresql+psycopg://nobody@127.0.0.1:{port}/secretdb")
    storage = make_site(storage="s3://secret-bucket/results", s3_endpoint_url=f"http://127.0.0.1:{port}")
    write(storage.media, "photo.jpg", halves(40, 20))
    return port, [
        (database, f"/_fp/{CHECKSUM}.jpg"),
        (storage, storage.registrar.register("photo.jpg | fit 10x").url),
    ]


@pytest.mark.parametrize("which", [pytest.param(0, id="database"), pytest.param(1, id="s3-endpoint")])
def test_an_outage_names_the_backend_in_the_log_never_in_the_response(
    make_site, monkeypatch, tmp_path, caplog, which
):
    port, sites = _outage_sites(make_site, monkeypatch, tmp_path)
    site, path = sites[which]
    response = site.get(path)
    assert response.status_int == 503 and response.headers["Retry-After"]
    assert response.text.endswith("unavailable: cannot reach it; ask again shortly\n") or (
        response.text == "result storage unavailable: cannot reach the S3 endpoint\n"
    )
    assert str(port) not in response.text and "127.0.0.1" not in response.text
    assert f"127.0.0.1:{port}" in caplog.text or f"port {port}" in caplog.text, "the log says which"
