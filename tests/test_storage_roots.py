"""Source roots that name a storage ("<kind>:<argument>") instead of a directory.

The backend here is a real implementation of the protocol, over a dict of bytes: what a
storage library would be, without one. It is registered under the kind "memory".
"""

from __future__ import annotations

import io
import os
import sys
import time

import pytest
from PIL import Image

from fileproc_wsgi import sources
from fileproc_wsgi.block import build
from fileproc_wsgi.config import Config
from fileproc_wsgi.errors import (
    ConfigError,
    LimitError,
    SourceError,
    SourceNotFoundError,
    UnavailableError,
)
from fileproc_wsgi.sources import LocalSource, Sources, StorageSource
from fileproc_wsgi.sources import storage as storage_sources
from support import decode, halves


class MemoryStorage:
    """Files kept as bytes; the version is a counter bumped by every save."""

    def __init__(self, label: str = "memory storage 'photos'"):
        self.label = label
        self.files: dict[str, tuple[bytes, int]] = {}
        self.saves = 0
        self.opened: list[str] = []
        self.versions_asked = 0
        self.failure: Exception | None = None  # raised by version() and open() when set
        self.breaks_after: int | None = None  # bytes a stream gives before the line drops
        self.declared_size: int | None = None  # the size a stream says it has, when it lies

    def save(self, name: str, data: bytes) -> None:
        self.saves += 1
        self.files[name] = (data, self.saves)

    def local_directory(self) -> str | None:
        return None

    def version(self, name: str) -> str:
        self.versions_asked += 1
        if self.failure is not None:
            raise self.failure
        try:
            data, saved = self.files[name]
        except KeyError:
            raise SourceNotFoundError(name) from None
        return f"{len(data)}:{saved}"

    def open(self, name: str):
        self.opened.append(name)
        if self.failure is not None:
            raise self.failure
        try:
            data = self.files[name][0]
        except KeyError:
            raise FileNotFoundError(name) from None
        if self.breaks_after is not None:
            return _Breaking(data, self.breaks_after)
        return _File(data, size=len(data) if self.declared_size is None else self.declared_size)


class _File(io.BytesIO):
    """What Django's storages give: a file object that says its size."""

    def __init__(self, data: bytes, *, size: int):
        super().__init__(data)
        self.size = size


class _Breaking(io.RawIOBase):
    """A download whose connection drops after ``limit`` bytes."""

    def __init__(self, data: bytes, limit: int):
        self._data, self._limit, self._position = data, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._position >= self._limit:
            raise ConnectionResetError(104, "Connection reset by peer")
        chunk = self._data[self._position : min(self._limit, self._position + len(buffer))]
        buffer[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)


def noise_jpeg(width: int = 800, height: int = 800) -> bytes:
    """A JPEG far larger than one read chunk: random pixels do not compress."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def jpeg(width: int = 600, height: int = 400, **colours) -> bytes:
    buffer = io.BytesIO()
    halves(width, height, **colours).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def storage():
    """A MemoryStorage behind the roots "memory:photos" while the test runs."""
    backend = MemoryStorage()
    opened = []

    def opener(argument: str):
        opened.append(argument)
        if argument != "photos":
            raise LookupError(f"no storage called {argument!r}")
        return backend

    sources.register_storage_kind("memory", opener)
    backend.opener_calls = opened
    yield backend
    storage_sources._openers.pop("memory", None)


@pytest.fixture
def make_storage_site(make_site):
    """Sites (tests/support.py) whose default root is the storage "memory:photos"."""

    def make(**settings):
        settings.setdefault("source_roots", {"default": "memory:photos"})
        return make_site(**settings)

    return make


# Configuration


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        pytest.param("django:default", True, id="django-alias"),
        pytest.param("django:blog.Photo.image", True, id="django-field"),
        pytest.param("memory:photos", True, id="other-kind"),
        pytest.param("C:\\media", False, id="windows-drive"),
        pytest.param("media", False, id="relative-directory"),
        pytest.param("http://example.com/media", False, id="url-is-not-a-kind"),
    ],
)
def test_config_keeps_storage_roots_verbatim_and_makes_directories_absolute(value, kept):
    config = Config(source_roots={"media": value})
    if kept:
        assert config.source_roots["media"] == value
    else:
        assert os.path.isabs(config.source_roots["media"])


@pytest.mark.parametrize("value", ["django:", "django:  "])
def test_config_refuses_a_storage_root_without_argument(value):
    with pytest.raises(ConfigError, match=r"root 'media' names a django storage without saying which"):
        Config(source_roots={"media": value})


def test_register_storage_kind_refuses_bad_kinds():
    with pytest.raises(ConfigError, match="two or more lower-case letters"):
        sources.register_storage_kind("C", lambda argument: None)


# Resolving


def test_unregistered_kind_names_the_root_and_what_provides_it(monkeypatch):
    monkeypatch.delitem(storage_sources._openers, "django", raising=False)  # fileproc_django may have run
    resolver = Sources({"media": "django:default"})
    with pytest.raises(ConfigError) as caught:
        resolver.resolve("media:photos/a.jpg")
    assert str(caught.value) == (
        "source 'media:photos/a.jpg': root 'media' names a django storage; this process has not "
        "loaded fileproc_django (add it to INSTALLED_APPS, or run `manage.py fileproc`)"
    )


def test_the_opener_is_called_once_per_sources(storage):
    storage.save("a.jpg", jpeg())
    resolver = Sources({"default": "memory:photos"})
    first = resolver.resolve("a.jpg")
    resolver.resolve("a.jpg")
    assert isinstance(first, StorageSource)
    assert (first.reference, first.name) == ("a.jpg", "a.jpg")
    assert storage.opener_calls == ["photos"]


def test_an_opener_that_fails_is_a_config_error_naming_the_root(storage):
    resolver = Sources({"media": "memory:nothing"})
    with pytest.raises(ConfigError, match=r"root 'media' \('memory:nothing'\) cannot be opened: no storage"):
        resolver.resolve("media:a.jpg")


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        pytest.param("/etc/passwd", "absolute paths are not allowed", id="absolute"),
        pytest.param("a/../../b.jpg", "'..' is not allowed", id="dotdot"),
        pytest.param("a\0.jpg", "expected a file path", id="nul"),
        pytest.param("default: ", "expected a file path", id="empty"),
    ],
)
def test_storage_names_are_checked_before_the_backend_is_asked(storage, reference, message):
    with pytest.raises(SourceError, match=message):
        Sources({"default": "memory:photos"}).resolve(reference)
    assert storage.opened == []


def test_a_backend_with_a_local_directory_is_a_directory_root(tmp_path):
    media, outside = tmp_path / "media", tmp_path / "outside.jpg"
    media.mkdir()
    outside.write_bytes(jpeg())
    (media / "inside.jpg").write_bytes(jpeg())
    os.symlink(outside, media / "out.jpg")

    class Files(MemoryStorage):
        def local_directory(self):
            return str(media)

    sources.register_storage_kind("files", lambda argument: Files())
    try:
        resolver = Sources({"default": "files:media"})
        found = resolver.resolve("inside.jpg")
        assert found == LocalSource("inside.jpg", os.path.realpath(media / "inside.jpg"))
        with pytest.raises(SourceError, match="leads outside its root"):
            resolver.resolve("out.jpg")
        with pytest.raises(SourceNotFoundError, match="'missing.jpg' does not exist"):
            resolver.resolve("missing.jpg")
    finally:
        storage_sources._openers.pop("files", None)


# Reading


def test_a_missing_file_is_not_found_naming_the_reference_and_storage(storage):
    source = Sources({"default": "memory:photos"}).resolve("gone.jpg")
    with pytest.raises(SourceNotFoundError, match="'gone.jpg' does not exist in memory storage 'photos'"):
        source.version()
    with pytest.raises(SourceNotFoundError, match="'gone.jpg' does not exist in memory storage 'photos'"):
        source.open(1000)


def test_open_gives_a_seekable_handle_on_the_bytes(storage):
    data = jpeg()
    storage.save("a.jpg", data)
    source = Sources({"default": "memory:photos"}).resolve("a.jpg")
    with source.open(len(data)) as handle:
        assert handle.read(4) == data[:4]
        assert handle.seek(0, os.SEEK_END) == len(data)
        handle.seek(10)
        assert handle.read() == data[10:]


def test_a_backend_that_lies_about_its_size_is_held_to_max_source_bytes(storage):
    data = jpeg()
    storage.save("a.jpg", data)
    storage.declared_size = 10
    source = Sources({"default": "memory:photos"}).resolve("a.jpg")
    with pytest.raises(LimitError, match=f"'a.jpg' has more than max_source_bytes={len(data) - 1}"):
        with source.open(len(data) - 1) as handle:
            handle.read()


def test_a_failing_backend_is_unavailable_naming_the_storage(storage):
    class Broken(MemoryStorage):
        def version(self, name):
            raise RuntimeError("connection reset by peer at 10.0.0.7")

    source = StorageSource("a.jpg", Broken(), "a.jpg")
    with pytest.raises(UnavailableError) as caught:
        source.version()
    assert str(caught.value) == (
        "source 'a.jpg': memory storage 'photos' failed to give the file's version (RuntimeError)"
    )
    assert caught.value.detail == "connection reset by peer at 10.0.0.7"


# Through the block and the middleware


@pytest.mark.in_process
def test_register_and_process_through_a_storage_in_process(make_storage_site, storage):
    storage.save("a.jpg", jpeg(600, 400))
    site = make_storage_site()
    representation = site.registrar.register("a.jpg | fit 300x300")
    assert (representation.width, representation.height) == (300, 200)
    response = site.request("a.jpg | fit 300x300")
    assert response.status_int == 200
    assert decode(response.body).size == (300, 200)


def test_a_replaced_file_gets_a_new_checksum(make_storage_site, storage):
    storage.save("a.jpg", jpeg(600, 400))
    site = make_storage_site(remote_source_check_interval=0)
    before = site.registrar.register("a.jpg | fit 300x300")
    storage.save("a.jpg", jpeg(400, 600))
    after = site.registrar.register("a.jpg | fit 300x300")
    assert after.checksum != before.checksum
    assert (after.width, after.height) == (200, 300)


@pytest.mark.in_process
def test_a_connection_lost_mid_decode_is_unavailable_not_a_broken_file(make_storage_site, storage):
    data = noise_jpeg()
    assert len(data) > 4 * 64 * 1024
    storage.save("big.jpg", data)
    site = make_storage_site()
    site.registrar.register("big.jpg | fit 100x100")  # the header is in the first chunk
    storage.breaks_after = 3 * 64 * 1024
    response = site.request("big.jpg | fit 100x100")
    assert response.status_int == 503, response.text
    assert "memory storage 'photos' failed while reading the file (ConnectionResetError)" in response.text
    assert "Connection reset" not in response.text


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """This process's temporary directory, to see what a job leaves behind in it."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(directory))
    return directory


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "isolated"])
def test_register_and_process_through_a_storage(make_storage_site, storage, private_tmp, in_process):
    storage.save("photos/a.jpg", jpeg(600, 400))
    site = make_storage_site(isolate_jobs=not in_process)
    representation = site.registrar.register("photos/a.jpg | fit 300x300 | format png")
    assert (representation.width, representation.height) == (300, 200)
    response = site.request("photos/a.jpg | fit 300x300 | format png")
    assert response.status_int == 200, response.text
    image = decode(response.body)
    assert (image.format, image.size) == ("PNG", (300, 200))
    assert list(private_tmp.iterdir()) == []  # spooled files are gone


def test_a_job_that_fails_leaves_no_spooled_file(make_storage_site, storage, private_tmp):
    storage.save("a.jpg", jpeg())
    site = make_storage_site()
    site.registrar.register("a.jpg | fit 100x100")
    storage.save("a.jpg", b"\xff\xd8\xff\xe0" + b"not a JPEG after all" * 10)  # same name, broken
    response = site.request("a.jpg | fit 100x100")
    assert response.status_int == 422, response.text
    assert "is not a readable JPEG" in response.text
    assert list(private_tmp.iterdir()) == []


def test_a_file_removed_after_registration_is_not_found(make_storage_site, storage):
    storage.save("a.jpg", jpeg())
    site = make_storage_site()
    site.registrar.register("a.jpg | fit 100x100")
    del storage.files["a.jpg"]
    response = site.request("a.jpg | fit 100x100")
    assert response.status_int == 404
    assert "'a.jpg' does not exist in memory storage 'photos'" in response.text
    with pytest.raises(SourceNotFoundError):
        site.registrar.register("a.jpg | fit 100x99")


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "isolated"])
def test_a_storage_that_fails_answers_503_without_a_traceback(make_storage_site, storage, in_process, caplog):
    storage.save("a.jpg", jpeg())
    site = make_storage_site(isolate_jobs=not in_process)
    site.registrar.register("a.jpg | fit 100x100")
    storage.failure = RuntimeError("socket closed by 10.1.2.3:443")
    response = site.request("a.jpg | fit 100x100")
    assert response.status_int == 503
    assert int(response.headers["Retry-After"]) >= 1
    assert response.text.strip() == (
        "source 'a.jpg': memory storage 'photos' failed to open the file (RuntimeError)"
    )
    storage.failure = None  # the storage is back: the job is retried, not failed for good
    job = site.registrar.store.get(site.registrar.register("a.jpg | fit 100x100").checksum)
    assert (job.state, job.failure_status, job.retry_at is not None) == ("failed", 503, True)


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "isolated"])
def test_a_size_that_lies_is_held_to_max_source_bytes_while_read(make_storage_site, storage, in_process):
    data = noise_jpeg(300, 300)
    assert len(data) > 64 * 1024  # more than the header read fetches
    storage.save("a.jpg", data)
    storage.declared_size = 1000
    # A lower limit than the file: the header read fetches one chunk and passes; the job
    # reads it all and counts.
    site = make_storage_site(isolate_jobs=not in_process, max_source_bytes=len(data) - 1)
    site.registrar.register("a.jpg | fit 100x100")
    response = site.request("a.jpg | fit 100x100")
    assert response.status_int == 422
    assert response.text.strip() == f"source 'a.jpg' has more than max_source_bytes={len(data) - 1} bytes"


def test_a_declared_size_over_the_limit_is_refused_at_registration(make_storage_site, storage):
    data = jpeg()
    storage.save("a.jpg", data)
    site = make_storage_site(max_source_bytes=len(data) - 1)
    with pytest.raises(LimitError) as caught:
        site.registrar.register("a.jpg | fit 100x100")
    assert str(caught.value) == (
        f"source 'a.jpg' has {len(data)} bytes, more than max_source_bytes={len(data) - 1}"
    )


_MARKED_BACKEND = """
import io
import os

with open({log!r}, "a") as log:
    log.write(f"{{os.getpid()}}\\n")


class Backend:
    label = "marked storage"

    def __init__(self, data):
        self.data = data

    def local_directory(self):
        return None

    def version(self, name):
        return str(len(self.data))

    def open(self, name):
        return io.BytesIO(self.data)
"""


def test_a_worker_never_imports_the_storage_backend(make_storage_site, tmp_path, monkeypatch):
    """The backend's module notes every process that imports it. It is importable by a
    worker (on PYTHONPATH), so a job that carried the backend across would import it."""
    log = tmp_path / "imported-by"
    (tmp_path / "marked_backend.py").write_text(_MARKED_BACKEND.format(log=str(log)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    )
    import marked_backend

    sources.register_storage_kind("marked", lambda argument: marked_backend.Backend(jpeg(600, 400)))
    try:
        site = make_storage_site(source_roots={"default": "marked:any"})
        response = site.request("a.jpg | fit 60x60")
    finally:
        storage_sources._openers.pop("marked", None)
        sys.modules.pop("marked_backend", None)
    assert response.status_int == 200, response.text
    assert decode(response.body).size == (60, 40)
    assert log.read_text().split() == [str(os.getpid())]


def test_warm_renders_ask_a_storage_once_per_interval_for_all_sizes_of_a_picture(make_storage_site, storage):
    storage.save("a.jpg", jpeg())
    site = make_storage_site(remote_source_check_interval=0.2)
    texts = [f"a.jpg | fit {size}x" for size in (100, 200, 300)]
    site.registrar.register_many(texts)
    storage.versions_asked = 0
    time.sleep(0.25)
    site.registrar.register_many(texts)  # one page with the picture in three sizes
    assert storage.versions_asked == 1


def test_a_warm_render_asks_a_storage_by_its_own_interval_and_stats_a_file_by_the_local_one(
    make_storage_site, storage, tmp_path
):
    """Asking a storage is a request in the middle of a render: it is trusted for
    remote_source_check_interval, while a local file keeps its cheap stat per
    source_check_interval."""
    storage.save("a.jpg", jpeg(600, 400))
    site = make_storage_site(
        source_roots={"default": "memory:photos", "files": str(tmp_path / "files")},
        source_check_interval=0,
        remote_source_check_interval=30,
    )
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "b.jpg").write_bytes(jpeg(600, 400))
    remote = site.registrar.register("a.jpg | fit 300x300")
    local = site.registrar.register("files:b.jpg | fit 300x300")
    storage.versions_asked = 0
    storage.save("a.jpg", jpeg(400, 600))
    (tmp_path / "files" / "b.jpg").write_bytes(jpeg(400, 600))
    for _ in range(20):  # twenty renders of a warm page
        assert site.registrar.register("a.jpg | fit 300x300") == remote
    assert storage.versions_asked == 0
    assert (site.registrar.register("files:b.jpg | fit 300x300").width, local.width) == (200, 300)


def test_a_storage_that_is_down_keeps_warm_pages_as_they_were(make_storage_site, storage):
    storage.save("a.jpg", jpeg())
    site = make_storage_site(remote_source_check_interval=0.05)
    before = site.registrar.register("a.jpg | fit 100x")
    storage.failure = ConnectionError("no route to host")
    time.sleep(0.1)
    assert site.registrar.register("a.jpg | fit 100x") == before
    assert storage.versions_asked == 2  # it did ask, and kept the registration
    storage.failure = None
    del storage.files["a.jpg"]  # gone for real: the next check says so
    time.sleep(0.1)
    with pytest.raises(SourceNotFoundError):
        site.registrar.register("a.jpg | fit 100x")


def test_a_process_without_the_kind_loaded_retries_the_job_later(make_storage_site, storage):
    """`fileproc warm` run where the web framework is not loaded must not fail good jobs for good."""
    storage.save("a.jpg", jpeg())
    url = make_storage_site().registrar.register("a.jpg | fit 100x").url
    storage_sources._openers.pop("memory")
    site = make_storage_site()
    response = site.get(url)
    assert response.status_int == 503
    assert "root 'default' names a memory storage; this process has not loaded" in response.text
    job = site.registrar.store.get(url.rsplit("/", 1)[1].split(".")[0])
    assert (job.state, job.failure_status, job.retry_at is not None) == ("failed", 503, True)


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({"widths": "50,80", "formats": "webp,avif"}, id="widths-formats"),
        pytest.param({"densities": "1,2", "formats": "webp,avif"}, id="densities-formats"),
    ],
)
def test_a_new_block_asks_a_storage_once_for_all_its_variants(make_storage_site, storage, arguments):
    """Each question to a remote storage is a request in the middle of a render: one
    block of nine variants asks the version once and downloads the header once."""
    storage.save("a.jpg", jpeg(600, 400))
    site = make_storage_site()
    rendition = build(site.registrar, "fill 100x100", {"source": "a.jpg", **arguments})
    assert len({rendition.image, *rendition.srcset, *(v for _, vs in rendition.sources for v in vs)}) >= 6
    assert (storage.versions_asked, storage.opened) == (1, ["a.jpg"])
