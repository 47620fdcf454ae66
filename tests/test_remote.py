"""Remote registration: ``POST <prefix>/register`` and the ``RemoteRegistrar`` that calls it.

The endpoint's refusals are checked in-process; the client is checked against a real
``fileproc serve`` process on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import sys
import threading
import time
import wsgiref.simple_server

import pytest
import sqlalchemy
from PIL import Image
from webob import Request

from fileproc_wsgi import remote as remote_module
from fileproc_wsgi.block import render_block
from fileproc_wsgi.errors import (
    FileProcError,
    InstructionError,
    RecordedFailureError,
    SignatureError,
    SourceError,
    SourceNotFoundError,
    UnavailableError,
)
from fileproc_wsgi.remote import SIGNATURE_HEADER, TIMESTAMP_HEADER, RemoteRegistrar, sign
from support import DictCache, free_port, halves, http_get, serving, write

SECRET = "a shared secret of some length"


def _post(app, body: bytes, *, secret: str = SECRET, timestamp: float | None = None, headers=None):
    stamp = str(int(time.time() if timestamp is None else timestamp))
    request = Request.blank("/_fp/register", method="POST", body=body, content_type="application/json")
    request.headers[TIMESTAMP_HEADER] = stamp
    request.headers[SIGNATURE_HEADER] = sign(secret, stamp, body)
    request.headers.update(headers or {})
    return request.get_response(app)


def _texts(*texts: str) -> bytes:
    return json.dumps({"texts": list(texts)}).encode()


@pytest.fixture
def signed_site(make_site):
    # No background jobs: these tests count the rows and commits a registration writes.
    site = make_site(secret=SECRET, background_jobs=0)
    write(site.media, "photo.jpg", halves(800, 600))
    return site


def test_register_endpoint_answers_what_a_local_registration_would(signed_site):
    texts = ("photo.jpg | fit 400x", "photo.jpg | fill 50x50 | format webp")
    response = _post(signed_site.app, _texts(*texts))
    assert response.status_int == 200
    assert response.content_type == "application/json"
    assert response.cache_control.no_store
    results = response.json["results"]
    local = [signed_site.registrar.register(text) for text in texts]
    assert results == [
        {
            "checksum": rep.checksum,
            "url": rep.url,
            "width": rep.width,
            "height": rep.height,
            "content_type": rep.content_type,
        }
        for rep in local
    ]
    assert (results[0]["width"], results[0]["height"]) == (400, 300)


def test_register_endpoint_writes_new_texts_in_one_commit(signed_site):
    signed_site.store.create_tables()
    commits = []
    sqlalchemy.event.listen(signed_site.store.engine, "commit", lambda connection: commits.append(1))
    response = _post(signed_site.app, _texts(*(f"photo.jpg | fit {w}x" for w in range(10, 30))))
    assert response.status_int == 200
    assert len(commits) == 1
    assert signed_site.store.count_by_state() == {"pending": 20}


def test_register_endpoint_reports_each_bad_text_and_keeps_the_good_ones(signed_site):
    response = _post(
        signed_site.app, _texts("photo.jpg | fit 10by", "gone.jpg | fit 10x", "photo.jpg | fit 20x")
    )
    assert response.status_int == 200
    bad, missing, good = response.json["results"]
    assert bad["error"]["type"] == "InstructionError"
    assert (bad["error"]["line"], bad["error"]["column"], bad["error"]["step"]) == (1, 17, "fit")
    assert missing["error"] == {"type": "SourceNotFoundError", "message": "source 'gone.jpg' does not exist"}
    assert good["width"] == 20
    assert signed_site.store.count_by_state() == {"pending": 1}


@pytest.mark.parametrize(
    ("post", "status", "message"),
    [
        pytest.param(
            {"headers": {TIMESTAMP_HEADER: "", SIGNATURE_HEADER: ""}},
            401,
            "missing X-Fileproc-Timestamp or X-Fileproc-Signature header",
            id="unsigned",
        ),
        pytest.param(
            {"secret": "another secret, as long as ours"},
            401,
            "bad signature",
            id="another-secret",
        ),
        pytest.param({"headers": {SIGNATURE_HEADER: "0" * 64}}, 401, "bad signature", id="made-up-signature"),
        pytest.param({"skew": -400}, 401, "stale timestamp", id="replayed-after-the-window"),
        pytest.param({"skew": 400}, 401, "stale timestamp", id="from-the-future"),
        pytest.param(
            {"headers": {TIMESTAMP_HEADER: "yesterday"}},
            401,
            "whole seconds since the epoch",
            id="bad-timestamp",
        ),
        pytest.param({"body": b"{not json"}, 400, "the body is not JSON", id="malformed-json"),
        pytest.param({"body": b'["a.jpg"]'}, 400, 'expected a JSON object {"texts"', id="wrong-shape"),
        pytest.param({"body": b'{"texts": [1]}'}, 400, 'expected a JSON object {"texts"', id="not-text"),
        pytest.param({"body": b'{"texts": []}'}, 400, "between 1 and 1000 texts", id="no-texts"),
        pytest.param({"body": _texts(*["photo.jpg"] * 1001)}, 400, "between 1 and 1000 texts", id="too-many"),
        pytest.param({"body": _texts("x" * 2_000_000)}, 413, "over max_register_bytes", id="oversized-body"),
    ],
)
def test_register_endpoint_refusals(signed_site, post, status, message):
    body = post.pop("body", _texts("photo.jpg | fit 10x"))
    if "skew" in post:  # from the time of the request: the suite can run longer than the window
        post["timestamp"] = time.time() + post.pop("skew")
    response = _post(signed_site.app, body, **post)
    assert response.status_int == status
    assert message in response.text
    assert len(response.text.splitlines()) == 1 and "Traceback" not in response.text
    assert response.cache_control.no_store
    assert signed_site.store.count_by_state() == {}


def test_a_stated_content_length_over_the_cap_is_refused_before_reading(signed_site):
    request = Request.blank("/_fp/register", method="POST", body=b"{}")
    request.environ["CONTENT_LENGTH"] = str(5 * 1024 * 1024)
    response = request.get_response(signed_site.app)
    assert response.status_int == 413


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_register_endpoint_takes_only_post(signed_site, method):
    response = Request.blank("/_fp/register", method=method).get_response(signed_site.app)
    assert response.status_int == 405
    assert response.allow == ("POST",)


def test_register_endpoint_is_off_without_a_secret(site):
    write(site.media, "photo.jpg", halves(80, 60))
    response = _post(site.app, _texts("photo.jpg | fit 10x"))
    assert response.status_int == 404
    assert response.text == "remote registration is off here: it needs a secret\n"
    assert site.store.count_by_state() == {}


# ---- The client against a real processing server ----------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    media = root / "media"
    write(media, "photo.jpg", halves(800, 600))
    write(media, "logo.png", halves(300, 100, mode="RGBA"))
    port = free_port()
    command, options = _processing_server(root, port)
    with serving(command, **options):
        yield f"http://127.0.0.1:{port}/_fp", port


def _processing_server(root, port: int):
    """``fileproc serve`` on ``port`` with sources in ``root/media`` and the secret set:
    the arguments for ``serving``."""
    env = {
        **os.environ,
        "FILEPROC_SOURCE_ROOTS": f"default={root / 'media'}",
        "FILEPROC_DATABASE_URL": f"sqlite:///{root / 'fp.db'}",
        "FILEPROC_STORAGE": str(root / "results"),
        "FILEPROC_SECRET": SECRET,
    }
    command = [sys.executable, "-m", "fileproc_wsgi.cli", "serve", "--port", str(port)]
    return command, {"port": port, "cwd": root, "env": env}


class _Counting:
    """Counts the connections and requests every HTTPConnection makes."""

    def __init__(self, monkeypatch):
        self.connects = 0
        self.requests = 0
        connect, request = http.client.HTTPConnection.connect, http.client.HTTPConnection.request

        def counted_connect(connection):
            self.connects += 1
            return connect(connection)

        def counted_request(connection, *args, **kwargs):
            self.requests += 1
            return request(connection, *args, **kwargs)

        monkeypatch.setattr(http.client.HTTPConnection, "connect", counted_connect)
        monkeypatch.setattr(http.client.HTTPConnection, "request", counted_request)


@pytest.fixture
def counting(monkeypatch):
    return _Counting(monkeypatch)


@pytest.fixture
def remote(server):
    registrar = RemoteRegistrar(server[0], secret=SECRET)
    yield registrar
    registrar.close()


def test_remote_registration_gives_a_working_absolute_url(server, remote):
    url, port = server
    representation = remote.register("photo.jpg | fit 300x")
    assert representation.url.startswith(f"{url}/") and representation.url.endswith(".jpg")
    assert (representation.width, representation.height) == (300, 225)
    assert representation.html.startswith(f'<img src="{representation.url}" width="300" height="225"')
    status, headers, _ = http_get(port, representation.url.removeprefix(f"http://127.0.0.1:{port}"))
    assert status == 301
    status, _, data = http_get(port, headers["Location"].removeprefix(f"http://127.0.0.1:{port}"))
    assert status == 200
    assert Image.open(io.BytesIO(data)).size == (300, 225)


def test_one_persistent_connection_and_one_request_per_batch(remote, counting):
    for width in (101, 102, 103):
        remote.register(f"photo.jpg | fit {width}x")
    remote.register_many([f"photo.jpg | fit {width}x" for width in (104, 105, 106, 101)])
    assert (counting.connects, counting.requests) == (1, 4)


def test_a_block_registers_all_its_variants_in_one_request(remote, counting):
    rendition = render_block(
        remote, "logo.png | fit 200x", {"widths": "50,100,400", "formats": "avif,webp"}, strict=True
    )
    assert counting.requests == 1
    assert rendition.html.startswith('<picture><source type="image/avif" srcset="')
    assert rendition.srcset and [v.width for v in rendition.srcset] == [50, 100, 200]
    assert (rendition.width, rendition.height, rendition.content_type) == (200, 67, "image/png")


def test_answers_are_remembered_for_their_time_to_live(server, counting):
    shared = DictCache()
    first = RemoteRegistrar(server[0], secret=SECRET, cache=shared, ttl=0.5)
    second = RemoteRegistrar(server[0], secret=SECRET, cache=shared)
    try:
        representation = first.register("photo.jpg | fit 150x")
        assert first.register("photo.jpg | fit 150x") == representation
        assert second.register("photo.jpg | fit 150x") == representation, "shared through the cache"
        assert counting.requests == 1
        time.sleep(0.6)
        again = first.register("photo.jpg | fit 150x")
        assert counting.requests == 2, "asked again once the answer expired"
        # The server has made the result in the background meanwhile: its own URL now.
        assert (again.checksum, again.width, again.height) == (
            representation.checksum,
            representation.width,
            representation.height,
        )
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        pytest.param(
            "photo.jpg | fit 10by", InstructionError, "line 1, column 17, step 'fit'", id="bad-text"
        ),
        pytest.param(
            "gone.jpg | fit 10x", SourceNotFoundError, "source 'gone.jpg' does not exist", id="missing"
        ),
        pytest.param("../etc/passwd | fit 10x", SourceError, "'..'", id="traversal"),
    ],
)
def test_remote_errors_are_the_local_ones(remote, text, error, message):
    with pytest.raises(error, match=message) as raised:
        remote.register(text)
    if error is InstructionError:
        assert (raised.value.line, raised.value.column, raised.value.step) == (1, 17, "fit")


def test_a_wrong_secret_is_a_clear_error(server):
    registrar = RemoteRegistrar(server[0], secret="not the server's secret at all")
    try:
        with pytest.raises(SignatureError, match="refused the request: bad signature"):
            registrar.register("photo.jpg | fit 10x")
    finally:
        registrar.close()


def test_an_unreachable_server_fails_fast_and_the_page_still_renders(counting, caplog):
    registrar = RemoteRegistrar(f"http://127.0.0.1:{free_port()}/_fp", secret=SECRET, retry_after=30)
    with pytest.raises(UnavailableError, match=r"registrar at http://127\.0\.0\.1:\d+/_fp is unreachable"):
        registrar.register("photo.jpg | fit 10x")
    assert counting.connects == 1
    assert render_block(registrar, "photo.jpg | fit 10x", {}, strict=True) is None
    assert "is unreachable; not retrying for a few seconds" in caplog.text
    assert counting.connects == 1, "no new attempt while the server is known to be down"


@pytest.mark.integration
def test_a_restarted_server_is_reached_on_a_new_connection(tmp_path, counting):
    write(tmp_path / "media", "photo.jpg", halves(80, 60))
    port = free_port()
    command, options = _processing_server(tmp_path, port)
    registrar = RemoteRegistrar(f"http://127.0.0.1:{port}/_fp", secret=SECRET)
    try:
        with serving(command, **options):
            assert registrar.register("photo.jpg | fit 40x").width == 40
        with serving(command, **options):
            assert registrar.register("photo.jpg | fit 20x").width == 20
    finally:
        registrar.close()
    assert counting.connects >= 2


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        pytest.param({}, "Registrar", id="local-by-default"),
        pytest.param(
            {"registrar_url": "https://img.example.com/_fp", "secret": SECRET}, "RemoteRegistrar", id="remote"
        ),
    ],
)
def test_registrar_for_follows_the_config(tmp_path, settings, expected):
    from fileproc_wsgi import Config, registrar_for

    config = Config(database_url=f"sqlite:///{tmp_path / 'fp.db'}", **settings)
    registrar = registrar_for(config)
    assert type(registrar).__name__ == expected
    if expected == "RemoteRegistrar":
        assert registrar.url == "https://img.example.com/_fp"
    else:
        registrar.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param(
            {"registrar_url": "https://img.example.com/_fp"}, "needs the shared secret", id="no-secret"
        ),
        pytest.param(
            {"registrar_url": "ftp://img", "secret": SECRET}, "expected the processing server", id="scheme"
        ),
    ],
)
def test_remote_settings_are_checked(settings, message):
    from fileproc_wsgi import Config, ConfigError

    with pytest.raises(ConfigError, match=message):
        Config(**settings)


def test_close_closes_the_connections_of_every_thread(server, counting):
    import threading

    registrar = RemoteRegistrar(server[0], secret=SECRET)
    threads = [
        threading.Thread(target=registrar.register, args=(f"photo.jpg | fit {width}x",)) for width in (61, 62)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert counting.connects == 2
    open_before = [connection.sock is not None for connection in registrar._connections]
    registrar.close()
    assert open_before == [True, True] and registrar._connections == []
    assert registrar.register("photo.jpg | fit 63x").width == 63, "reconnects after close"
    assert counting.connects == 3
    registrar.close()


def test_an_oversized_chunked_body_is_refused_by_a_real_server(server):
    connection = http.client.HTTPConnection("127.0.0.1", server[1], timeout=30)
    try:
        chunks = (b'{"texts": ["' + b"x" * 65536 for _ in range(40))  # 2.5 MiB, no Content-Length
        connection.request("POST", "/_fp/register", body=chunks, encode_chunked=True)
        response = connection.getresponse()
        assert response.status == 413
        assert b"over max_register_bytes" in response.read()
    finally:
        connection.close()


class _Unknown(FileProcError):
    """An error class the client's fileproc_wsgi does not have (a newer server's)."""

    status = 418


@contextlib.contextmanager
def _refusing_server(refusals: dict):
    """A real HTTP server on 127.0.0.1 whose register endpoint answers each text with the
    error ``refusals`` gives it, encoded by the server's own code (``remote.answer``)."""

    class Refusing:
        @contextlib.contextmanager
        def batch(self):
            yield

        def register(self, text):
            raise refusals[text]

    def application(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        reply = remote_module.answer(Refusing(), remote_module.texts_of(body))
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(reply)))])
        return [reply]

    server = wsgiref.simple_server.make_server("127.0.0.1", 0, application, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/_fp"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


REFUSALS = [
    pytest.param(
        RecordedFailureError("source 'a.jpg' was replaced by a directory", 422),
        RecordedFailureError,
        {"status": 422},
        id="two-argument-constructor",
    ),
    pytest.param(
        InstructionError("expected WxH", line=3, column=5, step="fit", where="page.html"),
        InstructionError,
        {"line": 3, "column": 5, "step": "fit", "where": "page.html", "problem": "expected WxH"},
        id="keyword-only-constructor",
    ),
    pytest.param(_Unknown("teapot"), FileProcError, {}, id="unknown-class"),
]


@pytest.mark.parametrize(("refusal", "kind", "attributes"), REFUSALS)
def test_remote_errors_come_back_whole_whatever_their_constructor(refusal, kind, attributes):
    with _refusing_server({"a.jpg | fit 10x": refusal}) as url:
        registrar = RemoteRegistrar(url, secret=SECRET)
        try:
            with pytest.raises(FileProcError) as raised:
                registrar.register("a.jpg | fit 10x")
        finally:
            registrar.close()
    error = raised.value
    assert type(error) is kind
    assert {name: getattr(error, name) for name in attributes} == attributes
    if kind is FileProcError:  # not passed off as one of the client's own errors
        assert str(error) == f"registrar at {url}: {refusal}"
    else:
        assert str(error) == str(refusal) and error.status == refusal.status
