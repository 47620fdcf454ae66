"""S3 result storage against a real S3-compatible HTTP server (moto_server, its own process).

Objects are read back over HTTP as a browser following the redirect would; the site's
storage is the only boto3 client in play apart from the fixture making the bucket.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import uuid
from urllib.parse import urlsplit

import pytest

from fileproc_wsgi.storage import open_storage, result_key
from fileproc_wsgi.storage.s3 import S3Storage
from support import S3_CREDENTIALS, decode, free_port, halves, s3_server, write

CHECKSUM = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture
def bucket(s3_endpoint, monkeypatch):
    """A new empty bucket per test, with credentials in the environment as AWS tools expect."""
    import boto3

    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    name = f"fp-{uuid.uuid4().hex[:12]}"
    client = boto3.session.Session().client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=name)
    # results/ is public, as a bucket behind redirects to plain URLs must be; private/ is not.
    statement = {
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": f"arn:aws:s3:::{name}/results/*",
    }
    client.put_bucket_policy(
        Bucket=name, Policy=json.dumps({"Version": "2012-10-17", "Statement": [statement]})
    )
    return name


@pytest.fixture(params=["s3_endpoint_url", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS config file"])
def endpoint_given(request, s3_endpoint, tmp_path, monkeypatch):
    """The endpoint, given each way boto3 reads one: every test of this module runs with
    each, and only the first is fileproc_wsgi's own setting."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)
    way = request.param
    if way == "s3_endpoint_url":
        return {"s3_endpoint_url": s3_endpoint}
    if way == "AWS config file":
        (tmp_path / "aws-config").write_text(f"[default]\nendpoint_url = {s3_endpoint}\n")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    else:
        monkeypatch.setenv(way, s3_endpoint)
    return {}


@pytest.fixture
def s3_site(make_site, bucket, endpoint_given):
    def make(**settings):
        settings.setdefault("storage", f"s3://{bucket}/results")
        settings = {**endpoint_given, **settings}
        site = make_site(**settings)
        write(site.media, "photo.png", halves(60, 40))
        return site

    return make


def fetch(url: str):
    """(status, headers, body) of a GET to an absolute http:// URL."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_a_result_is_stored_in_the_bucket_and_redirected_to(s3_site, bucket, s3_endpoint):
    site = s3_site()
    assert isinstance(site.app.storage, S3Storage) and not site.app.storage.local
    representation = site.registrar.register("photo.png | fit 30x | format webp")
    response = site.get(representation.url)
    assert response.status_int == 301, response.text
    job = site.store.get(representation.checksum)
    assert response.location == f"{s3_endpoint}/{bucket}/results/{job.result_key}"

    status, headers, body = fetch(response.location)
    assert status == 200
    assert headers["content-type"] == "image/webp"
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    image = decode(body)
    assert (image.width, image.height) == (representation.width, representation.height) == (30, 20)
    assert site.get(f"{site.config.prefix}/files/{job.result_key}").status_int == 404, (
        "nothing served locally"
    )


def test_a_finished_object_is_never_overwritten(s3_site, s3_endpoint, bucket):
    storage = open_storage(s3_site().config)
    key = result_key(CHECKSUM, "png")
    assert not storage.exists(key)
    storage.put(key, b"first")
    storage.put(key, b"second")  # a stalled worker finishing late
    assert storage.exists(key)
    assert fetch(f"{s3_endpoint}/{bucket}/results/{key}")[2] == b"first"

    # Without conditional writes the fallback looks first, and still keeps the first.
    storage._conditional = False
    storage.put(key, b"third")
    assert fetch(f"{s3_endpoint}/{bucket}/results/{key}")[2] == b"first"


def test_a_presigned_url_is_a_temporary_redirect_never_cached(s3_site, s3_endpoint, bucket):
    site = s3_site(storage=f"s3://{bucket}/private", presign_seconds=300)
    representation = site.registrar.register("photo.png | fit 30x")
    first = site.get(representation.url)
    assert first.status_int == 302, first.text
    assert first.headers["Cache-Control"] == "no-store"
    assert "X-Amz-Signature=" in first.location and "X-Amz-Expires=300" in first.location
    assert representation.url not in site.app._redirects, "an expiring URL must not be remembered"
    status, headers, body = fetch(first.location)
    assert status == 200 and headers["content-type"] == "image/png"
    assert decode(body).size == (30, 20)

    again = site.get(representation.url)
    assert again.status_int == 302 and again.headers["Cache-Control"] == "no-store"
    assert fetch(again.location)[0] == 200
    job = site.store.get(representation.checksum)
    assert fetch(f"{s3_endpoint}/{bucket}/private/{job.result_key}")[0] == 403, "private without a signature"


def test_a_temporary_redirect_status_is_kept_for_presigned_urls(s3_site):
    site = s3_site(presign_seconds=60, redirect_status=307)
    response = site.get(site.registrar.register("photo.png | fit 30x").url)
    assert response.status_int == 307 and response.headers["Cache-Control"] == "no-store"


def test_a_public_url_or_cdn_is_the_redirect_target(s3_site):
    site = s3_site(public_url="https://cdn.example.com/results/", presign_seconds=300)
    representation = site.registrar.register("photo.png | fit 30x")
    response = site.get(representation.url)
    job = site.store.get(representation.checksum)
    assert response.status_int == 301
    assert response.location == f"https://cdn.example.com/results/{job.result_key}"
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert representation.url in site.app._redirects
    assert site.app.storage.exists(job.result_key)


def test_an_unreachable_endpoint_is_a_503_and_retried_after_backoff(s3_site, s3_endpoint, monkeypatch):
    site = s3_site(s3_endpoint_url=f"http://127.0.0.1:{free_port()}")
    representation = site.registrar.register("photo.png | fit 30x")
    response = site.get(representation.url)
    assert response.status_int == 503
    assert response.headers["Retry-After"] and response.headers["Cache-Control"] == "no-store"
    assert response.text.startswith("result storage unavailable: cannot reach the S3 endpoint")
    assert "Traceback" not in response.text and len(response.text.splitlines()) == 1
    job = site.store.get(representation.checksum)
    assert job.state == "failed" and job.retry_at is not None

    # The endpoint comes back; the job waits for its backoff, then is made.
    storage = S3Storage(dataclasses.replace(site.config, s3_endpoint_url=s3_endpoint))
    site.app.storage = site.app.processor.storage = storage
    assert site.get(representation.url).status_int == 503, "backs off instead of retrying at once"
    monkeypatch.setattr(site.store, "_clock", lambda: job.retry_at + 1)
    assert site.get(representation.url).status_int == 301


def test_a_missing_bucket_or_denied_access_is_a_one_line_503(s3_site, monkeypatch):
    site = s3_site(storage="s3://no-such-bucket-here/results")
    response = site.get(site.registrar.register("photo.png | fit 30x").url)
    assert response.status_int == 503 and response.headers["Retry-After"]
    assert response.text == "result storage unavailable: bucket 'no-such-bucket-here' does not exist\n"

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_S3_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no wait on an instance metadata probe
    anonymous = s3_site(database_url=f"sqlite:///{site.root / 'other.db'}")
    response = anonymous.get(anonymous.registrar.register("photo.png | fit 31x").url)
    assert response.status_int == 503
    assert response.text.startswith("result storage unavailable: no S3 credentials")
