"""The S3 client both S3 result storage and ``s3://`` sources use, and what S3 errors mean.

One place makes the boto3 client (the endpoint as boto3 resolved it, however given: the
``s3_endpoint_url`` setting, ``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ``endpoint_url``
in the AWS config file; few, quick retries) and reads an error's S3 code, so storage and
sources agree on what "missing" is: :data:`MISSING` is an object that is not there. A
missing *bucket* is the storage's configuration gone wrong (a 503), but for a source it
is a source that does not exist, which :mod:`fileproc_wsgi.sources.s3` adds itself.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from .errors import ConfigError

MISSING = ("404", "NoSuchKey", "NotFound")
EXISTS = ("412", "PreconditionFailed")
UNSUPPORTED = ("501", "NotImplemented")


def make_client(endpoint_url: str, region: str, *, read_timeout: float, what: str):
    """A boto3 S3 client for an endpoint (AWS when empty) and region, shared by storage and
    sources; credentials come from the standard AWS environment and files.

    A client is thread-safe once made (a session is not, hence a session of its own). Few,
    quick retries: a request waiting on a dead endpoint holds a worker, and the job is
    tried again after its backoff anyway.
    """
    try:
        import boto3
        from botocore.config import Config as BotoConfig
    except ImportError:
        raise ConfigError(f"{what}: s3:// needs boto3 (pip install 'fileproc_wsgi[s3]')") from None

    def client_for(endpoint: str):
        return boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or None,
            region_name=region or None,
            config=BotoConfig(
                signature_version="s3v4",
                connect_timeout=5,
                read_timeout=read_timeout,
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path" if endpoint else "auto"},
            ),
        )

    client = client_for(endpoint_url)
    # boto3 finds an endpoint by itself too (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3,
    # endpoint_url in the AWS config file): a server other than AWS's, however it was
    # given, is addressed by path like one given in s3_endpoint_url.
    if not endpoint_url and custom_endpoint(client):
        client = client_for(custom_endpoint(client))
    return client


def custom_endpoint(client) -> str:
    """The endpoint ``client`` talks to, unless it is AWS's own ('' then): results on it
    are linked to by path, ``<endpoint>/<bucket>/<key>``."""
    url = client.meta.endpoint_url.rstrip("/")
    host = urlsplit(url).hostname or ""
    return "" if host.endswith((".amazonaws.com", ".amazonaws.com.cn")) else url


def error_code(error: Exception) -> str:
    """The S3 error code of a ClientError ('' for anything else)."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))
