"""The Pillow engine: JPEG, PNG, GIF, WebP, AVIF, TIFF (BigTIFF too), BMP and ICO sources.

Large JPEGs are decoded at a reduced size (DCT scaling through ``Image.draft``) when the
operations will shrink them anyway, which is most of the speed and memory win of a
thumbnailer. Pixel limits are checked on the header, before any pixel is decoded.

An animated GIF, WebP or APNG without a ``page`` step is decoded as its first frame plus
an :class:`~fileproc_wsgi.engines.Animation` that walks the rest only when asked (a
result in a format that cannot animate never decodes them). Pillow composites each frame
as a browser shows it (disposal and blending resolved); this module turns it upright,
crops it to the logical screen and normalises its mode like the first, one frame at a
time, so a job holds one source frame, never all of them. Whether a GIF is animated at
all is found by skipping over its first frame's data, never by counting its frames.

``page N`` of a GIF, WebP, APNG, TIFF or MPO file is its Nth frame (a still). Reaching it walks
the frames before it (decoding them, for animations), so N is bounded by
``max_source_frames``, and a frame count is only ever asked of Pillow where the header
states it: GIF and TIFF count theirs by walking every frame, which takes tens of seconds
for a file of a few million one-pixel frames.

The upright size is worked out by one function, :func:`_upright`, for the header read
and for the decode alike, so the size the registrar promised is the size decoded.
Transparency is always an alpha channel after decoding (a GIF or PNG in mode L or RGB
with a ``transparency`` value becomes LA or RGBA), so no later step or encoder meets a
transparency key it does not expect.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
from collections.abc import Iterator

from PIL import ExifTags, Image, ImageOps, features

from .. import formats
from ..errors import FileProcError, LimitError, ProcessingError
from ..operations import reduction_target
from . import Animation
from .boundary import reason

log = logging.getLogger(__name__)

FORMATS = {"JPEG", "PNG", "GIF", "WEBP", "AVIF", "TIFF", "BMP", "ICO"}
TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
# Animations: every frame has the canvas's size, and reaching one decodes those before it,
# so a header read never moves to another frame of these.
_CANVAS_FORMATS = {"GIF", "WEBP", "PNG"}
# Pillow's own table (ImageOps.exif_transpose), applied to every frame of an animation.
TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# available() keys and Pillow's names for them; a format's own is looked at on its first
# source (has_feature), since reading the list loads the WebP and AVIF modules.
_FEATURES = {"jpeg": "jpg", "webp": "webp", "avif": "avif", "littlecms": "littlecms2"}


def available() -> dict[str, bool]:
    return {"pillow": True, **{name: has_feature(name) for name in _FEATURES}}


@functools.cache
def has_feature(name: str) -> bool:
    """Whether this Pillow was built with ``name`` (a key of :func:`available`)."""
    return bool(features.check(_FEATURES[name]))


def _open(handle, found: str, reference: str, max_pixels: int) -> Image.Image:
    try:
        image = Image.open(handle, formats=[found])
    # The warning arrives as an exception only where warnings are errors (the tests).
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise LimitError(f"source {reference!r} has more pixels than this server decodes") from None
    except MemoryError:
        raise  # the boundary names the memory limit
    except Exception as error:  # Pillow raises many types for bad headers
        raise ProcessingError(
            f"source {reference!r} is not a readable {formats.display_name(found)} image "
            f"({reason(error, handle)})"
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise LimitError(
            f"source {reference!r} has {width}x{height} = {width * height} pixels, "
            f"more than max_source_pixels={max_pixels}"
        )
    return image


def _check_declared_frames(image: Image.Image, page: int, reference: str, config) -> None:
    """Refuse ``page`` from what the header says, before any frame is walked."""
    config.check_page(page)
    # WebP, APNG and MPO state their frame count in the header (an attribute); GIF and
    # TIFF have a property that walks the whole file, which is not asked for here.
    declared = vars(image).get("n_frames")
    if declared is None:
        return
    if declared > config.max_source_frames:
        raise LimitError(
            f"source {reference!r} has {declared} frames, "
            f"more than max_source_frames={config.max_source_frames}"
        )
    if page > declared:
        raise ProcessingError(f"page {page}: {reference!r} has only {declared} page(s)")


def _seek_page(image: Image.Image, page: int, reference: str, config) -> None:
    """Move ``image`` to page ``page``, walking no further than that page."""
    _check_declared_frames(image, page, reference, config)
    # One frame at a time, which costs what one seek to the page would, and counts the
    # frames of a file that has fewer without asking for n_frames.
    for index in range(1, page):
        try:
            image.seek(index)
        except EOFError:
            raise ProcessingError(f"page {page}: {reference!r} has only {index} page(s)") from None
        except MemoryError:
            raise  # the boundary names the memory limit
        except Exception as error:  # a broken frame or directory on the way
            raise ProcessingError(f"page {page} of {reference!r} is not readable ({reason(error)})") from None
    _check_page_pixels(image, page, reference, config)


def _check_page_pixels(image: Image.Image, page: int, reference: str, config) -> None:
    width, height = image.size
    if width * height > config.max_source_pixels:  # a page can be larger than the first
        raise LimitError(
            f"page {page} of {reference!r} has {width}x{height} = {width * height} pixels, "
            f"more than max_source_pixels={config.max_source_pixels}"
        )


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
    """The size ``image`` has once its orientation is applied, for header and decode alike."""
    width, height = image.size
    if orientation not in TRANSPOSED:
        return width, height
    # Pillow's TIFF reader gives the turned size already (and turns the pixels while
    # loading), keeping the stored one as its tile size.
    if image.format == "TIFF" and getattr(image, "_tile_size", image.size) != image.size:
        return width, height
    return height, width


def _frames(image: Image.Image, found: str) -> int | None:
    """1 for a still, the frame count an animated WebP or APNG states, None for an
    animated GIF. Asked before the first frame is loaded."""
    if found not in _CANVAS_FORMATS:
        return 1
    declared = vars(image).get("n_frames")
    if declared is not None:
        return declared if declared > 1 else 1
    if found != "GIF":
        return 1
    try:
        # Skips over the first frame's data to the start of a second: no pixel is decoded
        # and the file is never read past that.
        return None if getattr(image, "is_animated", False) else 1
    except MemoryError:
        raise
    except Exception:  # a broken second frame: the first is a still worth showing
        with contextlib.suppress(Exception):
            image.seek(0)
        return 1


def probe(
    handle, found: str, reference: str, instructions=None, config=None
) -> tuple[int, int, bool, int | None]:
    image = _open(handle, found, reference, config.max_source_pixels if config else 2**62)
    with image:
        page = instructions.page if instructions is not None else None
        frames = _frames(image, found) if page is None else 1
        if page and page > 1:
            if config is not None:
                _check_declared_frames(image, page, reference, config)
            if found not in _CANVAS_FORMATS:
                # The pages of a TIFF (the images of an MPO) can differ in size. A page beyond
                # the last is refused when processing; its header gives the first page's size.
                with contextlib.suppress(EOFError):
                    image.seek(page - 1)
                if config is not None:  # _open held the first page to the limit, not this one
                    _check_page_pixels(image, page, reference, config)
        width, height = _upright(image, _orientation(image))
        alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        return width, height, alpha, frames


def decode(handle, found: str, reference: str, instructions, config):
    image = _open(handle, found, reference, config.max_source_pixels)
    canvas = image.size
    if instructions.page and instructions.page > 1:
        _seek_page(image, instructions.page, reference, config)
    frames = _frames(image, found) if instructions.page is None else 1
    source = image

    orientation = _orientation(image)
    upright = _upright(image, orientation)
    if found in _CANVAS_FORMATS and image.size != canvas:
        # A GIF frame may reach past the logical screen, and Pillow then grows the image;
        # browsers show an animation clipped to its screen, and the header read promised it.
        upright = canvas[::-1] if orientation in TRANSPOSED else canvas
    config.check_plan(instructions.plan(*upright))
    if found == "JPEG":
        target = reduction_target(instructions.operations, *upright)
        if target and target[0] < upright[0]:
            if orientation in TRANSPOSED:
                target = target[::-1]
            image.draft(None, target)

    try:
        image.load()
        if found in _CANVAS_FORMATS and image.size != canvas:
            image = image.crop((0, 0, *canvas))  # before turning: the canvas is the stored size
        if orientation != 1 or frames != 1 or found == "PNG":
            # exif_transpose copies even an upright image: a still is used as decoded.
            # An animation's first frame must be a copy (the next seek reuses its
            # pixels), and a PNG may state its orientation after the pixels.
            image = ImageOps.exif_transpose(image)
    except MemoryError:
        raise  # the boundary names the memory limit
    except Exception as error:
        raise ProcessingError(
            f"source {reference!r} is {formats.a(found, 'image')} that could not be decoded "
            f"({reason(error, handle)})"
        ) from None
    icc_profile = image.info.get("icc_profile")
    image, icc_profile = normalise(image, icc_profile)
    if frames == 1:
        return image, icc_profile, upright
    animation = Animation(
        duration=_duration(source),
        plays=_plays(source, found),
        frames=functools.partial(_later_frames, source, reference, config, canvas, orientation, frames),
    )
    return image, icc_profile, upright, animation


def _duration(image: Image.Image) -> int:
    """The current frame's time on screen in milliseconds, as the file gives it (browsers
    show a GIF frame of 0 or 10 ms for 100 ms; the result keeps the file's value)."""
    try:
        return max(0, round(float(image.info.get("duration") or 0)))
    except (TypeError, ValueError):
        return 0


def _plays(image: Image.Image, found: str) -> int:
    """How many times an animation plays, 0 for ever. A GIF's NETSCAPE loop count is the
    repeats after the first play (browsers play ``loop 2`` three times) and a GIF without
    one plays once; WebP and APNG state the plays themselves."""
    loop = image.info.get("loop")
    if not isinstance(loop, int) or loop < 0:
        return 1
    if found == "GIF":
        return 0 if loop == 0 else loop + 1
    return loop


def _later_frames(
    source: Image.Image,
    reference: str,
    config,
    canvas: tuple[int, int],
    orientation: int,
    declared: int | None,
) -> Iterator[tuple[Image.Image, int]]:
    """The frames after the first of ``source`` (the :class:`Animation` contract)."""
    subject = f"source {reference!r}"
    if declared is not None:
        config.check_animation(subject, declared, *canvas)
    turn = TRANSPOSE.get(orientation)
    index = 1
    while True:
        try:
            source.seek(index)
            if declared is None:  # a GIF is counted as it is walked
                config.check_animation(subject, index + 1, *canvas, at_least=True)
            source.load()
        except EOFError:
            return
        except (MemoryError, FileProcError):
            raise
        except Exception as error:
            # A browser shows the frames before a broken one (a GIF cut short in transit
            # is common), and so does the result.
            log.info("fileproc_wsgi: %s: frame %d is unreadable (%s)", reference, index + 1, error)
            return
        frame = source if source.size == canvas else source.crop((0, 0, *canvas))
        if turn is not None:
            frame = frame.transpose(turn)
        frame, _ = normalise(frame, None)
        if frame is source:
            frame = frame.copy()  # the next seek reuses the source's pixels
        yield frame, _duration(source)
        index += 1


def normalise(image: Image.Image, icc_profile: bytes | None) -> tuple[Image.Image, bytes | None]:
    """One of L, LA, RGB, RGBA, so that every operation meets a mode it knows, with any
    ``transparency`` key turned into an alpha channel and dropped."""
    mode = image.mode
    if mode in ("L", "RGB") and "transparency" in image.info:
        return image.convert("LA" if mode == "L" else "RGBA"), icc_profile
    if mode in ("L", "LA", "RGB", "RGBA"):
        image.info.pop("transparency", None)
        return image, icc_profile
    if mode == "CMYK":
        if icc_profile:
            from PIL import ImageCms  # only CMYK sources need littlecms

            try:
                source_profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
                srgb = ImageCms.createProfile("sRGB")
                converted = ImageCms.profileToProfile(image, source_profile, srgb, outputMode="RGB")
                assert converted is not None  # None only when converting in place
                return converted, None
            except Exception:  # PyCMSError, or OSError from a profile littlecms cannot parse
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
