"""What registering a source in a remote storage costs: the header read through a backend.

What it measures
    A storage root (``source_roots={"default": "bench:photos"}``) whose backend reads a
    bucket of a real S3-compatible server on 127.0.0.1 (moto_server, started here) with
    boto3, registering an 8-megapixel JPEG (about 2.5 MB):

      version   ``StorageSource.version()``: one HEAD (ETag and size)
      stream    ``open`` + ``engines.probe``: the backend hands over boto3's streaming
                body; the header read fetches the chunks it reads (64 KiB each)
      whole     the same, with a backend that downloads the object before handing it
                over (what django-storages' ``S3File`` does on its first read)
      local     the same JPEG under a directory root, for comparison
      register  a cold ``Registrar.register`` through the streaming backend: version,
                header read and the SQLite insert

    One untimed warm-up each, then ``--runs`` rounds; median and best in milliseconds.

Usage: ``python bench/storage_header_read.py [--runs N]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # measure this working tree, installed or not
sys.path.insert(1, os.path.join(ROOT, "tests"))

from PIL import Image, ImageFilter  # noqa: E402

from fileproc_wsgi import engines, sources  # noqa: E402
from fileproc_wsgi.config import Config  # noqa: E402
from fileproc_wsgi.registrar import Registrar  # noqa: E402
from support import S3_CREDENTIALS, s3_server  # noqa: E402 - the tests' S3 server


class BucketStorage:
    """A storage over one bucket; ``whole`` downloads an object before handing it over."""

    def __init__(self, client, bucket: str, *, whole: bool = False):
        self.client, self.bucket, self.whole = client, bucket, whole
        self.label = f"bench bucket {bucket!r}"
        self.fetched = 0

    def local_directory(self):
        return None

    def version(self, name: str) -> str:
        head = self.client.head_object(Bucket=self.bucket, Key=name)
        return f"{head['ETag'].strip(chr(34))}:{head['ContentLength']}"

    def open(self, name: str):
        body = self.client.get_object(Bucket=self.bucket, Key=name)["Body"]
        if not self.whole:
            return _Counted(body, self)
        with contextlib.closing(body):
            return io.BytesIO(body.read())


class _Counted:
    """boto3's body, counting what the reader took from it."""

    def __init__(self, body, storage: BucketStorage):
        self.body, self.storage = body, storage

    def read(self, size: int = -1) -> bytes:
        chunk = self.body.read(size)
        self.storage.fetched += len(chunk)
        return chunk

    def close(self) -> None:
        self.body.close()


def photo() -> bytes:
    noise = Image.effect_noise((3464, 2309), 60).filter(ImageFilter.GaussianBlur(1))
    buffer = io.BytesIO()
    Image.merge("RGB", (noise, noise.rotate(180), noise)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def timed(call, runs: int) -> tuple[float, float]:
    call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs
    os.environ.update(S3_CREDENTIALS)
    import boto3

    data = photo()
    with tempfile.TemporaryDirectory() as directory, s3_server(directory) as endpoint:
        client = boto3.session.Session().client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="photos")
        client.put_object(Bucket="photos", Key="a.jpg", Body=data)
        with open(os.path.join(directory, "a.jpg"), "wb") as file:
            file.write(data)

        def probe_of(resolver):
            def run():
                source = resolver.resolve("a.jpg")
                with source.open(100 * 1024 * 1024) as handle:
                    engines.probe(handle, source.reference)

            return run

        streaming = BucketStorage(client, "photos")
        sources.register_storage_kind("bench", lambda argument: streaming)
        sources.register_storage_kind(
            "benchwhole", lambda argument: BucketStorage(client, "photos", whole=True)
        )
        remote = sources.Sources({"default": "bench:photos"})
        rows = {
            "version": timed(lambda: remote.resolve("a.jpg").version(), runs),
            "stream": timed(probe_of(remote), runs),
            "fetched": (streaming.fetched / (runs + 1) / 1024, 0.0),
            "whole": timed(probe_of(sources.Sources({"default": "benchwhole:photos"})), runs),
            "local": timed(probe_of(sources.Sources({"default": directory})), runs),
        }
        config = Config(
            database_url=f"sqlite:///{directory}/fileproc.db",
            storage=os.path.join(directory, "results"),
            source_roots={"default": "bench:photos"},
        )
        registrar = Registrar(config)
        sizes = iter(range(10, 10_000))
        rows["register"] = timed(lambda: registrar.register(f"a.jpg | fit {next(sizes)}x"), runs)
        registrar.close()
    print(f"source: {len(data) / 1e6:.1f} MB JPEG, {runs} runs; milliseconds")
    print(f"{'':10}{'median':>8}{'best':>8}")
    for name, (median, best) in rows.items():
        if name == "fetched":
            print(f"  (the header read fetched {median:.0f} KiB of the object)")
        else:
            print(f"{name:10}{median:8.1f}{best:8.1f}")


if __name__ == "__main__":
    main()
