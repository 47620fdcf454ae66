"""The camera raw engine: DNG, CR2, CR3, NEF, ARW, RAF, ORF, RW2 and PEF through rawpy,
the Python binding of LibRaw.

A raw file holds the sensor's mosaic, and most also hold a JPEG (or bitmap) preview the
camera made of it. A thumbnail rarely needs the mosaic: when the preview is at least as
large as the operations need (:func:`~fileproc_wsgi.operations.reduction_target`) and shows
the whole picture (the same proportions), the preview is decoded instead, which takes
milliseconds where demosaicing takes seconds. Otherwise the mosaic is demosaiced with the
camera's white balance into 8-bit sRGB, at half size (one pixel per 2x2 block of the
mosaic, four times less work) whenever half is still large enough.

**Size and orientation.** The picture's size is LibRaw's output size, with width and height
swapped when its ``flip`` turns it a quarter; that is the size registration promises, read
by opening the file (LibRaw parses the metadata; nothing is unpacked or demosaiced). No
header parse of ours could match it (LibRaw crops by per-camera tables), so :func:`probe`
defers to :func:`probe_native`, which the registrar runs in a worker process: LibRaw, native
code fed with strangers' files, is never loaded in the web process, and a file that crashes
it costs a worker, not the site. rawpy is imported only inside what runs there. Both
paths turn the picture by the same ``flip``: LibRaw's demosaic applies it, and the preview,
stored as the sensor lies, is turned here; an EXIF orientation inside the preview is
ignored, since the flip already says it.

**Colour.** LibRaw's output is sRGB, so no profile travels with it; a preview carries the
profile embedded in it, if any. A preview that does not decode (a camera's bug, or a file
edited by a tool that left a stale pointer) is passed over for the mosaic. ``page`` is
refused beyond 1: a raw file is one picture.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from typing import Any

from PIL import Image

from .. import formats
from ..errors import FileProcError, ProcessingError
from ..operations import reduction_target
from .boundary import failure, reason
from .native import NativeLibrary
from .raster import normalise

log = logging.getLogger(__name__)

FORMATS = frozenset({"DNG", "CR2", "CR3", "NEF", "ARW", "RAF", "ORF", "RW2", "PEF"})
# LibRaw's flip: 3 half a turn, 5 a quarter anticlockwise, 6 a quarter clockwise.
_TURNS = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}
_ASPECT_TOLERANCE = 0.01  # a preview cropped to other proportions is not the picture


_RAWPY = NativeLibrary("rawpy")


def available() -> dict[str, bool]:
    return {"raw": _RAWPY.installed()}  # found without importing: the web process never loads LibRaw


def load() -> None:
    _RAWPY.load()


def _rawpy() -> Any:
    return _RAWPY.get()


@contextlib.contextmanager
def _libraw_messages() -> Iterator[None]:
    """LibRaw's messages arrive as bytes (b'Unsupported file format or not RAW file'):
    made text, so the boundary shows them as any other reason."""
    try:
        yield
    except FileProcError:
        raise
    except Exception as error:
        if error.args and isinstance(error.args[0], bytes):
            raise ValueError(error.args[0].decode("utf-8", "replace")) from None
        raise


def _open(handle, found: str, reference: str):
    rawpy = _rawpy()
    with failure(f"source {reference!r} is not a readable {formats.display_name(found)} file"):
        with _libraw_messages():
            return rawpy.imread(io.BytesIO(handle.read()))


def _upright(raw) -> tuple[int, int]:
    sizes = raw.sizes
    return (sizes.height, sizes.width) if sizes.flip in (5, 6) else (sizes.width, sizes.height)


def _check(found: str, raw, reference: str, instructions, config) -> tuple[int, int]:
    page = instructions.page if instructions is not None else None
    if page and page > 1:
        raise ProcessingError(
            f"page {page}: {reference!r} is {formats.a(found, 'file')}, which has one page, its picture"
        )
    width, height = _upright(raw)
    if config is not None:
        config.check_source_pixels(f"source {reference!r}", width, height)
    return width, height


def probe(handle, found: str, reference: str, instructions=None, config=None) -> None:
    """None: only LibRaw knows the size (:func:`probe_native`, run in a worker)."""
    return None


def probe_native(handle, found: str, reference: str, instructions=None, config=None) -> tuple[int, int, bool]:
    with _open(handle, found, reference) as raw:
        width, height = _check(found, raw, reference, instructions, config)
    return width, height, False


def decode(handle, found: str, reference: str, instructions, config):
    with _open(handle, found, reference) as raw:
        upright = _check(found, raw, reference, instructions, config)
        config.check_plan(instructions.plan(*upright))
        target = reduction_target(instructions.operations, *upright) or upright
        if (target[0] > target[1]) != (upright[0] > upright[1]):
            target = target[::-1]  # a quarter turn among the steps: the picture's own sides
        image = _preview(raw, upright, target, config, reference)
        icc_profile = image.info.get("icc_profile") if image is not None else None
        if image is None:
            with failure(f"source {reference!r} is {formats.a(found, 'file')} that could not be decoded"):
                with _libraw_messages():
                    image, icc_profile = _demosaic(raw, upright, target), None
    return (*normalise(image, icc_profile), upright)


def _preview(
    raw, upright: tuple[int, int], target: tuple[int, int], config, reference: str
) -> Image.Image | None:
    """The camera's preview, turned upright, when it is large enough and the whole
    picture; None otherwise, and when it does not decode: the mosaic is still there."""
    rawpy = _rawpy()
    try:
        thumb = raw.extract_thumb()
        if thumb.format == rawpy.ThumbFormat.JPEG:
            image: Image.Image = Image.open(io.BytesIO(thumb.data), formats=["JPEG"])
            if image.width * image.height > config.max_source_pixels:
                return None
            image.load()
        else:
            image = Image.fromarray(thumb.data)
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except MemoryError:
        raise  # the boundary names the memory limit
    except Exception as error:
        log.info("fileproc_wsgi: %r: its preview does not decode (%s)", reference, reason(error))
        return None
    turn = _TURNS.get(raw.sizes.flip)
    if turn is not None:
        image = image.transpose(turn)
    width, height = image.size
    if width < target[0] or height < target[1]:
        return None
    if abs(width / height - upright[0] / upright[1]) > _ASPECT_TOLERANCE * upright[0] / upright[1]:
        return None
    return image


def _demosaic(raw, upright: tuple[int, int], target: tuple[int, int]) -> Image.Image:
    half = upright[0] // 2 >= target[0] and upright[1] // 2 >= target[1]
    pixels = raw.postprocess(use_camera_wb=True, half_size=half, output_bps=8, no_auto_bright=False)
    return Image.fromarray(pixels)
