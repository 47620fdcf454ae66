"""The ImageMagick engine, through Wand: Photoshop (PSD, and PSB, its large-document form)
sources, and the TIFFs and AVIFs Pillow cannot read (32-bit float, 16-bit CMYK, CIELab,
12-bit TIFF ...; AVIF layouts Pillow's libavif refuses: the dispatch falls back here when
Pillow fails on one). An AVIF with an alpha plane is refused when this ImageMagick would
read it without its transparency. HEIF photos have their own engine (:mod:`.heif`), which
measured faster and read more files than ImageMagick's HEIC coder.

Only these. Every further ImageMagick coder is attack surface (the coders have a long CVE
history) for formats a web site rarely receives, and Pillow already reads the ones it does;
raw camera files and SVG would mean external delegates or a scripting language.

**Coders are pinned.** A source is read from memory with the coder named for the format
:func:`~fileproc_wsgi.engines.sniff` found (``PSD``, ``TIFF``, ``AVIF``), so ImageMagick never
guesses a format from the content or a file name: a PostScript, SVG, MVG, MSL or
``text:``-file handed to the PSD coder is just a broken PSD. ImageMagick's process-wide
security policy is left alone: tightening it would also switch coders off for the host
application's own use of ImageMagick.

**Limits.** The header is pinged (no pixels) and checked against ``max_source_pixels``
before decoding, and when registering: there in a worker (:func:`probe_native`), so that
Wand and ImageMagick are never loaded by a web process that only registers. ImageMagick's
own limits are a second line, for what the header does not tell (a PSD without a merged
image composites its layers). They are process-wide, set on
the first decode and again whenever ``max_source_pixels`` changes; a system policy can lower
them further, never raise them:

- ``area`` = ``max_source_pixels``: larger images leave RAM for the disk-backed cache;
- ``width``, ``height`` = ``max_source_pixels``: no side longer than the whole budget;
- ``memory``, ``map``, ``disk`` = twice one image at 16 bits and five channels (CMYK and
  alpha): the decoded image and one working copy (orientation, colourspace);
- ``thread`` = 1: jobs already run in parallel threads; OpenMP teams inside each would
  oversubscribe the cores, and an OpenMP pool does not survive a pre-forking server's fork;
- ``time`` is never set: ImageMagick 6 counts it from the process's first pixel cache and
  then aborts the whole process, which would kill a long-running server.

**Threads.** ImageMagick is safe with one wand per thread (eight threads decoding side by
side without a lock showed no fault), but the memory, map and disk limits are totals for
the process: two large decodes at once could push one of them over, and a LimitError is
recorded as permanent. So one lock serialises decoding through this engine and the limits
hold per decode. Pings allocate no pixels and do not take it, so registering a source
never waits for a decode; Pillow's engine is not held up either.

**Pages and orientation.** PSD sources give their composite (flattened) image; layers are
not pages, so ``page 2`` and beyond are refused. AVIF gives its primary image, already
turned by the container's ``irot``/``imir`` (libheif applies them, as readers must); an
EXIF orientation inside repeats them and is ignored, else the picture would turn twice.
TIFF and PSD honour their orientation tag. ``page N`` of a TIFF is its
Nth directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import importlib.util
import io
import itertools
import os
import platform
import threading
from collections.abc import Iterator
from typing import Any

from PIL import Image, TiffImagePlugin

from .. import formats
from ..errors import LimitError, MissingLibraryError, ProcessingError, UnsupportedSourceError
from .native import NativeLibrary
from .raster import normalise

FORMATS = frozenset({"PSD"})
_CODERS = {"PSD": "PSD", "TIFF": "TIFF", "AVIF": "AVIF"}
# Read through libheif, which applies the container's irot/imir itself.
_TURNED_BY_CONTAINER = {"AVIF"}
# An alpha plane is an auxiliary image named so in the "meta" box, near the file's start.
_ALPHA_PLANE = b"auxiliary:alpha"
_META_BYTES = 64 * 1024
# Orientations 5-8 (left_top ...) turn the image a quarter: width and height swap.
_TRANSPOSED = {"left_top", "right_top", "right_bottom", "left_bottom"}
_UPRIGHT = {"undefined", "top_left"}
_BYTES_PER_PIXEL = 2 * 5  # 16-bit samples (a Q16 library), CMYK and alpha
_CHAR_PIXEL = 1  # StorageType CharPixel: 8 bits a sample, scaled from whatever depth
# The blob's name only carries the "[scene]" to read; ImageMagick ignores that suffix when a
# file of the whole name exists in the working directory, so the name is an unlikely one.
_BLOB_NAME = "fileproc-source"

# The library names Wand tries, MagickWand<version><option> (wand.api.library_paths).
_VERSIONS = ("", "-7", "-7.Q8", "-7.Q16", "-6", "-Q16", "-Q8", "-6.Q16")
_OPTIONS = ("", "HDRI", "HDRI-2")

_WAND = NativeLibrary("wand", "api", "exceptions", "image", "resource", "version")

_lock = threading.Lock()
_limits_for: int | None = None


def available() -> dict[str, bool]:
    # Where Wand is loaded (a worker) that says it all; elsewhere, found without loading.
    return {"imagemagick": _WAND.loaded() or (_WAND.installed() and _library_found())}


def load() -> None:
    _WAND.load()


def wand_installed() -> bool:
    """Whether Wand itself is installed, whatever becomes of loading its library."""
    try:
        return importlib.util.find_spec("wand") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules holds None for it
        return False


@functools.cache
def _library_found() -> bool:
    """Whether Wand will find a MagickWand library, looked for where Wand looks
    (``MAGICK_HOME``, then the linker's search path, under every name Wand tries) without
    loading it: a web process that only registers never loads ImageMagick. A library
    found that then fails to load is refused where it is loaded, in a worker."""
    if platform.system() == "Windows":
        return True  # Wand reads the registry there: leave it to Wand
    extra = os.environ.get("WAND_MAGICK_LIBRARY_SUFFIX")
    suffixes = [*(extra.split(";") if extra else []), *map("".join, itertools.product(_VERSIONS, _OPTIONS))]
    home = os.environ.get("MAGICK_HOME")
    if home:
        endings = (".dylib",) if platform.system() == "Darwin" else (".so", ".so.9", ".so.6")
        for suffix, ending in itertools.product(suffixes, endings):
            if os.path.exists(os.path.join(home, "lib", f"libMagickWand{suffix}{ending}")):
                return True
    return any(ctypes.util.find_library(f"MagickWand{suffix}") for suffix in suffixes)


def _wand() -> Any:
    """Wand, with the modules used here; ImportError (or OSError) when it does not load."""
    return _WAND.get()


@functools.cache
def has_coder(found: str) -> bool:
    """Whether this ImageMagick has the coder for a sniffed format (AVIF needs libheif)."""
    try:
        return bool(_wand().version.formats(_CODERS[found]))
    except (ImportError, OSError):
        return False


def probe(handle, found: str, reference: str, instructions=None, config=None) -> None:
    """None: ImageMagick's coders read the header (:func:`probe_native`, run in a worker)."""
    return None


def probe_native(handle, found: str, reference: str, instructions=None, config=None) -> tuple[int, int, bool]:
    scene = _scene(found, reference, instructions)
    data = handle.read()
    # No lock: a ping allocates no pixels, and registration must not wait for a decode.
    with _reading(data, found, reference, scene, ping=True) as image:
        width, height = _upright(image, found)
        # ImageMagick's TIFF coder decides on alpha only while reading the pixels.
        alpha = _tiff_alpha(data, scene) if found == "TIFF" else bool(image.alpha_channel)
    if config is not None:
        _check_source_pixels(width, height, reference, config)
    return width, height, alpha


def _upright(image, found: str) -> tuple[int, int]:
    """The size once oriented, for header and decode alike (AVIF arrives turned)."""
    turned = found not in _TURNED_BY_CONTAINER and image.orientation in _TRANSPOSED
    return (image.height, image.width) if turned else (image.width, image.height)


def _check_source_pixels(width: int, height: int, reference: str, config) -> None:
    if width * height > config.max_source_pixels:
        raise LimitError(
            f"source {reference!r} has {width}x{height} = {width * height} pixels, "
            f"more than max_source_pixels={config.max_source_pixels}"
        )


def decode(handle, found: str, reference: str, instructions, config):
    scene = _scene(found, reference, instructions)
    data = handle.read()
    with _lock:
        _set_limits(config.max_source_pixels)
        with _reading(data, found, reference, scene, ping=True) as header:
            upright = _upright(header, found)
        _check_source_pixels(*upright, reference, config)
        config.check_plan(instructions.plan(*upright))
        with _reading(data, found, reference, scene, ping=False) as image:
            mode, pixels, alpha, size, icc_profile = _export(image, found, reference)
    image = Image.frombytes(mode, size, pixels)
    del pixels
    if mode == "CMYK":
        # Pillow has no CMYK with alpha: convert the colours (with the profile), then add it back.
        image, icc_profile = normalise(image, icc_profile)
        if alpha is not None:
            image.putalpha(Image.frombytes("L", size, alpha))
        return image, icc_profile, upright
    return (*normalise(image, icc_profile), upright)


def _scene(found: str, reference: str, instructions) -> int:
    """ImageMagick's 0-based scene for the page asked for."""
    page = instructions.page if instructions is not None else None
    if found == "TIFF":
        return (page or 1) - 1
    if page and page > 1:
        what = "its composite image; layers are not pages" if found == "PSD" else "its primary image"
        raise ProcessingError(
            f"page {page}: {reference!r} is {formats.a(found, 'file')}, which has one page, {what}"
        )
    return 0


@contextlib.contextmanager
def _reading(data: bytes, found: str, reference: str, scene: int, *, ping: bool) -> Iterator[Any]:
    """A Wand image read (or only pinged) from ``data`` by the coder pinned for ``found``,
    destroyed on leaving the block. ImageMagick's errors become this project's."""
    from . import advice  # the package's words on what to install; it imports this module lazily

    try:
        wand = _wand()
    except (ImportError, OSError):
        raise MissingLibraryError(
            f"source {reference!r} is {formats.a(found, 'file')}, "
            f"and this server lacks ImageMagick to read it: {advice('imagemagick')}"
        ) from None
    library = wand.api.library
    coder = _CODERS[found]
    if not has_coder(found):
        raise UnsupportedSourceError(
            f"source {reference!r} is {formats.a(found, 'file')}, "
            f"and this server's ImageMagick has no {coder} coder"
        )
    image = wand.image.Image()
    try:
        # Both pin the coder, so that ImageMagick never looks at the content to choose one:
        # the wand's format does for reading a blob, only the "CODER:" prefix does for
        # pinging one (PingImage takes the format as a hint and sniffs the bytes).
        if not library.MagickSetFormat(image.wand, coder.encode()):
            raise ProcessingError(f"source {reference!r}: ImageMagick refused the {coder} coder")
        library.MagickSetFilename(image.wand, f"{coder}:{_BLOB_NAME}[{scene}]".encode())
        read = library.MagickPingImageBlob if ping else library.MagickReadImageBlob
        done = read(image.wand, data, len(data))
        problem = image.get_exception()
        if problem is not None and not isinstance(problem, Warning):
            raise _error(problem, found, reference)
        if not done or not library.MagickGetNumberImages(image.wand):
            if scene:  # the coder found no such page, and says nothing
                raise ProcessingError(
                    f"page {scene + 1}: {reference!r} has fewer pages, or is not a readable {found} image"
                )
            raise ProcessingError(f"source {reference!r} is not a readable {found} image")
        library.MagickSetFirstIterator(image.wand)
        if found in _TURNED_BY_CONTAINER and _ALPHA_PLANE in data[:_META_BYTES] and not image.alpha_channel:
            # libheif builds that drop the alpha plane would show its transparent parts in
            # whatever colour the pixels underneath hold (black, for most encoders).
            raise UnsupportedSourceError(
                f"source {reference!r} is {formats.a(found)} with an alpha plane, "
                "which this server's ImageMagick reads without its transparency"
            )
        yield image
    finally:
        image.destroy()


def _tiff_alpha(data: bytes, scene: int) -> bool:
    """Whether directory ``scene`` of a TIFF has an alpha sample, read as ImageMagick does:
    any extra sample, or a fourth sample on RGB."""
    try:
        stream = io.BytesIO(data)
        directory = TiffImagePlugin.ImageFileDirectory_v2(data[:8])
        for _ in range(scene + 1):
            stream.seek(directory.next)
            directory.load(stream)
    except Exception:  # a header ImageMagick pinged but Pillow cannot walk: assume opaque
        return False
    samples, photometric = directory.get(277, 1), directory.get(262)  # SamplesPerPixel, Photometric
    return bool(directory.get(338)) or (photometric == 2 and samples >= 4)  # ExtraSamples, RGB


def _error(problem: Exception, found: str, reference: str) -> Exception:
    # "improper image header `fileproc-source[0]' @ error/psd.c/ReadPSDImage/2175" -> the reason
    reason = str(problem).split(" `", 1)[0].strip() or type(problem).__name__
    kind = type(problem).__name__
    if kind == "ResourceLimitError" or "exceeds limit" in reason or "resources exhausted" in reason:
        return LimitError(f"source {reference!r} is larger than this server's ImageMagick allows ({reason})")
    if kind == "PolicyError":
        return UnsupportedSourceError(
            f"source {reference!r} is {formats.a(found, 'file')}, "
            "which this server's ImageMagick policy does not read"
        )
    return ProcessingError(f"source {reference!r} is not a readable {found} image ({reason})")


def _set_limits(max_pixels: int) -> None:
    global _limits_for
    if _limits_for == max_pixels:
        return
    limits = _wand().resource.limits
    limits["thread"] = 1
    limits["area"] = max_pixels
    limits["width"] = limits["height"] = max_pixels
    budget = 2 * max_pixels * _BYTES_PER_PIXEL
    for name in ("memory", "map", "disk"):
        limits[name] = budget
    _limits_for = max_pixels


def _export(image, found: str, reference: str):
    """``(mode, pixels, alpha, size, icc_profile)``: 8-bit samples of the upright image,
    in the mode Pillow will hold them in, copied out of ImageMagick."""
    try:
        if found not in _TURNED_BY_CONTAINER and image.orientation not in _UPRIGHT:
            image.auto_orient()
        icc_profile = image.profiles["icc"]
        has_alpha = bool(image.alpha_channel)
        space = image.colorspace
        if space == "cmyk":
            return (
                "CMYK",
                _pixels(image, "CMYK"),
                _pixels(image, "A") if has_alpha else None,
                image.size,
                icc_profile,
            )
        if space == "gray":
            mode, channels = ("LA", "IA") if has_alpha else ("L", "I")
        else:
            if space != "srgb":
                # AVIF arrives as YCbCr; Lab, linear RGB and the rest become sRGB here.
                image.transform_colorspace("srgb")
            mode = channels = "RGBA" if has_alpha else "RGB"
        return mode, _pixels(image, channels), None, image.size, icc_profile
    except _wand().exceptions.WandException as error:
        raise _error(error, found, reference) from None


def _pixels(image, channels: str) -> bytearray:
    width, height = image.size
    pixels = bytearray(width * height * len(channels))
    buffer = (ctypes.c_char * len(pixels)).from_buffer(pixels)
    if not _wand().api.library.MagickExportImagePixels(
        image.wand, 0, 0, width, height, channels.encode(), _CHAR_PIXEL, buffer
    ):
        problem = image.get_exception()
        raise ProcessingError(f"ImageMagick could not export the pixels ({problem})")
    return pixels
