"""What ``fileproc purge`` and ``fileproc gc --delete`` remove, every process forgets.

Removals raise the store's generation; registrars, template blocks, the shared cache's keys
and the middleware's redirect cache read it at most once per ``source_check_interval`` and
forget what they remembered when it moved. Checked in-process, then with two processes: a
real server that has rendered a page and redirected to its image, and the command line run
from another process, for local storage, a separate static server at ``public_url``, and S3.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest
from PIL import Image

from fileproc_wsgi import maintenance
from fileproc_wsgi.block import Block
from fileproc_wsgi.registrar import Registrar
from support import S3_CREDENTIALS, DictCache, decode, free_port, halves, http_get, s3_server, serving, write

INTERVAL = 0.2  # source_check_interval in these tests: how long a process may remember


def _settle() -> None:
    time.sleep(INTERVAL * 1.5)


@pytest.fixture
def site(make_site):
    site = make_site(source_check_interval=INTERVAL)
    write(site.media, "photo.png", halves(80, 40))
    return site


def _image_at(site, url: str) -> Image.Image:
    """Follow ``url`` like a browser; the image it leads to (assert it leads to one)."""
    response = site.get(url)
    assert response.status_int == 301, response.text
    response = site.get(response.location.replace("http://localhost", ""))
    assert response.status_int == 200, response.text
    return decode(response.body)


def test_store_generation_moves_with_every_removal_and_only_then(site):
    store = site.store
    first = store.generation()
    representation = site.registrar.register("photo.png | fit 20x")
    site.make("photo.png | fit 20x")
    store.touch([representation.checksum])
    assert store.generation() == first, "registering, making and touching remove nothing"
    assert maintenance.gc(store, site.app.storage, days=0, now=store.now() + 1).stale == 1
    assert store.generation() == first, "a dry run removes nothing"
    maintenance.gc(store, site.app.storage, days=0, delete=True, now=store.now() + 1)
    assert store.generation() == first + 1
    maintenance.purge(store, site.app.storage, "photo.png")
    assert store.generation() == first + 2
    maintenance.purge(store, site.app.storage, "photo.png")
    assert store.generation() == first + 2, "a purge that finds nothing changes nothing"


def test_a_warm_registrar_registers_again_after_a_purge(site):
    representation = site.registrar.register("photo.png | fit 30x")
    assert _image_at(site, representation.url).size == (30, 15)
    maintenance.purge(site.store, site.app.storage, "photo.png")
    _settle()
    assert site.get(representation.url).status_int == 404, "the redirect is forgotten, the row gone"
    again = site.registrar.register("photo.png | fit 30x")
    assert again.url == representation.url, "the same source: the same URL, registered again"
    assert _image_at(site, again.url).size == (30, 15)


def test_a_template_block_renders_again_after_a_purge(site):
    block = Block([])
    rendition = block.render(site.registrar, "photo.png | fit 24x", [], strict=True)
    assert _image_at(site, rendition.url).size == (24, 12)
    maintenance.purge(site.store, site.app.storage, "photo.png")
    _settle()
    again = block.render(site.registrar, "photo.png | fit 24x", [], strict=True)
    assert _image_at(site, again.url).size == (24, 12)


def test_the_shared_cache_does_not_answer_for_a_purged_row(site):
    shared = DictCache()
    first = Registrar(site.config, store=site.store, cache=shared)
    representation = first.register("photo.png | fit 26x")
    maintenance.purge(site.store, site.app.storage, "photo.png")
    # Another app server, or this one restarted: cold, but the shared cache has the answer.
    second = Registrar(site.config, store=site.store, cache=shared)
    again = second.register("photo.png | fit 26x")
    assert again.url == representation.url
    assert _image_at(site, again.url).size == (26, 13), "the row was written again"


def test_a_redirect_to_a_removed_result_is_forgotten(make_site):
    site = make_site(source_check_interval=INTERVAL, public_url="https://cdn.example.com/results/")
    write(site.media, "photo.png", halves(80, 40))
    representation = site.registrar.register("photo.png | fit 28x")
    first = site.get(representation.url)
    key = site.store.get(representation.checksum).result_key
    assert first.location == f"https://cdn.example.com/results/{key}"
    maintenance.gc(site.store, site.app.storage, days=0, delete=True, now=site.store.now() + 1)
    assert not site.app.storage.exists(key)
    _settle()
    again = site.get(representation.url)
    assert again.status_int == 301 and again.location == first.location
    assert site.app.storage.exists(key), "made again before redirecting to it"


def test_remembered_answers_survive_a_store_that_cannot_be_read(site, monkeypatch, caplog):
    representation = site.registrar.register("photo.png | fit 22x")
    assert site.get(representation.url).status_int == 301

    def down():
        raise ConnectionError("the database is down")

    monkeypatch.setattr(site.store, "generation", down)
    _settle()
    assert site.registrar.register("photo.png | fit 22x") is representation
    assert site.get(representation.url).status_int == 301, "the warm redirect still answers"
    assert "could not read the store's generation (the database is down)" in caplog.text


# ------------------------------------------------------------------------- two processes

_SERVER = """
import socketserver
import sys
import wsgiref.simple_server

from fileproc_wsgi import Config, FileProcessor
from fileproc_wsgi.registrar import Registrar
from fileproc_wsgi.block import Block

config = Config.from_env()
registrar = Registrar(config)
block = Block([])


def page(environ, start_response):
    rendition = block.render(registrar, "photo.png | fit 40x", [], strict=True)
    body = (rendition.html if rendition is not None else "no image").encode()
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(body)))])
    return [body]


class Server(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
    daemon_threads = True


class Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args):
        pass


application = FileProcessor(page, config, registrar=registrar)
server = wsgiref.simple_server.make_server(
    "127.0.0.1", int(sys.argv[1]), application, server_class=Server, handler_class=Quiet
)
server.serve_forever()
"""


def _get(url: str):
    """(status, headers, body) of a GET of an absolute http://127.0.0.1 URL."""
    match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/.*)", url)
    assert match, url
    return http_get(int(match.group(1)), match.group(2))


def _page_image(port: int) -> tuple[str, int, Image.Image]:
    """Render the page and follow its image URL to the end, as a browser would:
    (the URL, the status it answered, the image)."""
    status, _, page = http_get(port, "/")
    assert status == 200
    url = re.search(r'src="([^"]+)"', page.decode()).group(1)
    first, image = _follow(port, url)
    return url, first, image


def _follow(port: int, url: str) -> tuple[int, Image.Image]:
    """(the first status, the image at the end) of a URL a page printed."""
    absolute = f"http://127.0.0.1:{port}{url}" if url.startswith("/") else url
    status, headers, body = _get(absolute)
    first = status
    if status == 301:
        location = headers["Location"]
        if location.startswith("/"):
            location = f"http://127.0.0.1:{port}{location}"
        status, _, body = _get(location)
        assert status == 200, f"{location} answered {status}"
    assert status == 200, f"{url} answered {status}: {body[:200]!r}"
    return first, Image.open(io.BytesIO(body))


@contextlib.contextmanager
def _static_server(directory, port: int):
    """A separate web server for the results directory, as nginx or a CDN would be."""
    directory.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(directory)]
    with serving(command, port=port, cwd=directory):
        yield


@contextlib.contextmanager
def _s3_bucket(tmp_path):
    """moto's S3 server with a new bucket whose results are public; the FILEPROC_* for it."""
    import boto3

    with s3_server(tmp_path) as endpoint:
        name = f"fp-{uuid.uuid4().hex[:12]}"
        client = boto3.session.Session(**_boto_credentials()).client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=name)
        public = {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{name}/*",
        }
        client.put_bucket_policy(
            Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [public]})
        )
        yield {"FILEPROC_STORAGE": f"s3://{name}/results", "FILEPROC_S3_ENDPOINT_URL": endpoint}


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    }


@pytest.mark.parametrize("storage", ["local", "public-url", "s3"])
@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["purge", "photo.png"], id="purge"),
        pytest.param(["gc", "--days", "0", "--delete"], id="gc-delete"),
    ],
)
@pytest.mark.integration
def test_after_a_removal_by_another_process_the_page_leads_to_a_real_image(tmp_path, storage, command):
    media = tmp_path / "media"
    media.mkdir()
    write(media, "photo.png", halves(80, 40))
    port = free_port()
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith(("FILEPROC_", "AWS_"))},
        **S3_CREDENTIALS,
        "FILEPROC_SOURCE_ROOTS": f"default={media}",
        "FILEPROC_DATABASE_URL": f"sqlite:///{tmp_path / 'fp.db'}",
        "FILEPROC_STORAGE": str(tmp_path / "results"),
        "FILEPROC_SOURCE_CHECK_INTERVAL": str(INTERVAL),
    }
    (tmp_path / "server.py").write_text(_SERVER)
    with contextlib.ExitStack() as running:
        if storage == "public-url":
            static = free_port()
            running.enter_context(_static_server(tmp_path / "results", static))
            env["FILEPROC_PUBLIC_URL"] = f"http://127.0.0.1:{static}/"
        elif storage == "s3":
            env.update(running.enter_context(_s3_bucket(tmp_path)))  # redirects to the objects' own URLs
        running.enter_context(
            serving(
                [sys.executable, str(tmp_path / "server.py"), str(port)], port=port, cwd=tmp_path, env=env
            )
        )
        url, status, image = _page_image(port)
        assert (status, image.size) == (301, (40, 20)), "cold: the /_fp/ URL, made on request"
        final, status, image = _page_image(port)
        assert final != url and status == 200, "warm: the result's own URL, no redirect"
        assert image.size == (40, 20)

        # gc counts a result as unused from its last recorded request: make that the past.
        time.sleep(0.05)
        removed = subprocess.run(
            [sys.executable, "-m", "fileproc_wsgi.cli", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert removed.returncode == 0, removed.stderr
        assert re.search(r"\b1 row\b|: 1 \(", removed.stdout), removed.stdout

        # A page cached before the removal holds the final URL. The middleware serves local
        # results and makes a registered one again when its file is gone (gc keeps the
        # row); a purged row, a web server's or a bucket's missing file are a 404.
        status, _, _ = _get(final if final.startswith("http") else f"http://127.0.0.1:{port}{final}")
        assert status == (200 if (storage, command[0]) == ("local", "gc") else 404)

        _settle()
        again, status, image = _page_image(port)
        assert image.size == (40, 20), "the page leads to a real image, not to what was removed"
        assert (again, status) == (url, 301), "the result is gone: the page prints the /_fp/ URL again"
