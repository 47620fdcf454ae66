"""Registration at render time: prediction, HTML, caching and refusals (SPEC §3)."""

from __future__ import annotations

import contextlib
import contextvars
import os
import time

import pytest
import sqlalchemy
from PIL import Image

from fileproc_wsgi.config import Config
from fileproc_wsgi.errors import InstructionError, SourceError, SourceNotFoundError
from fileproc_wsgi.registrar import Registrar
from support import DictCache, halves, write


@pytest.fixture
def site(make_site):
    site = make_site()
    write(site.media, "photo.jpg", halves(600, 400), quality=90)
    write(site.media, "logo.png", Image.new("RGBA", (300, 300), (0, 0, 0, 0)))
    return site


@pytest.mark.parametrize(
    ("text", "width", "height", "url_end", "content_type"),
    [
        pytest.param("photo.jpg | fit 300x300", 300, 200, ".jpg", "image/jpeg", id="fit"),
        pytest.param(
            "photo.jpg | fill 100x100 | format webp", 100, 100, ".webp", "image/webp", id="fill-webp"
        ),
        pytest.param("photo.jpg | pad 320x100", 320, 100, ".jpg", "image/jpeg", id="pad"),
        pytest.param(
            "photo.jpg | resize 17x33 | format avif", 17, 33, ".avif", "image/avif", id="resize-avif"
        ),
        pytest.param("photo.jpg | crop 25%,25%,50%,50%", 300, 200, ".jpg", "image/jpeg", id="crop"),
        pytest.param("photo.jpg | rotate 270 | fit x300", 200, 300, ".jpg", "image/jpeg", id="rotate"),
        pytest.param("logo.png | fit 100x", 100, 100, ".png", "image/png", id="png-stays-png"),
        pytest.param("logo.png | background #ffffff | format gif", 300, 300, ".gif", "image/gif", id="gif"),
    ],
)
def test_predicted_size_and_format(site, text, width, height, url_end, content_type):
    representation = site.registrar.register(text)
    assert (representation.width, representation.height) == (width, height)
    assert representation.url.endswith(url_end)
    assert representation.url == f"/_fp/{representation.checksum}{url_end}"
    assert representation.content_type == content_type


def test_prediction_honours_exif_orientation(site):
    exif = Image.Exif()
    exif[0x0112] = 8
    write(site.media, "phone.jpg", halves(600, 400), exif=exif)
    representation = site.registrar.register("phone.jpg | fit 300x300")
    assert (representation.width, representation.height) == (200, 300)


def test_tiff_without_transparency_defaults_to_jpeg_and_with_it_to_png(site):
    write(site.media, "scan.tiff", Image.new("RGB", (20, 20)))
    write(site.media, "cutout.tiff", Image.new("RGBA", (20, 20)))
    assert site.registrar.register("scan.tiff").url.endswith(".jpg")
    assert site.registrar.register("cutout.tiff").url.endswith(".png")
    assert site.registrar.register("cutout.tiff | background #000000").url.endswith(".jpg")


def test_html_escapes_every_attribute(site):
    representation = site.registrar.register("photo.jpg | fit 30x")
    html = representation.render(alt='a "quoted" <b>&', class_="thumb x", data_id=None)
    assert html == (
        f'<img src="{representation.url}" width="30" height="20" '
        'alt="a &quot;quoted&quot; &lt;b&gt;&amp;" loading="lazy" decoding="async" class="thumb x">'
    )
    assert representation.html == representation.__html__() == str(representation)
    with pytest.raises(ValueError, match="not a valid HTML attribute name"):
        representation.render({"on click": "x"})


def test_equivalent_texts_share_a_checksum(site):
    one = site.registrar.register("photo.jpg | fit 300x300 | format webp quality=80")
    two = site.registrar.register("# thumbnail\n  photo.jpg\nFIT 300x300\nformat WEBP   quality=80\n")
    assert one.checksum == two.checksum
    assert site.store.count_by_state() == {"pending": 1}


def test_repeated_registration_does_no_database_work(site):
    statements = []
    sqlalchemy.event.listen(
        site.store.engine, "before_cursor_execute", lambda *args: statements.append(args[2])
    )
    first = site.registrar.register("photo.jpg | fit 300x300")
    cold = len(statements)
    for _ in range(5):
        assert site.registrar.register("photo.jpg | fit 300x300") is first
    assert cold >= 1
    assert len(statements) == cold


def test_replaced_source_gets_a_new_checksum(make_site):
    site = make_site(source_check_interval=0)
    write(site.media, "photo.jpg", halves(600, 400), quality=90)
    before = site.registrar.register("photo.jpg | fit 300x300")
    path = site.media / "photo.jpg"
    write(site.media, "photo.jpg", halves(800, 400), quality=90)
    os.utime(path, ns=(1, 1_000_000_000))
    after = site.registrar.register("photo.jpg | fit 300x300")
    assert after.checksum != before.checksum
    assert (after.width, after.height) == (300, 150)


def test_a_replaced_source_is_seen_within_the_check_interval(make_site):
    site = make_site(source_check_interval=0.3)
    write(site.media, "photo.jpg", halves(600, 400), quality=90)
    before = site.registrar.register("photo.jpg | fit 300x300")
    write(site.media, "photo.jpg", halves(800, 400), quality=90)
    os.utime(site.media / "photo.jpg", ns=(1, 1_000_000_000))
    assert site.registrar.register("photo.jpg | fit 300x300") == before, "trusted until the interval ends"
    time.sleep(0.35)
    assert site.registrar.register("photo.jpg | fit 300x300").height == 150


def test_cache_is_bounded(make_site):
    site = make_site(cache_size=3)
    write(site.media, "photo.jpg", halves(60, 40))
    for width in range(10, 20):
        site.registrar.register(f"photo.jpg | fit {width}x")
    assert len(site.registrar._lru) == 3


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        pytest.param(
            "missing.jpg | fit 10x", SourceNotFoundError, "source 'missing.jpg' does not exist", id="missing"
        ),
        pytest.param("/etc/passwd", SourceError, "absolute paths are not allowed", id="absolute"),
        pytest.param("../secret.jpg", SourceError, "'..' is not allowed", id="dot-dot"),
        pytest.param("photos/../../x.jpg", SourceError, "'..' is not allowed", id="dot-dot-inside"),
        pytest.param(
            "static:photo.jpg",
            SourceError,
            "unknown root 'static' (configured roots: default)",
            id="unknown-root",
        ),
        pytest.param("https://example.com/a.jpg", SourceError, "https sources are not enabled", id="remote"),
        pytest.param("photo.jpg | fit 0x0", InstructionError, "line 1, column", id="bad-instructions"),
    ],
)
def test_refusals_are_clear(site, text, error, message):
    with pytest.raises(error) as raised:
        site.registrar.register(text)
    assert message in str(raised.value)
    assert site.store.count_by_state() == {}


def test_symlink_leaving_the_root_is_refused(site, tmp_path):
    outside = tmp_path / "outside.jpg"
    write(tmp_path, "outside.jpg", halves(10, 10))
    os.symlink(outside, site.media / "link.jpg")
    with pytest.raises(SourceError, match="leads outside its root"):
        site.registrar.register("link.jpg")


def test_symlink_inside_the_root_is_followed(site):
    os.symlink(site.media / "photo.jpg", site.media / "alias.jpg")
    assert site.registrar.register("alias.jpg | fit 60x").width == 60


def test_directory_and_device_are_not_sources(site):
    (site.media / "folder").mkdir()
    with pytest.raises(SourceError, match="is not a regular file"):
        site.registrar.register("folder")
    os.symlink("/dev/zero", site.media / "zero.jpg")
    with pytest.raises(SourceError):
        site.registrar.register("zero.jpg")


def test_named_roots(site, tmp_path):
    write(tmp_path / "static", "icon.png", halves(40, 20))
    config = Config(
        source_roots={"default": str(site.media), "static": str(tmp_path / "static")},
        database_url=site.config.database_url,
        storage=site.config.storage,
    )
    assert Registrar(config, store=site.store).register("static:icon.png | fit 20x").height == 10


class _BrokenCache:
    def get(self, key):
        raise ConnectionError("redis is down")

    def set(self, key, value):
        raise ConnectionError("redis is down")


def test_a_shared_cache_spares_other_app_servers_the_header_read(site, monkeypatch):
    shared = DictCache()
    first = Registrar(site.config, store=site.store, cache=shared)
    representation = first.register("photo.jpg | fit 120x")
    assert len(shared.values) == 1

    def no_header_read(*args, **kwargs):
        raise AssertionError("the header was read again")

    monkeypatch.setattr("fileproc_wsgi.engines.probe", no_header_read)
    second = Registrar(site.config, store=site.store, cache=shared)
    assert second.register("photo.jpg | fit 120x") == representation


def test_a_failing_shared_cache_is_a_miss_not_an_error(site, caplog):
    registrar = Registrar(site.config, store=site.store, cache=_BrokenCache())
    assert registrar.register("photo.jpg | fit 120x").width == 120
    assert registrar.register("photo.jpg | fit 130x").width == 130
    assert caplog.text.count("the shared cache failed to read (redis is down)") == 1, "logged once a minute"
    assert site.store.count_by_state() == {"pending": 2}


def test_registrars_share_one_context_variable_and_keep_their_batches_apart(site):
    registrars = [Registrar(site.config, store=site.store) for _ in range(20)]
    with contextlib.ExitStack() as batches:
        for registrar in registrars:
            batches.enter_context(registrar.batch())
        for width, registrar in enumerate(registrars, start=10):
            registrar.register(f"photo.jpg | fit {width}x")
        variables = [variable.name for variable in contextvars.copy_context() if "fileproc" in variable.name]
        assert len(variables) == 1, "one context variable however many registrars"
        assert site.store.count_by_state() == {}, "every registrar still holds its batch"
    assert site.store.count_by_state() == {"pending": 20}, "each registrar wrote its own"
