"""The ImageMagick engine: PSD and the TIFFs and AVIFs Pillow cannot read, through the real
pipeline, and every way a file might reach a coder other than the one pinned for it.

Fixtures are written by ImageMagick itself (through Wand) from Pillow images, so the test
knows what each one shows. ImageMagick is required: a missing library fails these tests.
"""

from __future__ import annotations

import io
import re
import struct
import threading

import pytest
from PIL import Image, UnidentifiedImageError
from wand import resource as wand_resource
from wand.image import Image as WandImage

from fileproc_wsgi import engines
from fileproc_wsgi.engines import magick
from fileproc_wsgi.errors import FileProcError, LimitError, ProcessingError
from fileproc_wsgi.instructions import parse
from support import BLUE, GREEN, RED, close_to, colour_at, halves, srgb_profile
from test_heif import heic

# --------------------------------------------------------------------------- fixtures


def _wand(image: Image.Image) -> WandImage:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return WandImage(blob=buffer.getvalue(), format="PNG")


def psd(
    image: Image.Image, *, depth: int = 8, cmyk: bool = False, layers=(), icc: bytes | None = None
) -> bytes:
    """A PSD whose merged (composite) image is ``image``, with ``layers`` after it."""
    with _wand(image) as picture:
        if cmyk:
            picture.transform_colorspace("cmyk")
        picture.depth = depth
        if icc:
            picture.profiles["icc"] = icc
        for layer in layers:
            with _wand(layer) as extra:
                picture.sequence.append(extra)
        picture.format = "psd"
        data = picture.make_blob()
    _, height, width, bits, mode = struct.unpack(">HIIHH", data[12:26])
    expected_mode = 4 if cmyk else 1 if image.mode == "L" else 3  # CMYK, greyscale, RGB
    assert (width, height, bits, mode) == (image.width, image.height, depth, expected_mode)
    return data


def psb(image: Image.Image) -> bytes:
    """Photoshop's large document format: the same magic, version 2, read by the PSD coder."""
    with _wand(image) as picture:
        picture.format = "psb"
        data = picture.make_blob()
    assert data[:6] == b"8BPS\x00\x02"
    return data


def float_tiff(*pages: Image.Image, orientation: str | None = None) -> bytes:
    """32-bit floating-point samples: a TIFF Pillow cannot open, so the dispatch falls
    back to ImageMagick."""
    with _wand(pages[0]) as picture:
        for page in pages[1:]:
            with _wand(page) as extra:
                picture.sequence.append(extra)
        for frame in picture.sequence:
            with frame:
                frame.depth = 32
                if orientation:
                    frame.orientation = orientation
        picture.options["quantum:format"] = "floating-point"
        picture.format = "tiff"
        data = picture.make_blob()
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(data))
    return data


def cmyk16_tiff(image: Image.Image) -> bytes:
    """16-bit CMYK with an alpha sample: another TIFF Pillow cannot open."""
    with _wand(image) as picture:
        picture.transform_colorspace("cmyk")
        picture.depth = 16
        picture.format = "tiff"
        data = picture.make_blob()
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(data))
    return data


def psd_header(width: int, height: int) -> bytes:
    """A PSD that declares a size and holds no pixels: a decompression bomb's header."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    return header + struct.pack(">IIIH", 0, 0, 0, 0) + bytes(64)


# --------------------------------------------------------------------------- decoding


def test_imagemagick_and_its_coders_are_present():
    assert magick.available() == {"imagemagick": True}
    assert engines.available()["imagemagick"]
    assert magick.has_coder("PSD") and magick.has_coder("TIFF")
    assert magick.has_coder("AVIF"), "this ImageMagick has no AVIF coder (libheif)"


def _transparent_right(width: int = 600, height: int = 400) -> Image.Image:
    image = halves(width, height, mode="RGBA")
    image.paste((0, 0, 255, 0), (width // 2, 0, width, height))
    return image


@pytest.mark.parametrize(
    ("name", "data", "steps", "size", "top_left", "bottom_right", "content_type"),
    [
        pytest.param(
            "art.psd", lambda: psd(halves()), "fit 200x", (200, 133), RED, BLUE, "image/jpeg", id="psd"
        ),
        pytest.param(
            "large.psb", lambda: psb(halves()), "fit 200x", (200, 133), RED, BLUE, "image/jpeg", id="psb"
        ),
        pytest.param(
            "deep.psd",
            lambda: psd(halves(), depth=16),
            "fit 200x",
            (200, 133),
            RED,
            BLUE,
            "image/jpeg",
            id="psd-16-bit",
        ),
        pytest.param(
            "print.psd",
            lambda: psd(halves(), cmyk=True),
            "fit 200x",
            (200, 133),
            RED,
            BLUE,
            "image/jpeg",
            id="psd-cmyk",
        ),
        pytest.param(
            "layers.psd",
            lambda: psd(
                halves(), layers=[Image.new("RGB", (300, 100), GREEN), Image.new("RGB", (50, 500), GREEN)]
            ),
            "fit 200x",
            (200, 133),
            RED,
            BLUE,
            "image/jpeg",
            id="psd-layered-shows-the-composite",
        ),
        pytest.param(
            "glass.psd",
            lambda: psd(_transparent_right()),
            "fit 200x",
            (200, 133),
            RED + (255,),
            (0, 0, 0, 0),
            "image/png",
            id="psd-transparency",
        ),
        pytest.param(
            "scan.tif",
            lambda: float_tiff(halves()),
            "fit 200x",
            (200, 133),
            RED,
            BLUE,
            "image/jpeg",
            id="tiff-float",
        ),
        pytest.param(
            "proof.tif",
            lambda: cmyk16_tiff(_transparent_right()),
            "fit 200x",
            (200, 133),
            RED + (255,),
            (0, 0, 0, 0),
            "image/png",
            id="tiff-cmyk-16-transparency",
        ),
        pytest.param(
            "turned.tif",
            lambda: float_tiff(halves(), orientation="right_top"),
            "fit 200x",
            (200, 300),
            RED,  # orientation 6: shown turned clockwise, the left half on top
            BLUE,
            "image/jpeg",
            id="tiff-orientation",
        ),
        pytest.param(
            "clear.tif",
            lambda: float_tiff(_transparent_right()),
            "fit 200x",
            (200, 133),
            RED + (255,),
            (0, 0, 0, 0),
            "image/png",
            id="tiff-float-transparency",
        ),
        pytest.param(
            "pages.tif",
            lambda: float_tiff(halves(), Image.new("RGB", (90, 150), GREEN)),
            "page 2 | fit 60x",
            (60, 100),
            GREEN,
            GREEN,
            "image/jpeg",
            id="tiff-second-page",
        ),
    ],
)
def test_sources_through_the_pipeline(site, name, data, steps, size, top_left, bottom_right, content_type):
    (site.media / name).write_bytes(data())
    representation, image = site.make(f"{name} | {steps}")
    assert (representation.width, representation.height) == image.size == size
    assert representation.content_type == content_type
    assert close_to(colour_at(image, 0.1, 0.1), top_left)
    assert close_to(colour_at(image, 0.9, 0.9), bottom_right)


def test_colour_profile_is_kept(site):
    (site.media / "tagged.psd").write_bytes(psd(halves(), icc=srgb_profile()))
    _, image = site.make("tagged.psd | fit 100x")
    assert image.info.get("icc_profile") == srgb_profile()


def test_engine_gives_modes_the_operations_know():
    cases = {
        "PSD": psd(halves(60, 40).convert("L")),
        "TIFF": float_tiff(_transparent_right(60, 40)),
    }
    instructions = parse("x | fit 10x")
    modes = {}
    for found, data in cases.items():
        image, _, _ = magick.decode(io.BytesIO(data), found, "x", instructions, _config())
        modes[found] = image.mode
    assert modes == {"PSD": "L", "TIFF": "RGBA"}


def _config(**settings):
    from fileproc_wsgi.config import Config

    return Config(**settings)


# --------------------------------------------------------------------------- refusals


_POSTSCRIPT = b"%!PS-Adobe-3.0\n/Courier findfont 12 scalefont setfont 10 10 moveto (x) show showpage\n"
_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'
# An SVG is drawn by the SVG engine, never ImageMagick; one with an entity is refused there.
_SVG_ENTITY = b'<!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>' + _SVG.replace(b"/>", b"/>&x;", 1)
_MVG = b"viewbox 0 0 10 10\nfill red\nrectangle 0 0 10 10\n"
_MSL = b'<?xml version="1.0"?>\n<image><read filename="/etc/passwd"/><write filename="out.png"/></image>\n'


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        pytest.param("art.psd", _POSTSCRIPT, "'art.psd' is a PostScript file", id="postscript-named-psd"),
        pytest.param("art.jpg", _POSTSCRIPT, "'art.jpg' is a PostScript file", id="postscript-named-jpg"),
        pytest.param(
            "vector.psd",
            _SVG_ENTITY,
            "'vector.psd' is an SVG file that declares entities or attribute defaults in its DOCTYPE",
            id="svg-named-psd",
        ),
        pytest.param(
            "drawing.png",
            _MVG,
            "not in a format this server reads (images, SVG, PDF, office documents, video)",
            id="mvg-named-png",
        ),
        pytest.param("script.jpg", _MSL, "'script.jpg' is an XML file", id="msl-named-jpg"),
        pytest.param(
            "notes.heic",
            b"hello\n",
            "not in a format this server reads (images, SVG, PDF, office documents, video)",
            id="text-named-heic",
        ),
        pytest.param(
            "passwd.psd",
            b"text:/etc/passwd",
            "not in a format this server reads (images, SVG, PDF, office documents, video)",
            id="text-coder-trick",
        ),
        pytest.param(
            "shell.psd",
            b"8BPS" + _POSTSCRIPT,
            "'shell.psd' is not a readable PSD image (improper image header)",
            id="psd-magic-then-postscript",
        ),
        pytest.param(
            "shell.heic",
            b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + _SVG,
            "'shell.heic' is not a readable HEIF image",
            id="heif-magic-then-svg",
        ),
    ],
)
def test_disguised_files_are_refused(site, name, content, message):
    # Registered while the file was a good PSD, then replaced: processing refuses it by its bytes.
    path = site.media / name
    path.write_bytes(psd(halves(40, 20)))
    url = site.registrar.register(name).url
    path.write_bytes(content)
    response = site.get(url)
    assert response.status_int == 422
    assert message in response.text
    assert "Traceback" not in response.text
    with pytest.raises(FileProcError, match=re.escape(message.split(" (")[0])):
        site.registrar.register(f"{name} | fit 10x")


def _png() -> bytes:
    buffer = io.BytesIO()
    halves(40, 20).save(buffer, "PNG")
    return buffer.getvalue()


_FOREIGN = {
    "png": _png,
    "postscript": lambda: _POSTSCRIPT,
    "svg": lambda: _SVG,
    "mvg": lambda: _MVG,
    "msl": lambda: _MSL,
    "text-coder": lambda: b"text:/etc/passwd",
    "psd": lambda: psd(halves(40, 20)),
    "heic": lambda: heic(halves(40, 20)),
    "tiff": lambda: float_tiff(halves(40, 20)),
}


@pytest.mark.parametrize(
    ("found", "content"),
    [
        pytest.param(found, content, id=f"{content}-as-{found}")
        for found in ("PSD", "TIFF")
        for content in sorted(_FOREIGN)
        if content != {"PSD": "psd", "TIFF": "tiff"}[found]
    ],
)
def test_only_the_pinned_coder_reads(found, content):
    """Whatever the bytes are, the engine reads them with the coder for ``found`` alone: a
    PNG handed over as a PSD is a broken PSD, though ImageMagick would read it if asked
    to guess."""
    data = _FOREIGN[content]()
    instructions = parse("x | fit 10x")
    with pytest.raises(ProcessingError, match=f"'x' is not a readable {found} image"):
        magick.probe_native(io.BytesIO(data), found, "x", instructions)
    with pytest.raises(ProcessingError, match=f"'x' is not a readable {found} image"):
        magick.decode(io.BytesIO(data), found, "x", instructions, _config())


def test_guessing_imagemagick_would_have_read_them():
    # The control for the test above: left to guess, ImageMagick decodes these.
    for data in (_png(), psd(halves(40, 20)), heic(halves(40, 20))):
        with WandImage(blob=data) as image:
            assert image.size == (40, 20)


def test_pixel_bomb_is_refused_from_its_header(site):
    path = site.media / "bomb.psd"
    path.write_bytes(psd(halves(40, 20)))
    url = site.registrar.register("bomb.psd | fit 100x").url
    path.write_bytes(psd_header(9000, 9000))  # 81 megapixels in 110 bytes
    response = site.get(url)
    assert response.status_int == 422
    # Not "insufficient image data": the header was refused before any pixel was read.
    assert "'bomb.psd' has 9000x9000 = 81000000 pixels, more than max_source_pixels=50000000" in response.text


def test_pixel_bomb_beyond_imagemagick_limits():
    with pytest.raises(LimitError):
        magick.decode(io.BytesIO(psd_header(30000, 30000)), "PSD", "big.psd", parse("big.psd"), _config())


def test_small_limit_applies_to_imagemagick_sources(make_site):
    site = make_site(max_source_pixels=10_000)
    (site.media / "art.psd").write_bytes(psd(halves(200, 100)))
    with pytest.raises(LimitError, match="200x100 = 20000 pixels, more than max_source_pixels=10000"):
        site.registrar.register("art.psd | fit 10x")


@pytest.mark.parametrize(
    ("name", "data", "steps", "message"),
    [
        pytest.param(
            "art.psd",
            lambda: psd(halves(40, 20), layers=[Image.new("RGB", (10, 10))]),
            "page 2",
            "page 2: 'art.psd' is a PSD file, which has one page, its composite image; layers are not pages",
            id="psd-page-2",
        ),
    ],
)
def test_pages_that_do_not_exist_are_refused_at_registration(site, name, data, steps, message):
    (site.media / name).write_bytes(data())
    with pytest.raises(ProcessingError, match=message):
        site.registrar.register(f"{name} | {steps}")


def test_frame_is_refused(site):
    (site.media / "art.psd").write_bytes(psd(halves(40, 20)))
    with pytest.raises(ProcessingError, match="frame applies to video sources; 'art.psd' is a PSD image"):
        site.registrar.register("art.psd | frame 2")  # the format alone decides


# --------------------------------------------------------------------------- process-wide


@pytest.mark.in_process
def test_resource_limits_follow_the_configuration(make_site):
    time_limit = wand_resource.limits["time"]
    site = make_site(max_source_pixels=12_345_678)
    (site.media / "art.psd").write_bytes(psd(halves(40, 20)))
    site.make("art.psd | fit 10x")
    limits = wand_resource.limits
    # Debian's policy allows more than these (area 128 MP, memory 256 MiB), so they show as set.
    assert limits["thread"] == 1
    assert limits["area"] == 12_345_678
    assert limits["memory"] == 2 * 10 * 12_345_678
    assert limits["time"] == time_limit  # never set: ImageMagick 6 would end the process


def test_threads_probe_and_decode_side_by_side():
    sources = {
        "PSD": psd(halves(300, 200)),
        "TIFF": float_tiff(halves(300, 200)),
    }
    instructions = parse("x | fit 30x")
    config = _config()
    failures = []

    def work():
        for _ in range(5):
            for found, data in sources.items():
                try:
                    size = magick.probe_native(io.BytesIO(data), found, "x", instructions)
                    image, _, _ = magick.decode(io.BytesIO(data), found, "x", instructions, config)
                    if not size[:2] == image.size == (300, 200) or not close_to(
                        colour_at(image, 0.1, 0.5), RED
                    ):
                        failures.append((found, size, image.size))
                except Exception as error:  # collected, so the main thread reports it
                    failures.append((found, repr(error)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
