"""``s3://bucket/key`` sources against a real S3-compatible HTTP server (moto_server, its own process)."""

from __future__ import annotations

import io
import uuid

import pytest

from fileproc_wsgi.config import Config
from fileproc_wsgi.errors import LimitError, SourceError, SourceNotFoundError, UnavailableError
from fileproc_wsgi.sources import Sources
from fileproc_wsgi.sources.s3 import S3Source
from support import S3_CREDENTIALS, decode, free_port, halves, s3_server


def _png(width: int = 60, height: int = 40) -> bytes:
    buffer = io.BytesIO()
    halves(width, height).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture
def client(s3_endpoint, monkeypatch):
    import boto3

    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return boto3.session.Session().client("s3", endpoint_url=s3_endpoint)


@pytest.fixture
def bucket(client):
    """A new bucket per test holding photo.png (60x40)."""
    name = f"fp-src-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="photos/photo.png", Body=_png())
    return name


@pytest.fixture
def s3_site(make_site, bucket, s3_endpoint):
    return make_site(allowed_hosts=(bucket,), s3_endpoint_url=s3_endpoint, remote_source_check_interval=0)


def sources(bucket, endpoint, **settings) -> Sources:
    return Sources.for_config(Config(allowed_hosts=(bucket,), s3_endpoint_url=endpoint, **settings))


def test_an_object_is_registered_processed_and_redirected_to(s3_site, bucket):
    text = f"s3://{bucket}/photos/photo.png | fit 30x | format webp"
    representation = s3_site.registrar.register(text)
    assert (representation.width, representation.height) == (30, 20)
    response = s3_site.get(representation.url)
    assert response.status_int == 301, response.text
    result = s3_site.get(response.location)
    assert result.status_int == 200
    image = decode(result.body)
    assert (image.format, image.width, image.height) == ("WEBP", 30, 20)


def test_a_replaced_object_gets_a_new_checksum(s3_site, bucket, client):
    text = f"s3://{bucket}/photos/photo.png | fit 30x"
    first = s3_site.registrar.register(text)
    client.put_object(Bucket=bucket, Key="photos/photo.png", Body=_png(80, 40))
    second = s3_site.registrar.register(text)
    assert second.checksum != first.checksum
    assert (second.width, second.height) == (30, 15)
    response = s3_site.request(text)
    assert decode(response.body).size == (30, 15)


def test_version_is_etag_and_size_without_a_download(bucket, s3_endpoint, client):
    source = sources(bucket, s3_endpoint).resolve(f"s3://{bucket}/photos/photo.png")
    assert isinstance(source, S3Source)
    head = client.head_object(Bucket=bucket, Key="photos/photo.png")
    assert source.version() == f"{head['ETag'].strip(chr(34))}:{len(_png())}"


def test_a_missing_key_is_not_found(bucket, s3_endpoint, s3_site):
    source = sources(bucket, s3_endpoint).resolve(f"s3://{bucket}/photos/missing.png")
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        source.version()
    with pytest.raises(SourceNotFoundError):
        source.open(10**6)
    with pytest.raises(SourceNotFoundError):
        s3_site.registrar.register(f"s3://{bucket}/photos/missing.png | fit 30x")


def test_an_object_over_the_byte_cap_is_refused(bucket, s3_endpoint, client):
    size = len(_png())
    source = sources(bucket, s3_endpoint).resolve(f"s3://{bucket}/photos/photo.png")
    with pytest.raises(LimitError, match=f"has {size} bytes, more than max_source_bytes={size - 1}"):
        source.open(size - 1)
    with source.open(size) as handle:
        assert handle.read() == _png()


def test_registration_refuses_an_object_over_the_cap(make_site, bucket, s3_endpoint):
    site = make_site(allowed_hosts=(bucket,), s3_endpoint_url=s3_endpoint, max_source_bytes=len(_png()) - 1)
    with pytest.raises(LimitError, match="max_source_bytes"):
        site.registrar.register(f"s3://{bucket}/photos/photo.png | fit 30x")


def test_only_buckets_on_allowed_hosts_are_read(bucket, s3_endpoint):
    with pytest.raises(SourceError, match="not enabled"):
        Sources.for_config(Config(s3_endpoint_url=s3_endpoint)).resolve(f"s3://{bucket}/photos/photo.png")
    with pytest.raises(SourceError, match="is not on allowed_hosts"):
        sources("other-bucket", s3_endpoint).resolve(f"s3://{bucket}/photos/photo.png")
    with pytest.raises(SourceError, match="not enabled"):  # patterns never name a bucket
        sources(f"*.{bucket}", s3_endpoint).resolve(f"s3://x.{bucket}/photos/photo.png")
    with pytest.raises(SourceError, match="object key"):
        sources(bucket, s3_endpoint).resolve(f"s3://{bucket}/")


def test_access_denied_is_a_source_error(bucket, s3_endpoint, client):
    import json

    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{bucket}/*",
            }
        ],
    }
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    source = sources(bucket, s3_endpoint).resolve(f"s3://{bucket}/photos/photo.png")
    try:
        with pytest.raises(SourceError, match="access denied"):
            source.open(10**6)
    finally:
        client.delete_bucket_policy(Bucket=bucket)


def test_an_endpoint_that_is_down_is_unavailable(bucket, monkeypatch):
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    down = f"http://127.0.0.1:{free_port()}"
    source = sources(bucket, down).resolve(f"s3://{bucket}/photos/photo.png")
    with pytest.raises(UnavailableError, match="cannot reach the S3 endpoint"):
        source.version()
    with pytest.raises(UnavailableError):
        source.open(10**6)


def test_credentials_set_after_a_worker_started_reach_the_next_job(
    make_site, bucket, s3_endpoint, monkeypatch
):
    # Jobs run in long-lived worker processes: one started before the credentials were
    # set must not make the next S3 job without them.
    site = make_site(allowed_hosts=(bucket,), s3_endpoint_url=s3_endpoint, remote_source_check_interval=0)
    halves(40, 20).save(site.media / "local.png")
    for name in S3_CREDENTIALS:
        monkeypatch.delenv(name)
    assert site.request("local.png | fit 20x").status_int == 200  # a worker without them
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    response = site.get(site.registrar.register(f"s3://{bucket}/photos/photo.png | fit 30x").url)
    assert response.status_int == 301, response.text


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"])
def test_an_endpoint_given_only_in_the_environment_is_the_one_read(
    make_site, bucket, s3_endpoint, monkeypatch, variable
):
    monkeypatch.setenv(variable, s3_endpoint)
    site = make_site(allowed_hosts=(bucket,), remote_source_check_interval=0)
    representation = site.registrar.register(f"s3://{bucket}/photos/photo.png | fit 30x")
    assert (representation.width, representation.height) == (30, 20)
    response = site.get(representation.url)
    assert response.status_int == 301, response.text
    assert decode(site.get(response.location).body).size == (30, 20)

    down = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv(variable, down)  # moved: the next client reads the new one
    with pytest.raises(UnavailableError, match=f"cannot reach the S3 endpoint {down}"):
        sources(bucket, "").resolve(f"s3://{bucket}/photos/photo.png").version()
