"""The JPEG XL engine (pillow-jxl-plugin, libjxl): sources through registration and the
real pipeline, every result decoded and its size and pixels checked.

Fixtures are written here by the plugin's own encoder (libjxl): lossy and lossless, alpha,
16-bit grey, the bare codestream and the container, and JPEGs recompressed losslessly into
JXL, which is how a JXL gets an orientation in its codestream (libjxl moves the JPEG's EXIF
orientation there). Taking the ``jbrd`` box out of such a file leaves a JXL that libjxl
decodes to pixels itself, turned by that orientation: both decoding paths are covered.
pillow-jxl-plugin is required: a missing library fails these tests (and
tests/test_engines.py checks the refusal that names the extra).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import time
import warnings

import numpy
import pytest
from PIL import Image

from fileproc_wsgi import engines, formats
from fileproc_wsgi.config import Config
from fileproc_wsgi.engines import jxl
from fileproc_wsgi.errors import LimitError, ProcessingError
from fileproc_wsgi.instructions import parse
from support import BLUE, RED, close_to, colour_at, halves, srgb_profile

# --------------------------------------------------------------------------- fixtures


def encoded(image: Image.Image, **options) -> bytes:
    """``image`` as a JXL written by libjxl through the plugin."""
    import pillow_jxl  # noqa: F401 - registers the plugin's writer in Pillow, for the fixtures

    buffer = io.BytesIO()
    image.save(buffer, "JXL", **{"effort": 3, **options})
    return buffer.getvalue()


def recompressed(image: Image.Image, tmp_path, orientation: int = 1, **params) -> bytes:
    """``image`` as a JPEG carrying EXIF ``orientation``, recompressed losslessly into JXL
    (the plugin reads the JPEG back from its file for that)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    image.save(path, exif=exif.tobytes(), quality=95, **params)
    with Image.open(path) as jpeg, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Using JPEG reconstruction ..."
        return encoded(jpeg, lossless_jpeg=True)


def without_jpeg_reconstruction(data: bytes) -> bytes:
    """``data`` without its ``jbrd`` box: libjxl then decodes pixels, not the JPEG."""
    out, at = b"", 0
    while at < len(data):
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        size = size or len(data) - at
        if kind != b"jbrd":
            out += data[at : at + size]
        at += size
    assert out != data
    return out


def _transparent_right(width: int = 600, height: int = 400) -> Image.Image:
    image = halves(width, height, mode="RGBA")
    image.paste((0, 0, 255, 0), (width // 2, 0, width, height))
    return image


def _sixteen_bit(width: int = 600, height: int = 400) -> Image.Image:
    samples = numpy.zeros((height, width), numpy.uint16)
    samples[:, : width // 2] = 50_000
    samples[:, width // 2 :] = 10_000
    return Image.fromarray(samples)


def _config(**settings) -> Config:
    return Config(**settings)


# --------------------------------------------------------------------------- decoding


def test_the_plugin_is_present_and_jxl_is_sniffed_by_content():
    assert jxl.available() == {"jxl": True}
    assert engines.ENGINE_OF["JXL"] == "jxl"
    assert formats.sniff(encoded(halves(16, 8))) == "JXL"  # bare codestream
    assert formats.sniff(encoded(halves(16, 8), use_container=True)) == "JXL"
    assert formats.a("JXL", "image") == "a JPEG XL image"
    # Browsers other than Safari show no JXL: a JPEG, or a PNG to keep transparency.
    assert formats.choose_format("JXL", False, None) == "jpeg"
    assert formats.choose_format("JXL", True, None) == "png"


# Stored red left, blue right; orientation 6 turns it a quarter clockwise (red on top),
# 8 anticlockwise (blue on top), 2 mirrors it (blue left).
@pytest.mark.parametrize(
    ("name", "data", "size", "top_left", "bottom_right"),
    [
        pytest.param("lossy.jxl", lambda _: encoded(halves()), (200, 133), RED, BLUE, id="lossy"),
        pytest.param(
            "lossless.jxl", lambda _: encoded(halves(), lossless=True), (200, 133), RED, BLUE, id="lossless"
        ),
        pytest.param(
            "boxed.jxl",
            lambda _: encoded(halves(), use_container=True),
            (200, 133),
            RED,
            BLUE,
            id="container",
        ),
        pytest.param(
            "cut-out.jxl",
            lambda _: encoded(_transparent_right()),
            (200, 133),
            RED + (255,),
            (0, 0, 0, 0),
            id="alpha-kept",
        ),
        pytest.param(
            "deep.jxl",
            lambda _: encoded(_sixteen_bit(), lossless=True),
            (200, 133),
            (195,),
            (39,),
            id="16-bit-grey",
        ),
        pytest.param(
            "from.jpg.jxl",
            lambda tmp: recompressed(halves(), tmp),
            (200, 133),
            RED,
            BLUE,
            id="recompressed-jpeg",
        ),
        pytest.param(
            "portrait.jxl",
            lambda tmp: recompressed(halves(), tmp, 6),
            (200, 300),
            RED,
            BLUE,
            id="orientation-6-jpeg-path",
        ),
        pytest.param(
            "other-way.jxl",
            lambda tmp: recompressed(halves(), tmp, 8),
            (200, 300),
            BLUE,
            RED,
            id="orientation-8-jpeg-path",
        ),
        pytest.param(
            "selfie.jxl",
            lambda tmp: recompressed(halves(), tmp, 2),
            (200, 133),
            BLUE,
            RED,
            id="mirrored-jpeg-path",
        ),
        pytest.param(
            "pixels.jxl",
            lambda tmp: without_jpeg_reconstruction(recompressed(halves(), tmp, 6)),
            (200, 300),
            RED,
            BLUE,
            id="orientation-6-pixel-path",
        ),
        pytest.param(
            "pixels-8.jxl",
            lambda tmp: without_jpeg_reconstruction(recompressed(halves(), tmp, 8)),
            (200, 300),
            BLUE,
            RED,
            id="orientation-8-pixel-path",
        ),
    ],
)
def test_images_through_the_pipeline(site, tmp_path, name, data, size, top_left, bottom_right):
    (site.media / name).write_bytes(data(tmp_path))
    representation, image = site.make(f"{name} | fit 200x")
    assert (representation.width, representation.height) == image.size == size
    assert representation.content_type == ("image/png" if len(top_left) == 4 else "image/jpeg")
    assert close_to(colour_at(image, 0.1, 0.1), top_left)
    assert close_to(colour_at(image, 0.9, 0.9), bottom_right)


def test_an_exif_orientation_the_codestream_does_not_state_is_not_applied(site):
    # The codestream's orientation is the one JPEG XL readers apply; this file's says 1
    # and its Exif box says 6. Following both would turn it; following EXIF, too.
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encoded(halves(), exif=exif.tobytes(), use_container=True)
    assert b"Exif" in data and jxl.header(jxl.codestream_start(data))[2] == 1
    (site.media / "exif.jxl").write_bytes(data)
    representation, image = site.make("exif.jxl | fit 200x")
    assert (representation.width, representation.height) == image.size == (200, 133)
    assert close_to(colour_at(image, 0.1, 0.5), RED) and close_to(colour_at(image, 0.9, 0.5), BLUE)


@pytest.mark.parametrize(
    "jpeg_path", [pytest.param(True, id="jpeg-path"), pytest.param(False, id="pixel-path")]
)
def test_colour_profile_is_kept(site, tmp_path, jpeg_path):
    data = recompressed(halves(), tmp_path, icc_profile=srgb_profile())
    (site.media / "tagged.jxl").write_bytes(data if jpeg_path else without_jpeg_reconstruction(data))
    _, image = site.make("tagged.jxl | fit 100x")
    assert image.info.get("icc_profile") == srgb_profile()


def test_header_reader_agrees_with_libjxl_on_sizes_alpha_and_layouts():
    # Every SizeHeader form: small (multiples of 8), each ratio, each U32 width class.
    sizes = [(8, 8), (64, 32), (1, 1), (257, 3), (3, 700), (640, 480), (1920, 1080), (9000, 2), (1, 70000)]
    for width, height in sizes:
        for mode, container in (("RGB", False), ("RGBA", True), ("L", True), ("LA", False)):
            data = encoded(Image.new(mode, (width, height)), use_container=container, effort=1)
            with Image.open(io.BytesIO(data)) as decoded:
                stored = decoded.size
            assert jxl.header(jxl.codestream_start(data)) == (*stored, 1, mode.endswith("A"))


def test_registration_reads_the_header_without_loading_the_decoder(tmp_path):
    (tmp_path / "photo.jxl").write_bytes(encoded(halves(4000, 3000), effort=1))
    script = textwrap.dedent(
        """
        import io, json, sys, time
        from fileproc_wsgi import engines
        from fileproc_wsgi.config import Config
        from fileproc_wsgi.instructions import parse
        from PIL import Image
        data = open(sys.argv[1], "rb").read()
        info = engines.probe(io.BytesIO(data), "photo.jxl", parse("photo.jxl | fit 400x"), Config())
        started = time.perf_counter()
        for _ in range(100):
            engines.probe(io.BytesIO(data), "photo.jxl", parse("photo.jxl | fit 400x"), Config())
        print(json.dumps({
            "size": [info.width, info.height], "alpha": info.has_alpha,
            "seconds": (time.perf_counter() - started) / 100,
            "loaded": "pillow_jxl" in sys.modules, "registered": "JXL" in Image.OPEN,
        }))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "photo.jxl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert (found["size"], found["alpha"]) == ([4000, 3000], False)
    assert not found["loaded"] and not found["registered"]
    assert found["seconds"] < 0.01  # measured about 0.1 ms


# --------------------------------------------------------------------------- refusals


def test_pixel_limit_is_checked_at_registration(make_site):
    site = make_site(max_source_pixels=10_000)
    (site.media / "big.jxl").write_bytes(encoded(halves(200, 100)))
    with pytest.raises(LimitError, match="200x100 = 20000 pixels, more than max_source_pixels=10000"):
        site.registrar.register("big.jxl | fit 10x")


def test_page_beyond_the_first_is_refused(site):
    (site.media / "photo.jxl").write_bytes(encoded(halves(40, 20)))
    with pytest.raises(ProcessingError, match=r"page 2: 'photo.jxl' has only 1 page"):
        site.registrar.register("photo.jxl | page 2 | fit 10x")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff\x0a", id="codestream-cut-in-header"),
        pytest.param(
            b"\x00\x00\x00\x0cJXL \r\n\x87\n\x00\x00\x00\x14ftypjxl ", id="container-without-codestream"
        ),
        pytest.param(b"\x00\x00\x00\x0cJXL \r\n\x87\n\x00\x00\x00\x02free", id="box-smaller-than-its-header"),
    ],
)
def test_a_broken_header_is_refused_at_registration(site, data):
    (site.media / "cut.jxl").write_bytes(data)
    with pytest.raises(ProcessingError, match="'cut.jxl' is not a readable JPEG XL image"):
        site.registrar.register("cut.jxl | fit 10x")


def test_a_file_broken_after_registration_is_refused_when_processing(site):
    path = site.media / "photo.jxl"
    data = encoded(halves())
    path.write_bytes(data)
    url = site.registrar.register("photo.jxl | fit 100x").url
    path.write_bytes(data[: len(data) // 2])  # the header whole, the picture cut short
    response = site.get(url)
    assert response.status_int == 422
    assert "'photo.jxl' is a JPEG XL image that could not be decoded" in response.text
    assert "Traceback" not in response.text


def test_a_12_megapixel_jxl_becomes_a_400_pixel_thumbnail_in_bounded_time():
    data = encoded(halves(4000, 3000), effort=1)
    started = time.perf_counter()
    image, _, size = jxl.decode(io.BytesIO(data), "JXL", "x", parse("x | fit 400x"), _config())
    elapsed = time.perf_counter() - started
    assert size == image.size == (4000, 3000)  # libjxl decodes at full size only
    assert elapsed < 5  # measured about 0.25 s on 2 cores (bench figure in the README)
