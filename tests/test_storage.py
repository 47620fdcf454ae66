"""Local result storage: atomic writes, safe keys, and what an unwritable disk looks like."""

from __future__ import annotations

import pytest

from fileproc_wsgi.errors import UnavailableError
from fileproc_wsgi.storage import LocalStorage, parse_key, result_key
from support import halves, write

CHECKSUM = "0123456789abcdef0123456789abcdef"


def test_put_writes_the_whole_file_and_leaves_no_temporary(tmp_path):
    storage = LocalStorage(str(tmp_path), "/_fp/files/")
    key = result_key(CHECKSUM, "jpg")
    storage.put(key, b"x" * 100_000)
    assert key == f"01/{CHECKSUM}.jpg"
    assert (tmp_path / "01" / f"{CHECKSUM}.jpg").read_bytes() == b"x" * 100_000
    assert [p.name for p in (tmp_path / "01").iterdir()] == [f"{CHECKSUM}.jpg"]
    assert storage.url(key) == f"/_fp/files/01/{CHECKSUM}.jpg"
    assert storage.exists(key)


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    storage = LocalStorage(str(tmp_path), "/_fp/files/")

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", disk_full)
    with pytest.raises(UnavailableError, match="result storage unavailable: cannot write"):
        storage.put(result_key(CHECKSUM, "png"), b"data")
    assert list((tmp_path / "01").iterdir()) == []


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("../x.jpg", id="dot-dot"),
        pytest.param(f"01/../{CHECKSUM}.jpg", id="dot-dot-inside"),
        pytest.param(f"/01/{CHECKSUM}.jpg", id="absolute"),
        pytest.param(f"01/{CHECKSUM}.jpg.part", id="temporary"),
        pytest.param(f"01/{CHECKSUM[:-1]}.jpg", id="short"),
        pytest.param(f"01\\{CHECKSUM}.jpg", id="backslash"),
    ],
)
def test_only_well_formed_keys_parse(key):
    assert parse_key(key) is None


def test_unwritable_storage_answers_503_and_recovers(site, tmp_path):
    write(site.media, "photo.png", halves(40, 20))
    (tmp_path / "results").write_text("a file where the results directory should be")
    representation = site.registrar.register("photo.png | fit 20x")
    response = site.get(representation.url)
    assert response.status_int == 503
    assert response.headers["Retry-After"] and response.headers["Cache-Control"] == "no-store"
    assert "result storage unavailable" in response.text
    job = site.store.get(representation.checksum)
    assert job.state == "failed" and job.retry_at is not None, "an outage must be retried later"

    (tmp_path / "results").unlink()
    assert site.get(representation.url).status_int == 503, "backs off instead of retrying at once"
    site.store.reset([representation.checksum])
    assert site.get(representation.url).status_int == 301


def test_an_outage_is_retried_once_its_backoff_has_passed(site, tmp_path):
    from webob import Request

    from fileproc_wsgi.middleware import FileProcessor
    from fileproc_wsgi.registrar import Registrar
    from fileproc_wsgi.store import InstructionStore

    clock = [1_000_000.0]
    store = InstructionStore(site.config.database_url, clock=lambda: clock[0])
    app = FileProcessor(None, site.config, registrar=Registrar(site.config, store=store))
    write(site.media, "photo.png", halves(40, 20))
    url = app.registrar.register("photo.png | fit 20x").url
    (tmp_path / "results").write_text("a file where the results directory should be")
    assert Request.blank(url).get_response(app).status_int == 503
    (tmp_path / "results").unlink()
    waiting = Request.blank(url).get_response(app)
    assert waiting.status_int == 503 and int(waiting.headers["Retry-After"]) == 30
    clock[0] += 31
    assert Request.blank(url).get_response(app).status_int == 301
    app.close()
