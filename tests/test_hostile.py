"""Files users will send that the rest of the suite never makes: broken, cut short, oddly
labelled or odd-but-valid, each one a class of defect found by running other projects'
decoder test files through fileproc_wsgi.

Every fixture is written here (by PyAV, the ``ffmpeg`` command, Pillow or ImageMagick,
then patched byte by byte where the point is a broken or unusual header). Each case is
judged by what a user would notice (see ``support.first_request``): the page gets either
a refusal that reads as a sentence or an ``<img>`` whose promised size is the size made,
and the request answers ``301``, or ``422`` recorded for good; never ``500``, never a
``503`` retried for ever, never an exception out of registration.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import time

import pytest
from PIL import Image, ImageDraw
from wand.image import Image as WandImage

from fileproc_wsgi.errors import FileProcError, LimitError
from fileproc_wsgi.remote import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from support import REFUSAL_TYPES, first_request, halves, reason_problems, srgb_profile
from test_pdf import A4, Page, fill, pdf_bytes

# Library warnings (Pillow's "Corrupt EXIF data", "Truncated File Read") are what these files
# provoke; a server logs them and goes on, so they are not errors here. Leaks still are.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")

SECRET = "a shared secret of some length"

# --------------------------------------------------------------------------- makers


def ffmpeg(*arguments, stdout=None) -> None:
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-y", *arguments], stdout=stdout, stderr=subprocess.PIPE, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def clip(directory, name: str, *, size="160x90", codec="libx264", pix_fmt="yuv420p", extra=()) -> bytes:
    """Two seconds of FFmpeg's test pattern, written by the ``ffmpeg`` command."""
    path = directory / name
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc=size={size}:rate=10", "-t", "2",
        "-c:v", codec, "-pix_fmt", pix_fmt, *extra, str(path),
    )  # fmt: skip
    return path.read_bytes()


def _box_at(data: bytes, kind: bytes) -> tuple[int, int]:
    """(offset, size) of the first top-level ISO box of ``kind``."""
    at = 0
    while at + 8 <= len(data):
        size, name = struct.unpack(">I4s", data[at : at + 8])
        if name == kind:
            return at, size
        at += size
    raise AssertionError(f"no {kind!r} box")


def unknown_codec_mkv(directory) -> bytes:
    """A Matroska file whose one video track names a codec no FFmpeg decoder exists for: the
    demuxer gives a stream without a codec context. Same length, so every size still holds."""
    data = clip(directory, "base.mkv")
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    return data.replace(b"V_MPEG4/ISO/AVC", b"V_FILEPROC/TEST")


def unknown_codec_avi(directory) -> bytes:
    """An AVI whose FourCC (in the stream header and the bitmap header) is no codec at all."""
    data = clip(directory, "base.avi", codec="mpeg4")
    assert data.count(b"FMP4") == 2
    return data.replace(b"FMP4", b"QZ9Q")


def cut_inside_moov(fraction: float):
    def make(directory) -> bytes:
        data = clip(directory, "fast.mp4", extra=("-movflags", "+faststart"))
        at, size = _box_at(data, b"moov")
        return data[: at + max(9, int(size * fraction))]

    return make


def title_not_utf8(container: str):
    def make(directory) -> bytes:
        clip(directory, "base.mkv")
        out = directory / f"titled.{container}"
        # Latin-1 "café" and two bytes no text encoding starts with: a title as old tools wrote it.
        ffmpeg(
            "-i", str(directory / "base.mkv"), "-c", "copy", "-metadata", b"title=caf\xe9 \xff\xfe", str(out)
        )
        return out.read_bytes()

    return make


def _two_page_tiff() -> tuple[bytearray, int, int]:
    """A two-page TIFF (300x400 greys) and the offsets of its first and second directory."""
    buffer = io.BytesIO()
    pages = [Image.new("L", (300, 400), shade) for shade in (30, 220)]
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:])
    data = bytearray(buffer.getvalue())
    first = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[first : first + 2])[0]
    second = struct.unpack("<I", data[first + 2 + 12 * count : first + 6 + 12 * count])[0]
    return data, first, second


def _entry(data: bytes, directory: int, tag: int) -> int:
    """The offset of ``tag``'s 12-byte entry in the TIFF directory at ``directory``."""
    for index in range(struct.unpack("<H", data[directory : directory + 2])[0]):
        at = directory + 2 + 12 * index
        if struct.unpack("<H", data[at : at + 2])[0] == tag:
            return at
    raise AssertionError(f"no tag {tag}")


def broken_second_page(how: str):
    """A TIFF whose first page is fine and whose second directory is broken ``how``."""

    def make(directory) -> bytes:
        data, first, second = _two_page_tiff()
        if how == "next-directory-beyond-the-end":  # Pillow: TypeError "Missing dimensions"
            count = struct.unpack("<H", data[first : first + 2])[0]
            data[first + 2 + 12 * count : first + 6 + 12 * count] = struct.pack("<I", len(data) + 1000)
        elif how == "width-as-text":  # ValueError
            data[_entry(data, second, 256) + 2 : _entry(data, second, 256) + 4] = struct.pack("<H", 2)
        elif how == "three-bit-samples":  # SyntaxError "unknown pixel mode"
            at = _entry(data, second, 258)
            data[at + 8 : at + 10] = struct.pack("<H", 3)
        elif how == "strip-beyond-the-end":  # OSError while decoding
            at = _entry(data, second, 273)
            data[at + 8 : at + 12] = struct.pack("<I", len(data) + 5000)
        elif how == "lzw-label-on-raw-data":  # OSError from the decoder
            at = _entry(data, second, 259)
            data[at + 8 : at + 10] = struct.pack("<H", 5)
        else:
            raise AssertionError(how)
        return bytes(data)

    return make


def cmyk_jpeg_with_profile(how: str):
    """A CMYK JPEG (pure cyan) whose embedded ICC profile littlecms cannot use."""

    def make(directory) -> bytes:
        profile = srgb_profile()
        icc = {
            "garbage": b"not a colour profile at all, just words " * 10,  # OSError on open
            "truncated": profile[:200],  # OSError on open
            "rgb-profile-claiming-cmyk": profile[:16] + b"CMYK" + profile[20:],  # PyCMSError
        }[how]
        buffer = io.BytesIO()
        Image.new("CMYK", (300, 200), (255, 0, 0, 0)).save(buffer, "JPEG", icc_profile=icc, quality=95)
        return buffer.getvalue()

    return make


def grey_gif_with_transparency(directory) -> bytes:
    """A GIF without any colour table, which Pillow opens in mode L with a ``transparency``
    value (the shape of Pillow's own ``no_palette_with_transparency.gif``)."""
    image = Image.new("L", (300, 200), 40)
    ImageDraw.Draw(image).rectangle([0, 0, 149, 199], fill=200)
    buffer = io.BytesIO()
    image.save(buffer, "GIF", transparency=40)
    data = buffer.getvalue()
    flags = data[10]
    assert flags & 0x80, "Pillow wrote no global colour table to remove"
    table = 3 * 2 ** ((flags & 7) + 1)
    data = data[:10] + bytes([flags & 0x70]) + data[11:13] + data[13 + table :]
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == "L" and "transparency" in opened.info
    return data


def oriented_tiff(orientation: int):
    def make(directory) -> bytes:
        exif = Image.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        halves(30, 200).save(buffer, "TIFF", exif=exif)
        return buffer.getvalue()

    return make


def oriented_jpeg(orientation: int):
    def make(directory) -> bytes:
        exif = Image.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        halves(1601, 1201).save(buffer, "JPEG", exif=exif, quality=90)
        return buffer.getvalue()

    return make


def large_profile_jpeg(width: int, height: int):
    """A JPEG whose ICC profile (a real sRGB profile padded past 64 KiB, its size field
    updated) needs several APP2 segments, pushing the frame header far from the start.
    425x250 is the size of Pillow's ``icc_profile_big.jpg``: ``fit 200x200`` gives 200x117.6."""

    def make(directory) -> bytes:
        profile = srgb_profile()
        big = struct.pack(">I", len(profile) + 150_000) + profile[4:] + bytes(150_000)
        buffer = io.BytesIO()
        halves(width, height).save(buffer, "JPEG", icc_profile=big, quality=90)
        data = buffer.getvalue()
        assert data.count(b"ICC_PROFILE\0") >= 3
        return data

    return make


def sar_disagreeing(directory) -> bytes:
    """4:3 pixels in the stream's header, 3:2 in the H.264 bitstream's own VUI."""
    clip(directory, "sar.mp4", extra=("-vf", "setsar=4/3"))
    out = directory / "mixed.mp4"
    ffmpeg(
        "-i",
        str(directory / "sar.mp4"),
        "-c",
        "copy",
        "-bsf:v",
        "h264_metadata=sample_aspect_ratio=3/2",
        str(out),
    )
    return out.read_bytes()


def edit_list(directory) -> bytes:
    """Cut without re-encoding from a point between keyframes: an MP4 edit list hides the
    frames before it."""
    clip(directory, "base.mp4", size="161x91", pix_fmt="yuv444p")
    out = directory / "edited.mp4"
    ffmpeg("-ss", "0.35", "-i", str(directory / "base.mp4"), "-c", "copy", str(out))
    return out.read_bytes()


def webp_header(width: int, height: int):
    """A lossless WebP whose header states ``width`` x ``height`` (the pixels that follow are
    a small image's): what a decompression bomb looks like before decoding."""

    def make(directory) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (50, 30), (0, 128, 255)).save(buffer, "WEBP", lossless=True)
        data = bytearray(buffer.getvalue())
        at = data.index(b"VP8L") + 8
        assert data[at] == 0x2F
        bits = struct.unpack("<I", data[at + 1 : at + 5])[0]
        bits = (bits & ~0x0FFFFFFF) | (width - 1) | (height - 1) << 14
        data[at + 1 : at + 5] = struct.pack("<I", bits)
        assert Image.open(io.BytesIO(bytes(data))).size == (width, height)
        return bytes(data)

    return make


def bigtiff(directory) -> bytes:
    buffer = io.BytesIO()
    halves(300, 200).save(buffer, "TIFF", big_tiff=True)
    assert buffer.getvalue()[:4] == b"II+\0"
    return buffer.getvalue()


def pdf_after(junk: int):
    """A one-page A4 PDF with ``junk`` bytes before ``%PDF-``, as mail gateways leave them."""

    def make(directory) -> bytes:
        prefix = (b"X-Gateway-Junk: " + b"z" * junk)[:junk]
        return prefix + pdf_bytes([Page(*A4, fill((255, 0, 0), 0, 0, 100, 100))])

    return make


def heif_with_brands(major: bytes, *compatible: bytes):
    """A HEIC written by ImageMagick, its ``ftyp`` box rewritten to carry these brands."""

    def make(directory) -> bytes:
        buffer = io.BytesIO()
        halves(64, 48).save(buffer, "PNG")
        with WandImage(blob=buffer.getvalue(), format="PNG") as picture:
            picture.format = "heic"
            data = picture.make_blob()
        size = struct.unpack(">I", data[:4])[0]
        assert data[4:8] == b"ftyp"
        ftyp = struct.pack(">I4s4sI", 16 + 4 * len(compatible), b"ftyp", major, 0) + b"".join(compatible)
        return ftyp + data[size:]

    return make


def avif_with_major(major: bytes):
    def make(directory) -> bytes:
        buffer = io.BytesIO()
        halves(64, 48).save(buffer, "AVIF")
        data = buffer.getvalue()
        assert data[4:8] == b"ftyp"
        return data[:8] + major + data[12:]

    return make


def icon(directory) -> bytes:
    buffer = io.BytesIO()
    halves(64, 64).save(buffer, "ICO", sizes=[(16, 16), (32, 32), (64, 64)])
    return buffer.getvalue()


def transport_stream(mode: str):
    def make(directory) -> bytes:
        clip(directory, "base.mkv")
        out = directory / f"clip.{mode}"
        extra = ("-mpegts_m2ts_mode", "1") if mode == "m2ts" else ()
        ffmpeg("-i", str(directory / "base.mkv"), "-c", "copy", "-f", "mpegts", *extra, str(out))
        return out.read_bytes()

    return make


def text(content: bytes):
    return lambda directory: content


# --------------------------------------------------------------------------- the table

MADE, REFUSED_EARLY, REFUSED = "made", "refused at registration", "refused"
# IMAGE: made, or refused by a reason that names the image format (never as a video).
IMAGE = "image"

CASES = [
    # Raw exceptions out of the video engine.
    pytest.param("a.mkv", unknown_codec_mkv, "", REFUSED_EARLY, "MKV", id="mkv-codec-without-decoder"),
    pytest.param("a.avi", unknown_codec_avi, "", REFUSED_EARLY, "AVI", id="avi-codec-without-decoder"),
    pytest.param("a.mp4", cut_inside_moov(0.5), "", REFUSED_EARLY, "MP4", id="mp4-cut-half-way-into-moov"),
    pytest.param("a.mp4", cut_inside_moov(0.1), "", REFUSED_EARLY, "MP4", id="mp4-cut-early-in-moov"),
    pytest.param("a.mkv", title_not_utf8("mkv"), "fit 100x100", MADE, "MKV", id="mkv-title-not-utf8"),
    pytest.param("a.mp4", title_not_utf8("mp4"), "fit 100x100", MADE, "MP4", id="mp4-title-not-utf8"),
    # Raw exceptions out of a TIFF's second directory: page 1 still works, page 2 is refused
    # (or made, where libtiff reads past what Pillow's own parser trips on).
    *(
        pytest.param(
            "a.tif", broken_second_page(how), "page 2 | fit 100x100", expected, "TIFF", id=f"tiff-p2-{how}"
        )
        for how, expected in (
            ("next-directory-beyond-the-end", REFUSED),
            ("width-as-text", REFUSED),
            ("three-bit-samples", IMAGE),
            ("strip-beyond-the-end", REFUSED),
            ("lzw-label-on-raw-data", IMAGE),
        )
    ),
    *(
        pytest.param(
            "a.tif", broken_second_page(how), "page 1 | fit 100x100", MADE, "TIFF", id=f"tiff-p1-{how}"
        )
        for how in ("next-directory-beyond-the-end", "three-bit-samples")
    ),
    # A broken profile on a CMYK JPEG: the picture is still shown (converted without it).
    *(
        pytest.param(
            "a.jpg", cmyk_jpeg_with_profile(how), "fit 150x", MADE, "JPEG", id=f"cmyk-jpeg-icc-{how}"
        )
        for how in ("garbage", "truncated", "rgb-profile-claiming-cmyk")
    ),
    # The encoder: a grey GIF with a transparency value is made, in every output format.
    *(
        pytest.param(
            "a.gif", grey_gif_with_transparency, steps, MADE, "GIF", id=f"grey-gif-transparency-{name}"
        )
        for name, steps in (
            ("fit", "fit 200x200"),
            ("as-is", ""),
            ("gif", "fit 200x200 | format gif"),
            ("png", "fit 200x200 | format png"),
            ("webp", "fit 200x200 | format webp"),
            ("jpeg", "fit 200x200 | format jpeg"),
        )
    ),
    # The size promised is the size made.
    *(
        pytest.param(
            "a.tif",
            oriented_tiff(orientation),
            steps,
            MADE,
            "TIFF",
            id=f"tiff-orientation-{orientation}{name}",
        )
        for orientation in (5, 6, 7, 8)
        for name, steps in (("", ""), ("-fit", "fit 100x100"), ("-fill", "fill 40x10"))
    ),
    *(
        pytest.param(
            "a.jpg",
            oriented_jpeg(orientation),
            steps,
            MADE,
            "JPEG",
            id=f"jpeg-orientation-{orientation}{name}",
        )
        for orientation in (5, 8)
        for name, steps in (("-fit", "fit 301x301"), ("-fit-width", "fit 199x"))
    ),
    pytest.param(
        "a.mp4",
        lambda d: clip(d, "o.mp4", size="161x91", pix_fmt="yuv444p"),
        "",
        MADE,
        "MP4",
        id="h264-odd-size",
    ),
    pytest.param(
        "a.mp4",
        lambda d: clip(d, "o.mp4", size="161x91", pix_fmt="yuv444p"),
        "fit 100x100",
        MADE,
        "MP4",
        id="h264-odd-size-fit",
    ),
    pytest.param(
        "a.mp4",
        lambda d: clip(d, "o.mp4", size="161x91", codec="libx265", pix_fmt="yuv444p"),
        "",
        MADE,
        "MP4",
        id="h265-odd-size",
    ),
    pytest.param(
        "a.avi",
        lambda d: clip(d, "o.avi", size="161x91", codec="mpeg4"),
        "",
        MADE,
        "AVI",
        id="mpeg4-odd-size",
    ),
    *(
        pytest.param(
            "a.mp4",
            lambda d, sar=sar: clip(
                d, "s.mp4", size="161x91", pix_fmt="yuv444p", extra=("-vf", f"setsar={sar}")
            ),
            steps,
            MADE,
            "MP4",
            id=f"h264-sar-{sar.replace('/', ':')}{name}",
        )
        for sar in ("4/3", "3/2", "8/9", "1001/1000")
        for name, steps in (("", ""), ("-fit", "fit 100x100"))
    ),
    pytest.param(
        "a.mkv",
        lambda d: clip(d, "s.mkv", size="160x90", extra=("-vf", "setsar=10/11")),
        "",
        MADE,
        "MKV",
        id="mkv-sar-10:11",
    ),
    *(
        pytest.param("a.jpg", large_profile_jpeg(*size), steps, MADE, "JPEG", id=f"jpeg-large-icc-{name}")
        for size, name, steps in (
            ((1601, 1201), "as-is", ""),
            ((1601, 1201), "fit", "fit 200x200"),
            ((1601, 1201), "draft", "fit 399x"),
            ((425, 250), "fit-rounds", "fit 200x200"),
            ((425, 250), "draft-rounds", "fit 100x100"),
        )
    ),
    # Container and bitstream disagree on the pixel shape; an edit list starts the track late.
    pytest.param("a.mp4", sar_disagreeing, "", MADE, "MP4", id="h264-sar-container-and-bitstream-differ"),
    pytest.param("a.mp4", edit_list, "fit 100x100", MADE, "MP4", id="h264-edit-list"),
    # Registration refuses what the header already shows to be over a limit.
    pytest.param(
        "a.webp", webp_header(16000, 9000), "fit 200x200", REFUSED_EARLY, "", id="webp-16000x9000-header"
    ),
    # Sniffing: real files in real variants.
    pytest.param("a.tif", bigtiff, "fit 150x", MADE, "TIFF", id="bigtiff"),
    pytest.param("a.pdf", pdf_after(100), "fit 200x", MADE, "PDF", id="pdf-100-bytes-before-header"),
    pytest.param("a.pdf", pdf_after(1000), "fit 200x", MADE, "PDF", id="pdf-1000-bytes-before-header"),
    pytest.param(
        "a.heic", heif_with_brands(b"mif3", b"mif3", b"miaf"), "", IMAGE, "HEIF", id="heif-only-mif3"
    ),
    pytest.param(
        "a.heic", heif_with_brands(b"mif3", b"mif1", b"heic", b"miaf"), "", MADE, "HEIF", id="heif-major-mif3"
    ),
    # libheif (1.23, bundled in pillow-heif 1.9) takes an msf1-major file for an image
    # sequence and refuses one without its track ("No 'moov' box"): named a HEIF, never a video.
    pytest.param(
        "a.heic",
        heif_with_brands(b"msf1", b"msf1", b"mif1", b"heic", b"hevc"),
        "",
        IMAGE,
        "HEIF",
        id="heif-msf1-heic",
    ),
    pytest.param("a.heic", heif_with_brands(b"avci", b"avci", b"mif1"), "", IMAGE, "HEIF", id="heif-avci"),
    pytest.param("a.heic", heif_with_brands(b"j2ki", b"j2ki", b"mif1"), "", IMAGE, "HEIF", id="heif-j2ki"),
    pytest.param(
        "a.heic", heif_with_brands(b"miaf", b"miaf", b"MiHE", b"heic"), "", MADE, "HEIF", id="heif-miaf"
    ),
    pytest.param("a.avif", avif_with_major(b"mif1"), "fit 32x", MADE, "AVIF", id="avif-major-mif1"),
    pytest.param("a.ico", icon, "fit 32x", IMAGE, "ICO", id="ico"),
    pytest.param("a.ts", transport_stream("ts"), "fit 100x", IMAGE, "MPEG-TS", id="mpeg-ts"),
    pytest.param("a.m2ts", transport_stream("m2ts"), "fit 100x", IMAGE, "MPEG-TS", id="mpeg-ts-m2ts"),
    # Reasons that read as sentences.
    pytest.param("a.eps", text(b"\xc5\xd0\xd3\xc6" + bytes(28)), "", REFUSED_EARLY, "EPS", id="eps-binary"),
    pytest.param(
        "a.eps",
        text(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"),
        "",
        REFUSED_EARLY,
        "",
        id="eps-text",
    ),
    pytest.param(
        "a.m3u8", text(b"#EXTM3U\n#EXTINF:1,\nhttp://example.com/a.ts\n"), "", REFUSED_EARLY, "HLS", id="hls"
    ),
    pytest.param(
        "a.pdf", text(b"%PDF-1.4\n" + b"\x00garbage " * 50), "", REFUSED_EARLY, "PDF", id="pdf-garbage"
    ),
    pytest.param("a.pdf", text(b"%PDF-1.4\n"), "", REFUSED_EARLY, "PDF", id="pdf-header-only"),
]


@pytest.mark.parametrize(("name", "make", "steps", "expected", "fmt"), CASES)
def test_what_users_send(site, tmp_path, name, make, steps, expected, fmt):
    work = tmp_path / "work"
    work.mkdir()
    (site.media / name).write_bytes(make(work))
    outcome = first_request(site, f"{name} | {steps}" if steps else name, fmt=fmt or None)
    assert not outcome.problems, outcome.describe()
    if expected == IMAGE:
        assert outcome.kind == MADE or fmt in outcome.reason, outcome.describe()
        assert "video" not in outcome.reason, outcome.describe()
    elif expected == REFUSED:
        assert outcome.kind.startswith("refused"), outcome.describe()
    else:
        assert outcome.kind == expected, outcome.describe()


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        pytest.param("a.eps", text(b"\xc5\xd0\xd3\xc6" + bytes(28)), "is an EPS file", id="eps"),
        pytest.param("a.ps", text(b"%!PS-Adobe-3.0\n"), "is a PostScript file", id="postscript"),
        pytest.param("a.m3u8", text(b"#EXTM3U\n"), "is an HLS playlist", id="hls"),
        pytest.param("a.svg", text(b'<svg xmlns="http://www.w3.org/2000/svg"/>'), "is an SVG file", id="svg"),
        pytest.param("a.jpg", text(b"\xff\xd8\xff\xe0" + bytes(12)), "JPEG", id="jpeg-header-only"),
    ],
)
def test_refusals_read_as_sentences(site, name, make, message):
    (site.media / name).write_bytes(make(None))
    with pytest.raises(FileProcError) as refused:
        site.registrar.register(f"{name} | fit 100x")
    assert message in str(refused.value)
    assert not reason_problems(str(refused.value), root=str(site.root)), str(refused.value)


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param("upscale | resize 16384x16384 | resize 64x64", id="side-then-shrink"),
        pytest.param("upscale | resize 8000x3000 | rotate 45 | resize 64x64", id="rotate-grows-past-pixels"),
        pytest.param(
            "upscale | resize 5000x5000 | rotate 45 | resize 64x64", id="rotate-of-the-largest-allowed"
        ),
        pytest.param("upscale | fit 16000x16000 | fit 64x64", id="fit-then-fit"),
        pytest.param("upscale | pad 9000x100 | crop 0,0,64,64", id="pad-then-crop"),
    ],
)
def test_every_step_is_held_to_the_output_limits(site, steps):
    halves(64, 64).save(site.media / "small.png")
    started = time.monotonic()
    outcome = first_request(site, f"small.png | {steps}")
    assert not outcome.problems, outcome.describe()
    assert outcome.kind.startswith("refused"), outcome.describe()
    assert "max_output_" in outcome.reason, outcome.describe()
    # Refused from the plan, not after allocating a gigabyte.
    assert time.monotonic() - started < 5


def test_a_chain_within_the_limits_is_made(site):
    halves(64, 64).save(site.media / "small.png")
    outcome = first_request(site, "small.png | upscale | resize 3000x3000 | rotate 45 | resize 64x64")
    assert outcome.kind == MADE and outcome.made == (64, 64), outcome.describe()


def test_registration_refuses_a_source_over_max_source_bytes(make_site):
    site = make_site(max_source_bytes=10_000)
    Image.frombytes("L", (200, 100), os.urandom(200 * 100)).save(site.media / "big.png")
    assert (site.media / "big.png").stat().st_size > 10_000
    with pytest.raises(LimitError, match="max_source_bytes"):
        site.registrar.register("big.png | fit 100x")


def test_registration_refuses_a_page_over_max_source_frames(make_site):
    site = make_site(max_source_frames=3)
    frames = [Image.new("RGB", (40, 30), (index * 40, 0, 0)) for index in range(5)]
    frames[0].save(site.media / "anim.webp", save_all=True, append_images=frames[1:])
    with pytest.raises(LimitError, match="max_source_frames"):
        site.registrar.register("anim.webp | page 5 | fit 20x")


# What a template host sees through POST /_fp/register: the broken text refused on its own.
BATCHED = [
    pytest.param("a.mkv", unknown_codec_mkv, "", id="mkv-codec-without-decoder"),
    pytest.param("a.mp4", cut_inside_moov(0.5), "", id="mp4-cut-inside-moov"),
    pytest.param("a.mkv", title_not_utf8("mkv"), "", id="mkv-title-not-utf8"),
    pytest.param(
        "a.tif", broken_second_page("next-directory-beyond-the-end"), "page 2", id="tiff-broken-page-2"
    ),
    pytest.param("a.webp", webp_header(16000, 9000), "", id="webp-16000x9000-header"),
]


@pytest.mark.parametrize(("name", "make", "steps"), BATCHED)
def test_register_endpoint_refuses_only_the_broken_text(make_site, tmp_path, name, make, steps):
    from webob import Request

    site = make_site(secret=SECRET)
    work = tmp_path / "work"
    work.mkdir()
    (site.media / name).write_bytes(make(work))
    halves(80, 60).save(site.media / "good.png")
    texts = ["good.png | fit 40x", f"{name} | {steps}" if steps else name, "good.png | fit 20x"]
    body = json.dumps({"texts": texts}).encode()
    stamp = str(int(time.time()))
    request = Request.blank("/_fp/register", method="POST", body=body, content_type="application/json")
    request.headers[TIMESTAMP_HEADER] = stamp
    request.headers[SIGNATURE_HEADER] = sign(SECRET, stamp, body)
    response = request.get_response(site.app)
    assert response.status_int == 200, response.text
    first, hostile, last = response.json["results"]
    assert (first["width"], last["width"]) == (40, 20)
    if "error" in hostile:
        assert hostile["error"]["type"] in REFUSAL_TYPES, hostile
        assert not reason_problems(hostile["error"]["message"], root=str(site.root)), hostile
    else:  # accepted: then its request must be made or refused for good
        outcome = first_request(site, texts[1])
        assert not outcome.problems, outcome.describe()
