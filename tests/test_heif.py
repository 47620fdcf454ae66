"""The HEIF engine (pillow-heif, libheif): phone photos through registration and the real
pipeline, in the layouts phones and cameras write.

Fixtures are made here: by pillow-heif's own encoder (8, 10 and 12 bits, alpha, grey,
4:4:4, a tiled grid as iPhones write, an EXIF orientation carried as ``irot``, an ICC
profile, several top-level images, an embedded thumbnail) and by ImageMagick's writer
through Wand, a second encoder, with an ``irot`` box added by hand. Every result is decoded
and its size and pixels checked. pillow-heif is required: a missing library fails these
tests (and tests/test_engines.py checks the refusal that names the extra).
"""

from __future__ import annotations

import io
import struct

import numpy
import pillow_heif
import pytest
from PIL import Image
from wand.image import Image as WandImage

from fileproc_wsgi import engines
from fileproc_wsgi.config import Config
from fileproc_wsgi.engines import heif
from fileproc_wsgi.errors import LimitError, ProcessingError
from fileproc_wsgi.instructions import parse
from support import BLUE, GREEN, RED, close_to, colour_at, halves, srgb_profile

# --------------------------------------------------------------------------- fixtures


def encoded(image: Image.Image, **options) -> bytes:
    """``image`` as a HEIC written by pillow-heif (libheif with x265)."""
    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, quality=90, **options)
    return buffer.getvalue()


def deep(image: Image.Image, bits: int) -> bytes:
    """``image`` stored with 10 or 12 bits a sample, as phones' HDR photos are."""
    samples = numpy.asarray(image.convert("RGB")).astype(numpy.uint16) * 257
    buffer = io.BytesIO()
    pillow_heif.options.SAVE_HDR_TO_12_BIT = bits == 12
    try:
        pillow_heif.from_bytes("RGB;16", image.size, samples.tobytes()).save(buffer, quality=90)
    finally:
        pillow_heif.options.SAVE_HDR_TO_12_BIT = False
    assert pillow_heif.open_heif(io.BytesIO(buffer.getvalue())).info["bit_depth"] == bits
    return buffer.getvalue()


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    """As a phone writes a picture taken sideways: the pixels as the sensor saw them, an
    ``irot``/``imir`` transform to show them upright, and the same in EXIF."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(image, exif=exif.tobytes())


def several(*images: Image.Image, primary: int) -> bytes:
    """Top-level images in this order, the one at index ``primary`` marked primary."""
    container = pillow_heif.from_pillow(images[0])
    for image in images[1:]:
        container.add_from_pillow(image)
    buffer = io.BytesIO()
    container.save(buffer, quality=90, primary_index=primary)
    return buffer.getvalue()


def _wand(image: Image.Image) -> WandImage:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return WandImage(blob=buffer.getvalue(), format="PNG")


def heic(image: Image.Image) -> bytes:
    """``image`` as a HEIC written by ImageMagick (through Wand): a second writer."""
    with _wand(image) as picture:
        picture.format = "heic"
        return picture.make_blob()


def _boxes(data: bytes, start: int, end: int):
    while start < end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        yield kind, start, size
        start += size


def _box(data: bytes, *path: bytes) -> tuple[int, int]:
    start, end = 0, len(data)
    for kind in path:
        start, size = next((at, size) for name, at, size in _boxes(data, start, end) if name == kind)
        end = start + size
        if kind != path[-1]:
            start += 12 if kind == b"meta" else 8  # meta is a full box: version and flags
    return start, end - start


def turned_heic(data: bytes, quarter_turns: int) -> bytes:
    """``data`` with an ``irot`` property on its primary item: a HEIF to be shown turned
    anticlockwise, as a phone writes a picture taken upright. ImageMagick writes one
    grid item, its tiles and version-0 property associations; this handles that."""
    irot = struct.pack(">I4sB", 9, b"irot", quarter_turns)
    ipco, ipco_size = _box(data, b"meta", b"iprp", b"ipco")
    index = sum(1 for _ in _boxes(data, ipco + 8, ipco + ipco_size)) + 1
    pitm, _ = _box(data, b"meta", b"pitm")
    primary = struct.unpack(">H", data[pitm + 12 : pitm + 14])[0]
    ipma_at, ipma_size = _box(data, b"meta", b"iprp", b"ipma")
    ipma = bytearray(data[ipma_at : ipma_at + ipma_size])
    at = 16
    for _ in range(struct.unpack(">I", ipma[12:16])[0]):
        item, count = struct.unpack(">HB", ipma[at : at + 3])
        if item == primary:
            ipma[at + 2] = count + 1
            ipma.insert(at + 3 + count, 0x80 | index)  # essential: readers must apply it
            break
        at += 3 + count
    ipma[0:4] = struct.pack(">I", len(ipma))
    grown = len(irot) + 1
    out = bytearray(data[: ipco + ipco_size] + irot + data[ipco + ipco_size : ipma_at] + ipma)
    out += data[ipma_at + ipma_size :]
    for path, extra in (((b"meta",), grown), ((b"meta", b"iprp"), grown), ((b"meta", b"iprp", b"ipco"), 9)):
        at, size = _box(data, *path)
        out[at : at + 4] = struct.pack(">I", size + extra)
    # Item data in the file (construction method 0) now starts ``grown`` bytes later: move
    # each such item's base offset (ImageMagick writes extents relative to one).
    iloc, _ = _box(bytes(out), b"meta", b"iloc")
    version = out[iloc + 8]
    assert version in (0, 1) and out[iloc + 12 : iloc + 14] == b"\x44\x40"  # 4-byte fields, base offsets
    at, entries = iloc + 16, struct.unpack(">H", out[iloc + 14 : iloc + 16])[0]
    for _ in range(entries):
        method = struct.unpack(">H", out[at + 2 : at + 4])[0] & 15 if version else 0
        at += 6 if version else 4  # item, construction method (version 1 only), data reference
        if method == 0:
            out[at : at + 4] = struct.pack(">I", struct.unpack(">I", out[at : at + 4])[0] + grown)
        extents = struct.unpack(">H", out[at + 4 : at + 6])[0]
        at += 6 + 8 * extents
    return bytes(out)


def _transparent_right(width: int = 600, height: int = 400) -> Image.Image:
    image = halves(width, height, mode="RGBA")
    image.paste((0, 0, 255, 0), (width // 2, 0, width, height))
    return image


def _grid(width: int, height: int) -> bytes:
    data = encoded(halves(width, height), tile_size=512)
    assert pillow_heif.open_heif(io.BytesIO(data)).info["tiling"]["tile_width"] == 512
    return data


def _config(**settings) -> Config:
    return Config(**settings)


GREY_RED, GREY_BLUE = (76, 76, 76), (29, 29, 29)  # RED and BLUE as Pillow makes them grey

# --------------------------------------------------------------------------- decoding


def test_pillow_heif_is_present_and_decodes_heif():
    assert heif.available() == {"heif": True}
    assert engines.ENGINE_OF["HEIF"] == "heif"
    assert "x265" in pillow_heif.libheif_info()["encoders"]  # the tests' own fixtures need it


# Stored as the sensor saw it (red left); orientation 6 shows it a quarter turned clockwise
# (red on top), 8 anticlockwise (blue on top), 2 mirrored.
@pytest.mark.parametrize(
    ("name", "data", "size", "top_left", "bottom_right"),
    [
        pytest.param("photo.heic", lambda: encoded(halves()), (200, 133), RED, BLUE, id="8-bit"),
        pytest.param("hdr.heic", lambda: deep(halves(), 10), (200, 133), RED, BLUE, id="10-bit"),
        pytest.param("pro.heic", lambda: deep(halves(), 12), (200, 133), RED, BLUE, id="12-bit"),
        pytest.param(
            "grey.heic", lambda: encoded(halves().convert("L")), (200, 133), GREY_RED, GREY_BLUE, id="grey"
        ),
        pytest.param(
            "cut-out.heic",
            lambda: encoded(_transparent_right()),
            (200, 133),
            RED + (255,),
            (0, 0, 0, 0),
            id="alpha-kept",
        ),
        pytest.param(
            "full.heic", lambda: encoded(halves(), chroma=444), (200, 133), RED, BLUE, id="chroma-444"
        ),
        pytest.param("iphone.heic", lambda: _grid(1300, 900), (200, 138), RED, BLUE, id="grid-of-512-tiles"),
        pytest.param(
            "portrait.heic",
            lambda: with_orientation(halves(), 6),
            (200, 300),
            RED,
            BLUE,
            id="orientation-6-once",
        ),
        pytest.param(
            "other-way.heic",
            lambda: with_orientation(halves(), 8),
            (200, 300),
            BLUE,
            RED,
            id="orientation-8-once",
        ),
        pytest.param(
            "selfie.heic", lambda: with_orientation(halves(), 2), (200, 133), BLUE, RED, id="mirrored"
        ),
        pytest.param(
            "magick.heic", lambda: heic(halves()), (200, 133), RED, BLUE, id="written-by-imagemagick"
        ),
        # irot 1 by hand, a quarter anticlockwise: the right half on top.
        pytest.param(
            "turned.heic", lambda: turned_heic(heic(halves()), 1), (200, 300), BLUE, RED, id="irot-by-hand"
        ),
    ],
)
def test_photos_through_the_pipeline(site, name, data, size, top_left, bottom_right):
    (site.media / name).write_bytes(data())
    representation, image = site.make(f"{name} | fit 200x")
    assert (representation.width, representation.height) == image.size == size
    assert representation.content_type == ("image/png" if len(top_left) == 4 else "image/jpeg")
    assert close_to(colour_at(image, 0.1, 0.1), top_left)
    assert close_to(colour_at(image, 0.9, 0.9), bottom_right)


def test_orientation_is_applied_once_though_exif_says_it_too():
    data = with_orientation(halves(60, 40), 6)
    # The file says it twice (irot, and EXIF orientation 6); the decoded picture is turned once.
    assert pillow_heif.open_heif(io.BytesIO(data)).info["exif"] is not None
    image, _, size = heif.decode(io.BytesIO(data), "HEIF", "x", parse("x"), _config())
    assert image.size == size == (40, 60)
    assert close_to(colour_at(image, 0.5, 0.1), RED) and close_to(colour_at(image, 0.5, 0.9), BLUE)


def test_colour_profile_is_kept(site):
    tagged = halves()
    tagged.info["icc_profile"] = srgb_profile()
    (site.media / "tagged.heic").write_bytes(encoded(tagged))
    _, image = site.make("tagged.heic | fit 100x")
    assert image.info.get("icc_profile") == srgb_profile()


def test_pages_are_the_primary_image_then_the_others(site):
    first, second = halves(300, 200), halves(160, 100, left=GREEN, right=RED)
    (site.media / "burst.heic").write_bytes(several(first, second, primary=1))
    representation, image = site.make("burst.heic | fit 100x")
    assert (representation.width, representation.height) == image.size == (100, 62)
    assert close_to(colour_at(image, 0.1, 0.5), GREEN)  # the primary, though stored second
    representation, image = site.make("burst.heic | page 2 | fit 100x")
    assert (representation.width, representation.height) == image.size == (100, 67)
    assert close_to(colour_at(image, 0.1, 0.5), RED)
    with pytest.raises(ProcessingError, match=r"page 3: 'burst.heic' has only 2 top-level image\(s\)"):
        site.registrar.register("burst.heic | page 3 | fit 100x")


def test_an_embedded_thumbnail_large_enough_is_decoded_instead():
    data = encoded(halves(1200, 800), thumbnails=[300])
    config = _config()
    image, _, size = heif.decode(io.BytesIO(data), "HEIF", "x", parse("x | fit 200x"), config)
    assert (image.size, size) == ((300, 200), (1200, 800))
    assert close_to(colour_at(image, 0.1, 0.5), RED) and close_to(colour_at(image, 0.9, 0.5), BLUE)
    image, _, size = heif.decode(io.BytesIO(data), "HEIF", "x", parse("x | fit 400x"), config)
    assert (image.size, size) == ((1200, 800), (1200, 800))  # too small for 400 px: the picture


def test_a_thumbnail_is_used_through_the_pipeline_at_the_promised_size(site):
    (site.media / "camera.heic").write_bytes(encoded(halves(1200, 800), thumbnails=[300]))
    representation, image = site.make("camera.heic | fit 250x")
    assert (representation.width, representation.height) == image.size == (250, 167)
    assert close_to(colour_at(image, 0.1, 0.5), RED) and close_to(colour_at(image, 0.9, 0.5), BLUE)


def test_probe_reads_headers_only():
    data = _grid(1300, 900)
    info = engines.probe(io.BytesIO(data), "x.heic", parse("x.heic"), _config())
    assert (info.format, info.width, info.height, info.has_alpha) == ("HEIF", 1300, 900, False)
    info = engines.probe(io.BytesIO(encoded(_transparent_right(60, 40))), "x.heic")
    assert (info.width, info.height, info.has_alpha) == (60, 40, True)


# --------------------------------------------------------------------------- refusals


def test_pixel_limit_is_checked_at_registration(make_site):
    site = make_site(max_source_pixels=10_000)
    (site.media / "big.heic").write_bytes(encoded(halves(200, 100)))
    with pytest.raises(LimitError, match="200x100 = 20000 pixels, more than max_source_pixels=10000"):
        site.registrar.register("big.heic | fit 10x")


def test_a_broken_header_is_refused_at_registration(site):
    (site.media / "cut.heic").write_bytes(encoded(halves())[:300])
    with pytest.raises(ProcessingError, match="'cut.heic' is not a readable HEIF image"):
        site.registrar.register("cut.heic | fit 10x")


def test_a_file_broken_after_registration_is_refused_when_processing(site):
    path = site.media / "photo.heic"
    data = encoded(halves())
    path.write_bytes(data)
    url = site.registrar.register("photo.heic | fit 100x").url
    path.write_bytes(data[: len(data) // 2])  # the header whole, the picture cut short
    response = site.get(url)
    assert response.status_int == 422
    assert "'photo.heic' is a HEIF image that could not be decoded" in response.text
    assert "Traceback" not in response.text


def test_frame_is_refused(site):
    (site.media / "photo.heic").write_bytes(encoded(halves(40, 20)))
    with pytest.raises(ProcessingError, match="frame applies to video sources; 'photo.heic' is a HEIF image"):
        site.registrar.register("photo.heic | frame 2")


# --------------------------------------------------------------------------- boxes read here


def both_readings(data: bytes, page: int) -> tuple[object, object]:
    """What the web process's own box reading (``heif.probe``; None when it leaves the
    file to libheif) and libheif (``heif.probe_native``) say of ``page``: a (width,
    height, alpha) or the refusal's message."""
    text = "x.heic" if page == 1 else f"x.heic | page {page}"

    def read(probe):
        try:
            return probe(io.BytesIO(data), "HEIF", "x.heic", parse(text), Config(max_source_pixels=10**12))
        except (ProcessingError, LimitError) as error:
            return str(error)

    return read(heif.probe), read(heif.probe_native)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(lambda: encoded(halves()), id="8-bit"),
        pytest.param(lambda: deep(halves(), 10), id="10-bit"),
        pytest.param(lambda: encoded(halves().convert("L")), id="grey"),
        pytest.param(lambda: encoded(_transparent_right()), id="alpha"),
        pytest.param(lambda: encoded(halves(), chroma=444), id="chroma-444"),
        pytest.param(lambda: _grid(1300, 900), id="grid"),
        pytest.param(lambda: with_orientation(halves(), 6), id="orientation-6"),
        pytest.param(lambda: with_orientation(halves(), 8), id="orientation-8"),
        pytest.param(lambda: with_orientation(halves(), 2), id="mirrored"),
        pytest.param(lambda: heic(halves()), id="imagemagick"),
        pytest.param(lambda: turned_heic(heic(halves()), 1), id="irot-by-hand"),
        pytest.param(lambda: turned_heic(heic(halves()), 2), id="irot-half-turn"),
        pytest.param(lambda: encoded(halves(1200, 800), thumbnails=[300, 100]), id="thumbnails"),
        pytest.param(
            lambda: several(halves(300, 200), _transparent_right(160, 100), halves(50, 40), primary=1),
            id="three-images-primary-second",
        ),
    ],
)
def test_the_boxes_read_here_give_what_libheif_gives(data):
    made = data()
    for page in (1, 2, 3, 4):
        ours, libheif = both_readings(made, page)
        assert ours is not None, f"page {page}: left to libheif"
        assert ours == libheif, f"page {page}"


def test_registration_never_loads_libheif_and_promises_its_size(make_site, monkeypatch):
    def refuse():
        raise AssertionError("libheif loaded in the web process")

    monkeypatch.setattr(heif, "_pillow_heif", refuse)
    site = make_site(max_source_pixels=20_000)
    burst = several(halves(300, 200), halves(160, 100), primary=1)
    (site.media / "burst.heic").write_bytes(burst)
    assert site.registrar.register("burst.heic | fit 100x").height == 62  # the primary: 160x100
    alpha = several(halves(100, 50), _transparent_right(100, 80), primary=1)
    (site.media / "cut-out.heic").write_bytes(alpha)
    assert site.registrar.register("cut-out.heic | fit 50x").content_type == "image/png"
    with pytest.raises(LimitError, match="page 2 of 'burst.heic' has 300x200 = 60000 pixels"):
        site.registrar.register("burst.heic | page 2 | fit 80x | format png")
