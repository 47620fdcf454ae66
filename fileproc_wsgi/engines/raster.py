"""The Pillow engine: JPEG, PNG, GIF, WebP, AVIF, TIFF and BMP sources.

Large JPEGs are decoded at a reduced size (DCT scaling through ``Image.draft``) when the
operations will shrink them anyway, which is most of the speed and memory win of a
thumbnailer. Pixel limits are checked on the header, before any pixel is decoded.

``page N`` of a GIF, WebP, APNG, TIFF or MPO file is its Nth frame. Reaching it walks
the frames before it (decoding them, for animations), so N is bounded by
``max_source_frames``, and a frame count is only ever asked of Pillow where the header
states it: GIF and TIFF count theirs by walking every frame, which takes tens of seconds
for a file of a few million one-pixel frames.
"""

from __future__ import annotations

import contextlib
import io
import re

from PIL import ExifTags, Image, ImageOps, features

from ..errors import LimitError, ProcessingError
from ..operations import reduction_target

FORMATS = {"JPEG", "PNG", "GIF", "WEBP", "AVIF", "TIFF", "BMP"}
_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
# Animations: every frame has the canvas's size, and reaching one decodes those before it,
# so a header read never moves to another frame of these.
_CANVAS_FORMATS = {"GIF", "WEBP", "PNG"}
# "cannot identify image file <_io.BufferedReader name='/srv/media/a.png'>"
_FILE_OBJECT = re.compile(r"\s*<_io\.\w+ name=.*?>")


def sniff(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and b"avif" in head[8:32] or head[4:12] == b"ftypavis":
        return "AVIF"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if head.startswith(b"BM"):
        return "BMP"
    return None


def available() -> dict[str, bool]:
    return {
        "pillow": True,
        "jpeg": features.check("jpg"),
        "webp": features.check("webp"),
        "avif": features.check("avif"),
        "littlecms": features.check("littlecms2"),
    }


def _open(handle, found: str, reference: str, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(handle, formats=[found])
    # The warning arrives as an exception only where warnings are errors (the tests).
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise LimitError(f"source {reference!r} has more pixels than this server decodes") from None
    except Exception as error:  # Pillow raises many types for bad headers
        raise ProcessingError(
            f"source {reference!r} is not a readable {found} image ({_reason(error)})"
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise LimitError(
            f"source {reference!r} has {width}x{height} = {width * height} pixels, "
            f"more than max_source_pixels={max_pixels}"
        )
    return image


def _seek_page(image: Image.Image, page: int, reference: str, config) -> None:
    """Move ``image`` to page ``page``, walking no further than that page."""
    config.check_page(page)
    # WebP, APNG and MPO state their frame count in the header (an attribute); GIF and
    # TIFF have a property that walks the whole file, which is not asked for here.
    declared = vars(image).get("n_frames")
    if declared is not None and declared > config.max_source_frames:
        raise LimitError(
            f"source {reference!r} has {declared} frames, "
            f"more than max_source_frames={config.max_source_frames}"
        )
    # One frame at a time, which costs what one seek to the page would, and counts the
    # frames of a file that has fewer without asking for n_frames.
    for index in range(1, page):
        try:
            image.seek(index)
        except EOFError:
            raise ProcessingError(f"page {page}: {reference!r} has only {index} page(s)") from None
        except Exception as error:  # a broken frame or directory on the way
            raise ProcessingError(
                f"page {page} of {reference!r} is not readable ({_reason(error)})"
            ) from None
    width, height = image.size
    if width * height > config.max_source_pixels:  # a page can be larger than the first
        raise LimitError(
            f"page {page} of {reference!r} has {width}x{height} = {width * height} pixels, "
            f"more than max_source_pixels={config.max_source_pixels}"
        )


def _reason(error: Exception) -> str:
    """Pillow's message, on one line and without the file object it names (a server path)."""
    text = _FILE_OBJECT.sub("", str(error)).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _orientation(image: Image.Image) -> int:
    if image.format == "PNG" and "exif" not in image.info:
        # Pillow looks for an eXIf chunk after the pixels by decoding them all: never for a
        # header read, and never where a decoding error would be swallowed here.
        return 1
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block must not make the picture unreadable
        return 1
    return value if value in range(1, 9) else 1


def _upright(image: Image.Image, orientation: int) -> tuple[int, int]:
    width, height = image.size
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def probe(handle, found: str, reference: str, instructions=None) -> tuple[int, int, bool]:
    image = _open(handle, found, reference, max_pixels=2**62)
    with image:
        page = instructions.page if instructions is not None else None
        if page and page > 1 and found not in _CANVAS_FORMATS:
            # The pages of a TIFF (the images of an MPO) can differ in size. A page beyond
            # the last is refused when processing; its header gives the first page's size.
            with contextlib.suppress(EOFError):
                image.seek(page - 1)
        width, height = _upright(image, _orientation(image))
        alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        return width, height, alpha


def decode(handle, found: str, reference: str, instructions, config) -> tuple[Image.Image, bytes | None]:
    image = _open(handle, found, reference, config.max_source_pixels)
    if instructions.frame is not None:
        raise ProcessingError(f"frame applies to video sources; {reference!r} is a {found} image")
    if instructions.page and instructions.page > 1:
        _seek_page(image, instructions.page, reference, config)

    orientation = _orientation(image)
    upright = _upright(image, orientation)
    predicted = instructions.predict_size(*upright)
    if predicted:
        config.check_result_size(*predicted)
    if found == "JPEG":
        target = reduction_target(instructions.operations, *upright)
        if target and target[0] < upright[0]:
            if orientation in _TRANSPOSED:
                target = target[::-1]
            image.draft(None, target)

    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except Exception as error:
        raise ProcessingError(f"source {reference!r} could not be decoded ({_reason(error)})") from None
    icc_profile = image.info.get("icc_profile")
    return _normalise(image, icc_profile)


def _normalise(image: Image.Image, icc_profile: bytes | None) -> tuple[Image.Image, bytes | None]:
    """One of L, LA, RGB, RGBA, so that every operation meets a mode it knows."""
    mode = image.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return image, icc_profile
    if mode == "CMYK":
        if icc_profile:
            from PIL import ImageCms  # only CMYK sources need littlecms

            try:
                source_profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
                srgb = ImageCms.createProfile("sRGB")
                return ImageCms.profileToProfile(image, source_profile, srgb, outputMode="RGB"), None
            except ImageCms.PyCMSError:
                pass  # a broken profile: fall back to the naive conversion below
        return image.convert("RGB"), None
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        # 16-bit greys: keep the top 8 bits.
        return image.convert("I").point(lambda value: value * (1 / 256)).convert("L"), icc_profile
    if mode == "1":
        return image.convert("L"), icc_profile
    if mode in ("P", "PA"):
        alpha = mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if alpha else "RGB"), icc_profile
    return image.convert("RGBA" if "transparency" in image.info else "RGB"), icc_profile
