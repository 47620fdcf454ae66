"""Once a result is made, pages print its own URL, and a page's new results start at once.

What a visitor's browser sees: a thumbnail already made costs no redirect. Rendered
through Django and Jinja2, from a registrar paired with the middleware and from one in
another process, from a remote registrar, on local files and on a real S3 server
(moto); never a presigned URL. A page's new registrations are made in the background
as soon as the page has written them, before any request for them.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request

import boto3
import pytest
from django.test.utils import override_settings
from jinja2 import DictLoader, Environment
from webob import Request

import fileproc_django
from fileproc_jinja2 import FileProcessorExtension
from fileproc_wsgi import Config, FileProcessor, remote
from fileproc_wsgi.registrar import Registrar
from support import decode, free_port, halves, s3_server, write
from test_django import fileprocessor, media, render  # noqa: F401 - fixtures; configures Django once

_SRC = re.compile(r'src="([^"]+)"')
_SRCSET_URL = re.compile(r'([^\s",]+) \d+w')


def _config(tmp_path, **settings) -> Config:
    folder = tmp_path / "media"
    if not (folder / "photo.jpg").exists():
        write(folder, "photo.jpg", halves(800, 600), quality=90)
    settings.setdefault("database_url", f"sqlite:///{tmp_path / 'fp.db'}")
    settings.setdefault("storage", str(tmp_path / "results"))
    settings.setdefault("source_roots", {"default": str(folder)})
    settings.setdefault("background_jobs", 0)  # made on request, unless a test says otherwise
    return Config(**settings)


def _get(app, url: str):
    response = Request.blank(url).get_response(app)
    response.body  # noqa: B018 - read it all, so files get closed
    return response


def _urls(html: str) -> list[str]:
    """Every image URL of a page: ``src`` and each ``srcset`` candidate."""
    return _SRC.findall(html) + _SRCSET_URL.findall(html)


def _is_fp_url(url: str) -> bool:
    return re.fullmatch(r"/_fp/[0-9a-f]{32}\.[a-z]+", url) is not None


def _jinja2_page(registrar):
    environment = Environment(extensions=[FileProcessorExtension], loader=DictLoader({}))
    environment.fileprocessor_registrar = registrar
    return environment.from_string(
        '{% fileprocessor widths="200,400" formats="webp" %}photo.jpg | fit 400x300{% endfileprocessor %}'
    )


def test_a_jinja2_page_prints_final_urls_once_its_results_are_made(tmp_path):
    registrar = Registrar(_config(tmp_path))
    app = FileProcessor(None, registrar.config, registrar=registrar)
    page = _jinja2_page(registrar)
    cold = page.render()
    assert "<picture>" in cold
    urls = _urls(cold)
    assert len(set(urls)) == 4 and all(_is_fp_url(url) for url in urls)
    for url in set(urls):
        assert _get(app, url).status_int == 301

    warm = page.render()
    finals = _urls(warm)
    assert len(finals) == len(urls) and not any(_is_fp_url(url) for url in finals)
    for before, after in zip(urls, finals, strict=True):
        checksum = before.rsplit("/", 1)[1]
        assert after.endswith("/" + checksum), "the same result, at its own URL"
        response = _get(app, after)
        assert response.status_int == 200, "no redirect: the file itself"
        assert decode(response.body).format in ("JPEG", "WEBP")
    assert page.render() == warm, "stays a dictionary lookup"


def test_a_django_page_prints_final_urls_once_its_results_are_made(tmp_path, fileprocessor):  # noqa: F811
    block = "{% fileprocessor %}photo.jpg | fit 300x{% endfileprocessor %}"
    with override_settings(FILEPROCESSOR={**fileprocessor, "background_jobs": 0}):
        app = fileproc_django.wrap(None)
        (cold,) = _SRC.findall(render(block))
        assert _is_fp_url(cold)
        redirect = _get(app, cold)
        assert redirect.status_int == 301
        (warm,) = _SRC.findall(render(block))
        assert warm == redirect.location, "the page now points where the redirect did"
        assert decode(_get(app, warm).body).size == (300, 180)


def test_a_registrar_in_another_process_learns_within_the_interval(tmp_path):
    config = _config(tmp_path, source_check_interval=0.2)
    renders = Registrar(config)  # a template host: no middleware in its process
    serves = FileProcessor(None, config)  # the processing host
    text = "photo.jpg | fit 120x"
    cold = renders.register(text)
    assert _get(serves, cold.url).status_int == 301
    assert renders.register(text).url == cold.url, "asked at most once a second"
    time.sleep(1.05)
    warm = renders.register(text)
    assert warm.url == f"/_fp/files/{cold.checksum[:2]}/{cold.checksum}.jpg"
    assert renders.register(text) is warm


def test_a_result_never_requested_keeps_its_fp_url(tmp_path):
    registrar = Registrar(_config(tmp_path, source_check_interval=0))
    first = registrar.register("photo.jpg | fit 50x")
    time.sleep(1.05)
    assert registrar.register("photo.jpg | fit 50x").url == first.url


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({"final_urls": False}, id="final_urls-off"),
        pytest.param({"serve_results": True}, id="serve"),
    ],
)
def test_final_urls_can_be_turned_off(tmp_path, settings):
    registrar = Registrar(_config(tmp_path, **settings))
    app = FileProcessor(None, registrar.config, registrar=registrar)
    cold = registrar.register("photo.jpg | fit 50x")
    assert _get(app, cold.url).status_int in (200, 301)
    assert registrar.register("photo.jpg | fit 50x").url == cold.url


@contextlib.contextmanager
def _bucket(tmp_path, *, public: bool):
    with s3_server(tmp_path) as endpoint:
        name = f"final-{free_port()}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)
        if public:
            anyone = {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{name}/*",
            }
            policy = {"Version": "2012-10-17", "Statement": [anyone]}
            client.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))
        yield endpoint, name


@pytest.fixture
def aws(monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.integration
def test_s3_results_are_printed_at_their_bucket_url(tmp_path, aws):
    with _bucket(tmp_path, public=True) as (endpoint, bucket):
        config = _config(tmp_path, storage=f"s3://{bucket}/thumbs", s3_endpoint_url=endpoint)
        registrar = Registrar(config)
        app = FileProcessor(None, config, registrar=registrar)
        cold = registrar.register("photo.jpg | fit 64x")
        redirect = _get(app, cold.url)
        assert redirect.status_int == 301
        warm = registrar.register("photo.jpg | fit 64x")
        assert warm.url == redirect.location
        assert warm.url.startswith(f"{endpoint}/{bucket}/thumbs/")
        with urllib.request.urlopen(warm.url, timeout=10) as response:  # the real S3 server
            assert decode(response.read()).size == (64, 48)


@pytest.mark.integration
def test_presigned_results_keep_their_fp_url(tmp_path, aws):
    with _bucket(tmp_path, public=False) as (endpoint, bucket):
        storage = f"s3://{bucket}/thumbs"
        config = _config(tmp_path, storage=storage, s3_endpoint_url=endpoint, presign_seconds=60)
        registrar = Registrar(config)
        app = FileProcessor(None, config, registrar=registrar)
        cold = registrar.register("photo.jpg | fit 64x")
        assert _get(app, cold.url).status_int == 302
        assert registrar.register("photo.jpg | fit 64x").url == cold.url, "a presigned URL expires"


def test_a_remote_registrar_prints_the_servers_final_url(tmp_path, monkeypatch):
    secret = "s" * 32
    config = _config(tmp_path, secret=secret)
    server = FileProcessor(None, config)
    monkeypatch.setattr(remote, "PENDING_TTL", 0.2)

    def post(client, texts):  # the server's register endpoint, through WSGI rather than a socket
        body = json.dumps({"texts": texts}).encode()
        stamp = str(int(time.time()))
        request = Request.blank("/_fp/register", method="POST", body=body)
        request.headers[remote.TIMESTAMP_HEADER] = stamp
        request.headers[remote.SIGNATURE_HEADER] = remote.sign(secret, stamp, body)
        response = request.get_response(server)
        assert response.status_int == 200, response.text
        return json.loads(response.body)["results"]

    monkeypatch.setattr(remote.RemoteRegistrar, "_post", post)
    client = remote.RemoteRegistrar("http://processing.example/_fp", secret=secret, ttl=60)
    cold = client.register("photo.jpg | fit 90x")
    assert cold.url == f"http://processing.example/_fp/{cold.checksum}.jpg"
    assert _get(server, f"/_fp/{cold.checksum}.jpg").status_int == 301
    time.sleep(0.25)
    warm = client.register("photo.jpg | fit 90x")
    assert warm.url == f"http://processing.example/_fp/files/{cold.checksum[:2]}/{cold.checksum}.jpg"


def test_rendering_a_final_url_counts_as_a_use_for_gc(tmp_path):
    registrar = Registrar(_config(tmp_path))
    app = FileProcessor(None, registrar.config, registrar=registrar)
    cold = registrar.register("photo.jpg | fit 40x")
    assert _get(app, cold.url).status_int == 301
    assert app.flush_access() == 1
    before = registrar.store.get(cold.checksum).accessed_at
    time.sleep(0.02)
    registrar.register("photo.jpg | fit 40x")  # a page printing its own URL: no request to /_fp/
    assert registrar.flush_access() == 1
    assert registrar.store.get(cold.checksum).accessed_at > before
    assert registrar.flush_access() == 0, "nothing printed since"


def test_a_pages_new_results_are_made_before_anyone_asks(tmp_path):
    registrar = Registrar(_config(tmp_path, background_jobs=2))
    page = _jinja2_page(registrar)

    def application(environ, start_response):
        body = page.render().encode()
        assert registrar.store.count_by_state() == {}, "rendering writes and makes nothing"
        start_response("200 OK", [("Content-Type", "text/html")])
        return [body]

    app = FileProcessor(application, registrar.config, registrar=registrar)
    html = _get(app, "/").text
    deadline = time.monotonic() + 30
    while set(registrar.store.count_by_state()) != {"done"}:
        assert time.monotonic() < deadline, registrar.store.count_by_state()
        time.sleep(0.05)
    assert app.background.pending() == 0
    finals = _urls(page.render())
    assert not any(_is_fp_url(url) for url in finals), "made in this process: the page knows at once"
    for url in set(_urls(html)):
        assert _get(app, url).status_int == 301, "and a request finds it made"


def test_the_background_queue_skips_what_is_no_longer_pending(tmp_path):
    registrar = Registrar(_config(tmp_path, background_jobs=1))
    app = FileProcessor(None, registrar.config, registrar=registrar)
    with registrar.batch():
        made = registrar.register("photo.jpg | fit 30x")
        assert _get(app, made.url).status_int == 404, "not written before the batch ends"
    assert _get(app, made.url).status_int == 301

    def settle():
        deadline = time.monotonic() + 10
        while app.background.pending():
            assert time.monotonic() < deadline
            time.sleep(0.02)

    settle()
    started = registrar.store.get(made.checksum).completed_at
    assert app.background.submit([made.checksum, "0" * 32, made.checksum]) == 2, "deduplicated"
    settle()
    assert registrar.store.get(made.checksum).completed_at == started, "made once"
