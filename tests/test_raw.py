"""The camera raw engine (rawpy, LibRaw): DNG files made here, through registration and the
real pipeline, by the camera's preview when it is large enough and by demosaicing
otherwise; and the sniffing of the other raw kinds from their first bytes.

The DNGs are written with tifffile as cameras and Adobe's converter lay them out: the
preview (an uncompressed bitmap, or a JPEG) in the first directory, the sensor's RGGB
mosaic (12-bit, in a SubIFD) after it, or the mosaic alone. The preview and the mosaic
show the same picture, so each path is told apart by the engine's decoded size. rawpy is
required: a missing library fails these tests (tests/test_engines.py checks the refusal).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import struct
import subprocess
import sys

import numpy
import pytest
import tifffile
from PIL import Image

from fileproc_wsgi import engines, formats
from fileproc_wsgi.config import Config
from fileproc_wsgi.engines import raw
from fileproc_wsgi.errors import LimitError, ProcessingError
from fileproc_wsgi.instructions import parse
from support import close_to, colour_at, halves

ROOT = pathlib.Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------- fixtures

_IDENTITY = (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1)  # 3x3 signed rationals


def _mosaic(picture: Image.Image) -> numpy.ndarray:
    """The RGGB Bayer mosaic a sensor would record of ``picture``, in 12 bits."""
    samples = numpy.asarray(picture.convert("RGB")).astype(numpy.uint16) * 16
    mosaic = numpy.empty(samples.shape[:2], numpy.uint16)
    mosaic[0::2, 0::2] = samples[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = samples[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = samples[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = samples[1::2, 1::2, 2]
    return mosaic


def dng(
    picture: Image.Image, *, preview: int | None = None, orientation: int = 1, jpeg: bool = False
) -> bytes:
    """A DNG of ``picture``, with a preview ``preview`` pixels wide (none when None)."""
    camera = [
        (271, "s", 0, "Fileproc", True),  # Make
        (274, "H", 1, orientation, True),
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50708, "s", 0, "Fileproc Test", True),  # UniqueCameraModel
        (50721, "2i", 9, _IDENTITY, True),  # ColorMatrix1: the mosaic's colours are sRGB's
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral: no white balance to do
    ]
    sensor = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
        (50717, "I", 1, 4095, True),  # WhiteLevel: 12 bits
    ]
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as tiff:
        if preview is None:
            tiff.write(_mosaic(picture), photometric=32803, subfiletype=0, extratags=camera + sensor)
        else:
            small = picture.resize((preview, round(preview * picture.height / picture.width)))
            tiff.write(
                numpy.asarray(small), photometric="rgb", subfiletype=1, subifds=1, rowsperstrip=small.height,
                extratags=camera,
            )  # fmt: skip
            tiff.write(_mosaic(picture), photometric=32803, subfiletype=0, extratags=sensor)
    data = buffer.getvalue()
    return _with_jpeg_preview(data, small) if jpeg else data


def _with_jpeg_preview(data: bytes, small: Image.Image) -> bytes:
    """``data`` with its preview stored as a JPEG, as cameras store it. tifffile writes
    JPEG only through imagecodecs, so the bitmap's one strip is pointed at a JPEG instead."""
    encoded = io.BytesIO()
    small.save(encoded, "JPEG", quality=92)
    jpeg = encoded.getvalue()
    out = bytearray(data)
    with tifffile.TiffFile(io.BytesIO(data)) as tiff:
        tags = tiff.pages[0].tags
        places = {code: tags[code].valueoffset for code in (259, 262, 273, 279)}
    struct.pack_into("<H", out, places[259], 7)  # Compression: JPEG
    struct.pack_into("<H", out, places[262], 6)  # PhotometricInterpretation: YCbCr
    struct.pack_into("<I", out, places[273], len(out))  # StripOffsets: the JPEG, appended
    struct.pack_into("<I", out, places[279], len(jpeg))  # StripByteCounts
    return bytes(out + jpeg)


DARK_RED, DARK_BLUE = (200, 0, 0), (0, 0, 200)


def picture(width: int = 600, height: int = 400) -> Image.Image:
    return halves(width, height, left=DARK_RED, right=DARK_BLUE)  # not clipped white by the sensor


def _decoded(data: bytes, text: str):
    return raw.decode(io.BytesIO(data), "DNG", "x", parse(text), Config())


# --------------------------------------------------------------------------- decoding


def test_rawpy_is_present():
    assert raw.available() == {"raw": True}
    assert {engines.ENGINE_OF[kind] for kind in raw.FORMATS} == {"raw"}


@pytest.mark.parametrize(
    ("data", "text", "decoded_size"),
    [
        pytest.param(lambda: dng(picture(), preview=300), "x | fit 200x", (300, 200), id="bitmap-preview"),
        pytest.param(
            lambda: dng(picture(), preview=300, jpeg=True), "x | fit 200x", (300, 200), id="jpeg-preview"
        ),
        # Demosaiced at half size: 300x200 is still as large as 250 px needs.
        pytest.param(lambda: dng(picture(), preview=160), "x | fit 250x", (300, 200), id="preview-too-small"),
        pytest.param(lambda: dng(picture()), "x | fit 250x", (300, 200), id="no-preview-half-size"),
        pytest.param(lambda: dng(picture()), "x | fit 400x", (600, 400), id="no-preview-full-size"),
        pytest.param(lambda: dng(picture(), preview=300), "x", (600, 400), id="no-resize-needs-the-mosaic"),
    ],
)
def test_the_preview_is_used_when_large_enough_and_the_mosaic_otherwise(data, text, decoded_size):
    image, _, size = _decoded(data(), text)
    assert (image.size, size, image.mode) == (decoded_size, (600, 400), "RGB")
    assert close_to(colour_at(image, 0.1, 0.5), DARK_RED, 60)
    assert close_to(colour_at(image, 0.9, 0.5), DARK_BLUE, 60)


@pytest.mark.parametrize(
    ("name", "data", "steps", "size", "top", "bottom"),
    [
        pytest.param(
            "a.dng",
            lambda: dng(picture(), preview=300),
            "fit 200x",
            (200, 133),
            DARK_RED,
            DARK_BLUE,
            id="preview",
        ),
        pytest.param(
            "b.dng", lambda: dng(picture()), "fit 200x", (200, 133), DARK_RED, DARK_BLUE, id="demosaiced"
        ),
        # Orientation 6: shown a quarter turned clockwise, so the left half (red) is on top,
        # by the preview and by the mosaic alike.
        pytest.param(
            "c.dng",
            lambda: dng(picture(), preview=300, orientation=6),
            "fit 200x",
            (200, 300),
            DARK_RED,
            DARK_BLUE,
            id="preview-turned",
        ),
        pytest.param(
            "d.dng",
            lambda: dng(picture(), orientation=6),
            "fit 200x",
            (200, 300),
            DARK_RED,
            DARK_BLUE,
            id="demosaiced-turned",
        ),
        pytest.param(
            "e.dng",
            lambda: dng(picture(), orientation=8),
            "fit 200x",
            (200, 300),
            DARK_BLUE,
            DARK_RED,
            id="turned-the-other-way",
        ),
        pytest.param(
            "f.dng",
            lambda: dng(picture(), preview=300, jpeg=True),
            "fit 100x100 | format png",
            (100, 67),
            DARK_RED,
            DARK_BLUE,
            id="jpeg-preview-to-png",
        ),
    ],
)
def test_raw_files_through_the_pipeline(site, name, data, steps, size, top, bottom):
    (site.media / name).write_bytes(data())
    representation, image = site.make(f"{name} | {steps}")
    assert (representation.width, representation.height) == image.size == size
    assert close_to(colour_at(image, 0.1, 0.1), top, 60)
    assert close_to(colour_at(image, 0.9, 0.9), bottom, 60)


def test_registration_reads_the_size_without_decoding():
    info = engines.probe(io.BytesIO(dng(picture(), orientation=6)), "x.dng", parse("x.dng"), Config())
    assert (info.format, info.width, info.height, info.has_alpha) == ("DNG", 400, 600, False)


# --------------------------------------------------------------------------- refusals


def test_pixel_limit_is_checked_at_registration(make_site):
    site = make_site(max_source_pixels=10_000)
    (site.media / "big.dng").write_bytes(dng(picture(200, 100)))
    with pytest.raises(LimitError, match="200x100 = 20000 pixels, more than max_source_pixels=10000"):
        site.registrar.register("big.dng | fit 10x")


def test_page_2_is_refused(site):
    (site.media / "a.dng").write_bytes(dng(picture(64, 48)))
    with pytest.raises(ProcessingError, match="page 2: 'a.dng' is a DNG file, which has one page"):
        site.registrar.register("a.dng | page 2")


def test_a_file_libraw_cannot_read_is_refused_at_registration(site):
    (site.media / "scan.nef").write_bytes(_tiff(b"II", b"NIKON CORPORATION\0") + bytes(2000))
    with pytest.raises(ProcessingError, match="'scan.nef' is not a readable NEF file"):
        site.registrar.register("scan.nef | fit 10x")


def test_a_mosaic_cut_short_is_refused_when_processing(site):
    data = dng(picture())
    head = data[:1024]  # the first directory, which registration reads, and not the mosaic
    assert formats.sniff(head) == "DNG"
    (site.media / "cut.dng").write_bytes(head)
    response = site.get(site.registrar.register("cut.dng | fit 100x").url)
    assert response.status_int == 422
    assert "'cut.dng' is a DNG file that could not be decoded" in response.text
    assert "Traceback" not in response.text


# --------------------------------------------------------------------------- sniffing


def _tiff(order: bytes, make: bytes, *, marker: bytes = b"") -> bytes:
    """A TIFF header and a first directory holding one Make tag, as cameras write them."""
    pack = "<" if order == b"II" else ">"
    magic = b"II*\x00" if order == b"II" else b"MM\x00*"
    start = 8 + len(marker)
    entry = struct.pack(pack + "HHII", 0x010F, 2, len(make), start + 18)
    return (
        magic
        + struct.pack(pack + "I", start)
        + marker
        + struct.pack(pack + "H", 1)
        + entry
        + b"\0" * 4
        + make
    )


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        pytest.param(_tiff(b"II", b"NIKON CORPORATION\0"), "NEF", id="nef"),
        pytest.param(_tiff(b"MM", b"NIKON CORPORATION\0"), "NEF", id="nef-big-endian"),
        pytest.param(_tiff(b"II", b"SONY\0"), "ARW", id="arw-make-inline"),
        pytest.param(_tiff(b"II", b"PENTAX Corporation\0"), "PEF", id="pef"),
        pytest.param(_tiff(b"II", b"Canon\0", marker=b"CR\x02\0\0\0\0\0"), "CR2", id="cr2"),
        pytest.param(_tiff(b"II", b"Canon\0"), "TIFF", id="other-maker-is-tiff"),
        pytest.param(b"II*\x00\xff\xff\x00\x00" + bytes(100), "TIFF", id="directory-beyond-the-head"),
        pytest.param(b"IIRO\x08\x00\x00\x00" + bytes(16), "ORF", id="orf"),
        pytest.param(b"IIU\x00\x08\x00\x00\x00" + bytes(16), "RW2", id="rw2"),
        pytest.param(b"FUJIFILMCCD-RAW 0201FF383501", "RAF", id="raf"),
        pytest.param(b"\0\0\0\x18ftypcrx \0\0\0\x01crx isom", "CR3", id="cr3"),
    ],
)  # fmt: skip
def test_raw_kinds_are_sniffed_from_their_first_bytes(head, kind):
    assert formats.sniff(head) == kind


# --------------------------------------------------------------------------- in workers


def test_a_preview_that_does_not_decode_gives_way_to_the_mosaic():
    data = dng(picture(), preview=300, jpeg=True)
    jpeg_start = data.rindex(b"\xff\xd8\xff")
    broken = data[:jpeg_start] + b"\xff\xd8\xff\xe0" + bytes(range(256)) * ((len(data) - jpeg_start) // 256)
    image, _, size = raw.decode(io.BytesIO(broken), "DNG", "x.dng", parse("x.dng | fit 100x"), Config())
    assert size == (600, 400)
    assert image.size == (300, 200)  # the mosaic at half size, not the 300 px preview
    left, right = colour_at(image, 0.1, 0.5), colour_at(image, 0.9, 0.5)
    assert left[0] > 150 > max(left[1:]) and right[2] > 150 > max(right[:2])  # demosaiced, auto-bright


def test_registration_reads_raw_headers_in_a_worker(site, monkeypatch):
    def refuse():
        raise AssertionError("LibRaw loaded in the web process")

    monkeypatch.setattr(raw, "_rawpy", refuse)
    (site.media / "a.dng").write_bytes(dng(picture(), orientation=6))
    representation = site.registrar.register("a.dng | fit 100x")
    assert (representation.width, representation.height) == (100, 150)
    (site.media / "scan.nef").write_bytes(_tiff(b"II", b"NIKON CORPORATION\0") + bytes(2000))
    for _ in range(2):  # the second refusal is the one kept for this version of the file
        with pytest.raises(ProcessingError, match="'scan.nef' is not a readable NEF file"):
            site.registrar.register("scan.nef | fit 10x")


CRASHING_ENGINE = """
import ctypes

FORMATS = ("CRASH",)

def sniff(head):
    return "CRASH" if head.startswith(b"CRASH\\n") else None

def available():
    return {"native": True}

def probe(handle, found, reference, instructions, config):
    return None  # only the native library can tell

def probe_native(handle, found, reference, instructions, config):
    return ctypes.string_at(0)  # a native library's crash on this file: SIGSEGV

def decode(handle, found, reference, instructions, config):
    raise AssertionError("never asked")
"""

CRASH_SITE = """
import json, pathlib, sys
from fileproc_wsgi.config import Config
from fileproc_wsgi.errors import FileProcError
from fileproc_wsgi.registrar import Registrar

root = pathlib.Path(sys.argv[1])
registrar = Registrar(Config(
    database_url=f"sqlite:///{root / 'fp.db'}", storage=str(root / "results"),
    source_roots={"default": str(root / "media")},
))
answers = []
for text in ("a.crash | fit 10x", "a.crash | fit 20x", "b.png | fit 10x"):
    try:
        answers.append(registrar.register(text).width)
    except FileProcError as error:
        answers.append(f"{type(error).__name__}: {error}")
registrar.close()
print(json.dumps(answers))
"""


def test_a_header_read_that_crashes_its_library_costs_a_worker_not_the_site(tmp_path):
    plugin = tmp_path / "plugin"
    info = plugin / "fileproc_crash-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fileproc-crash\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[fileproc_wsgi.engines]\ncrash = fileproc_crash\n")
    (plugin / "fileproc_crash.py").write_text(CRASHING_ENGINE)
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a.crash").write_bytes(b"CRASH\n" + bytes(100))
    picture().save(tmp_path / "media" / "b.png")
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", CRASH_SITE, str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=environment, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    crashed, again, png = json.loads(done.stdout.strip().splitlines()[-1])
    assert crashed == "ProcessingError: a library crashed while processing this source (SIGSEGV)"
    assert again == crashed  # kept for this version: no second worker lost to it
    assert png == 10  # and the site still registers
    assert done.stderr.count("died of SIGSEGV") == 1
