"""Several processing hosts behind one URL, as a site outgrows one machine (issue 6, item 4).

Two gunicorn servers (separate processes, different ports) share one PostgreSQL database,
one S3-compatible server (moto_server, its own process) for results and one local media
directory for sources. A small round-robin reverse proxy on 127.0.0.1 puts them behind
ONE processing URL, passing statuses and ``Location`` through unchanged, so redirects go
straight from the browser to the (publicly readable) bucket. An app server registers the
page's twenty instruction texts with ``RemoteRegistrar`` through that proxy and prints
their ``<img>`` tags; headless Chromium loads the page. Every picture must show at the
width the page promised, both servers must have been asked, and each job must have run
exactly once: counted from the store (``attempts`` and ``token``) and from the bucket,
never from logs.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import sync_playwright

from fileproc_wsgi.remote import RemoteRegistrar
from fileproc_wsgi.store import InstructionStore
from support import CHROMIUM, CHROMIUM_FLAGS, S3_CREDENTIALS, Gunicorn, gunicorn, s3_server

SECRET = "a shared secret for the processing hosts"
COUNT = 20
# One source per picture, so twenty distinct jobs; the width each one promises.
TEXTS = [f"photo{index:02d}.jpg | fit {200 + index}x | format jpeg" for index in range(COUNT)]
WIDTHS = [200 + index for index in range(COUNT)]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)]

# Every <img> once the page is done: its URL, its promised width and its decoded width.
_IMAGES = """async () => Promise.all(Array.from(document.images).map(async img => {
    const plain = new Image();
    plain.src = img.currentSrc;
    await plain.decode();
    return {current: img.currentSrc, width: img.getAttribute("width"), pixels: plain.naturalWidth};
}))"""


# ---- the parts -------------------------------------------------------------------------


@pytest.fixture
def media(tmp_path) -> Path:
    """Twenty 640x480 JPEGs, each a different colour with a stripe, in one shared directory."""
    directory = tmp_path / "media"
    directory.mkdir()
    for index in range(COUNT):
        image = Image.new("RGB", (640, 480), (12 * index, 255 - 12 * index, 128))
        ImageDraw.Draw(image).rectangle([0, 200, 640, 280], fill=(255, 255, 255))
        image.save(directory / f"photo{index:02d}.jpg", quality=85)
    return directory


@pytest.fixture
def s3(tmp_path) -> Iterator[tuple[str, str, object]]:
    """(endpoint, bucket, boto3 client) of a moto_server process with ``results/`` public."""
    import boto3

    moto_dir = tmp_path / "moto"
    moto_dir.mkdir()
    with s3_server(moto_dir) as endpoint:
        client = boto3.session.Session(
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=endpoint)
        bucket = f"fp-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        statement = {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/results/*",
        }
        client.put_bucket_policy(
            Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]})
        )
        yield endpoint, bucket, client


class Proxy(http.server.ThreadingHTTPServer):
    """Round-robin over ``backends`` (ports), one request at a time; counts who got what."""

    daemon_threads = True

    def __init__(self, backends: list[int]):
        self.backends = backends
        self.turn = 0
        self.lock = threading.Lock()
        self.asked: Counter[int] = Counter()
        self.asked_for: dict[str, list[int]] = {}
        self.errors: list[str] = []
        super().__init__(("127.0.0.1", 0), ProxyHandler)

    def next_backend(self, path: str) -> int:
        with self.lock:
            backend = self.backends[self.turn % len(self.backends)]
            self.turn += 1
            self.asked[backend] += 1
            self.asked_for.setdefault(path, []).append(backend)
            return backend


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Proxy

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        backend = self.server.next_backend(self.path)
        connection = http.client.HTTPConnection("127.0.0.1", backend, timeout=60)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()  # http.client never follows redirects
            data = response.read()
            status, reason, answer = response.status, response.reason, response.getheaders()
        except (OSError, http.client.HTTPException) as error:
            self.server.errors.append(f"{self.command} {self.path} -> {backend}: {error!r}")
            status, reason, answer, data = (
                502,
                "Bad Gateway",
                [("Content-Type", "text/plain")],
                b"bad gateway\n",
            )
        finally:
            connection.close()
        self.send_response(status, reason)
        for name, value in answer:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def in_thread(server) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002
        pass


def app_server(registrar: RemoteRegistrar, page_errors: list[str]):
    """A tiny WSGI site whose one page registers the twenty texts remotely and shows them."""

    def application(environ, start_response):
        if environ["PATH_INFO"] != "/":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        try:
            representations = registrar.register_many(TEXTS)
        except Exception as error:  # shown to the test, not swallowed by wsgiref
            page_errors.append(repr(error))
            raise
        tags = "\n".join(str(representation.html) for representation in representations)
        body = f"<!doctype html><html><body>\n{tags}\n</body></html>\n".encode()
        start_response(
            "200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return make_server("127.0.0.1", 0, application, server_class=WSGIServer, handler_class=_QuietHandler)


# ---- the test --------------------------------------------------------------------------


def test_twenty_pictures_through_a_round_robin_proxy_are_each_made_once(database_url, media, s3, tmp_path):
    endpoint, bucket, client = s3
    settings = {
        "FILEPROC_DATABASE_URL": database_url,
        "FILEPROC_SOURCE_ROOTS": f"default={media}",
        "FILEPROC_STORAGE": f"s3://{bucket}/results",
        "FILEPROC_S3_ENDPOINT_URL": endpoint,
        "FILEPROC_SECRET": SECRET,
        "FILEPROC_WAIT_TIMEOUT": "30",
    }
    env = {key: value for key, value in os.environ.items() if not key.startswith("FILEPROC_")}
    env.update(S3_CREDENTIALS)
    env.update(settings)
    store = InstructionStore(database_url)
    store.create_tables()  # before the servers, so no two processes race to create it
    servers: list[Gunicorn] = []
    proxy: Proxy | None = None
    page_errors: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(store.dispose)
            servers = [
                stack.enter_context(gunicorn(name, env=env, logs=tmp_path, threads=8, timeout=30))
                for name in ("A", "B")
            ]
            proxy = Proxy([server.port for server in servers])
            stack.enter_context(in_thread(proxy))
            proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
            registrar = RemoteRegistrar(proxy_url + "/_fp", secret=SECRET)
            stack.callback(registrar.close)
            site = app_server(registrar, page_errors)
            stack.enter_context(in_thread(site))
            site_url = f"http://127.0.0.1:{site.server_address[1]}/"

            statuses: dict[str, int] = {}
            locations: dict[str, str] = {}
            playwright = stack.enter_context(sync_playwright())
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            stack.callback(browser.close)
            page = browser.new_page(viewport={"width": 1280, "height": 2000})

            def seen(response) -> None:
                statuses.setdefault(response.url, response.status)
                if response.status in (301, 302, 307, 308):
                    locations.setdefault(response.url, response.headers.get("location"))

            page.on("response", seen)
            page.goto(site_url, wait_until="load", timeout=30_000)
            page.wait_for_function("Array.from(document.images).every(img => img.complete)", timeout=30_000)
            images = page.evaluate(_IMAGES)
            page.close()

        assert page_errors == []
        assert proxy.errors == []
        # The page: twenty pictures, each shown at the width it promised.
        assert len(images) == COUNT
        assert sorted(int(image["width"]) for image in images) == WIDTHS
        for image in images:
            assert image["current"].startswith(proxy_url + "/_fp/"), image
            assert image["pixels"] == int(image["width"]), image
            # Redirected by whichever host, straight to the bucket, passed through unchanged.
            assert statuses.get(image["current"]) == 301, image
            assert locations[image["current"]].startswith(f"{endpoint}/{bucket}/results/"), image

        # Both hosts did part of the work: the register POST and the pictures alternate.
        picture_paths = [
            path for path in proxy.asked_for if path.startswith("/_fp/") and path != "/_fp/register"
        ]
        assert len(picture_paths) == COUNT
        assert all(len(proxy.asked_for[path]) == 1 for path in picture_paths), "a picture was asked twice"
        hosts = Counter(proxy.asked_for[path][0] for path in picture_paths)
        assert set(hosts) == {server.port for server in servers}, hosts

        # Each job ran exactly once, and left exactly one object in the bucket.
        checksums = [image["current"].rsplit("/", 1)[1].partition(".")[0] for image in images]
        check = InstructionStore(database_url)
        try:
            jobs = [check.get(checksum) for checksum in checksums]
            assert check.count_by_state() == {"done": COUNT}
        finally:
            check.dispose()
        assert [(job.state, job.attempts, job.token) for job in jobs] == [("done", 1, 1)] * COUNT
        for image, job in zip(images, jobs, strict=True):
            assert locations[image["current"]] == f"{endpoint}/{bucket}/results/{job.result_key}"
        listed = client.list_objects_v2(Bucket=bucket)
        keys = [entry["Key"] for entry in listed.get("Contents", [])]
        assert not listed.get("IsTruncated")
        assert sorted(keys) == sorted(f"results/{job.result_key}" for job in jobs), (
            "missing, extra or partial objects"
        )
        for job in jobs:
            assert (
                client.head_object(Bucket=bucket, Key=f"results/{job.result_key}")["ContentLength"]
                == job.result_bytes
            )
    except BaseException:
        for server in servers:
            print(f"---- gunicorn {server.name} log ----\n{server.log.read_text(errors='replace')}")
        if proxy is not None:
            print(f"---- proxy ----\nasked: {dict(proxy.asked)}\nerrors: {proxy.errors}")
        raise
