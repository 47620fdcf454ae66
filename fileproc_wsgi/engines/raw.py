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
by opening the file (LibRaw parses the metadata; nothing is unpacked or demosaiced). Both
paths turn the picture by the same ``flip``: LibRaw's demosaic applies it, and the preview,
stored as the sensor lies, is turned here; an EXIF orientation inside the preview is
ignored, since the flip already says it.

**Colour.** LibRaw's output is sRGB, so no profile travels with it; a preview carries the
profile embedded in it, if any. ``page`` is refused beyond 1: a raw file is one picture.
"""

from __future__ import annotations

import io

from PIL import Image

from .. import formats
from ..errors import FileProcError, LimitError, ProcessingError
from ..operations import reduction_target
from .boundary import reason
from .raster import normalise

try:
    import rawpy
except ImportError:  # reported by available(), and a raw source is refused naming the extra
    rawpy = None

FORMATS = frozenset({"DNG", "CR2", "CR3", "NEF", "ARW", "RAF", "ORF", "RW2", "PEF"})
# LibRaw's flip: 3 half a turn, 5 a quarter anticlockwise, 6 a quarter clockwise.
_TURNS = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}
_ASPECT_TOLERANCE = 0.01  # a preview cropped to other proportions is not the picture


def available() -> dict[str, bool]:
    return {"raw": rawpy is not None}


def _open(handle, found: str, reference: str):
    try:
        return rawpy.imread(io.BytesIO(handle.read()))
    except MemoryError:
        raise  # the boundary names the memory limit
    except Exception as error:  # LibRawFileUnsupportedError, LibRawIOError ...
        raise ProcessingError(
            f"source {reference!r} is not a readable {formats.display_name(found)} file ({_reason(error)})"
        ) from None


def _reason(error: Exception) -> str:
    # LibRaw's messages arrive as bytes: b'Unsupported file format or not RAW file'.
    if error.args and isinstance(error.args[0], bytes):
        return reason(ValueError(error.args[0].decode("utf-8", "replace")))
    return reason(error)


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
    if config is not None and width * height > config.max_source_pixels:
        raise LimitError(
            f"source {reference!r} has {width}x{height} = {width * height} pixels, "
            f"more than max_source_pixels={config.max_source_pixels}"
        )
    return width, height


def probe(handle, found: str, reference: str, instructions=None, config=None) -> tuple[int, int, bool]:
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
        try:
            image = _preview(raw, upright, target, config)
            icc_profile = image.info.get("icc_profile") if image is not None else None
            if image is None:
                image, icc_profile = _demosaic(raw, upright, target), None
        except Exception as error:
            if isinstance(error, (FileProcError, MemoryError)):
                raise  # the boundary names the memory limit
            what = formats.a(found, "file")
            raise ProcessingError(
                f"source {reference!r} is {what} that could not be decoded ({_reason(error)})"
            ) from None
    return (*normalise(image, icc_profile), upright)


def _preview(raw, upright: tuple[int, int], target: tuple[int, int], config) -> Image.Image | None:
    """The camera's preview, turned upright, when it is large enough and the whole picture."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        image = Image.open(io.BytesIO(thumb.data), formats=["JPEG"])
        if image.width * image.height > config.max_source_pixels:
            return None
        image.load()
    else:
        image = Image.fromarray(thumb.data)
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
