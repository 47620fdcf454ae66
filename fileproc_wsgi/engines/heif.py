"""The HEIF engine: phone photos (HEIC, and the rest of the HEIF family) through
pillow-heif, which bundles libheif and its HEVC decoder.

Chosen by measurement over ImageMagick's HEIC coder, which this project used before
(``bench/heif.py``): on the same files libheif through pillow-heif decodes 1.5 to 4 times
faster, keeps the alpha plane and the ICC profile (Debian's ImageMagick 6 with libheif 1.15
drops both), applies the container's transforms to every layout (a camera's rotated grid
came out unturned through ImageMagick), and reads the primary image of a file whose other
images are truncated. It read every file of pillow-heif's own test corpus that ImageMagick
read, so ImageMagick is no fallback for HEIF; it keeps PSD and odd TIFFs.

**Headers only at registration.** Opening a file parses its boxes (about 0.3 ms for a 12 MP
photo, from bytes already read) and decodes nothing: the size, the alpha plane and the
number of top-level images come from there. The size is the upright one: libheif applies
the ``irot``/``imir``/``clap`` transforms (HEIF readers must) and reports the size after
them, and pillow-heif resets the EXIF orientation that phones write as well to 1, so no
picture turns twice.

**Scaled decode.** libheif decodes at full size only, but cameras and some phones embed
smaller copies (Canon writes 1616 px, iPhones 320 px): when the operations shrink the
picture, the smallest embedded copy that is still large enough, and is a true scaled copy
(same transforms, crop and colour profile), is decoded instead, through pillow-heif's
``draft``. A 400 px thumbnail of a camera's 33 MP HEIF then costs milliseconds, not seconds.

**Pages.** ``page 1`` (the default) is the primary image, the one every viewer shows;
``page 2`` onward are the file's other top-level images (a burst, the second view of a
stereo pair) in file order. Thumbnails, depth maps, gain maps and alpha planes are not
pages.

**Colour.** The ICC profile travels with the image, as for every engine. 10- and 12-bit
images are scaled to 8 bits; an ``nclx`` description without an ICC profile (wide-gamut or
HDR transfer curves) is not converted: such pixels are shown as if sRGB.
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
    import pillow_heif
except ImportError:  # reported by available(), and a HEIF source is refused naming the extra
    pillow_heif = None

FORMATS = frozenset({"HEIF"})


def available() -> dict[str, bool]:
    return {"heif": pillow_heif is not None}


def _open(handle, reference: str) -> Image.Image:
    data = handle.read()
    try:
        # Not through Image.open: registering pillow-heif's opener would change what
        # Image.open does for the whole host process.
        return pillow_heif.HeifImageFile(io.BytesIO(data))
    except MemoryError:
        raise  # the boundary names the memory limit
    except Exception as error:  # SyntaxError, ValueError, RuntimeError from libheif's parser
        raise ProcessingError(
            f"source {reference!r} is not a readable HEIF image ({reason(error)})"
        ) from None


def _select(image: Image.Image, reference: str, instructions, config) -> None:
    """Move ``image`` to the image ``page N`` names, checking it against the limits."""
    page = instructions.page if instructions is not None else None
    if config is not None:
        config.check_page(page)
    count = image.n_frames
    if page and page > 1:
        if page > count:
            raise ProcessingError(f"page {page}: {reference!r} has only {count} top-level image(s)")
        primary = image.tell()
        others = [index for index in range(count) if index != primary]
        image.seek(others[page - 2])
    width, height = image.size
    if config is not None and width * height > config.max_source_pixels:
        what = f"page {page} of {reference!r}" if page and page > 1 else f"source {reference!r}"
        raise LimitError(
            f"{what} has {width}x{height} = {width * height} pixels, "
            f"more than max_source_pixels={config.max_source_pixels}"
        )


def probe(handle, found: str, reference: str, instructions=None, config=None) -> tuple[int, int, bool]:
    with _open(handle, reference) as image:
        _select(image, reference, instructions, config)
        width, height = image.size
        return width, height, image.mode in ("RGBA", "RGBa", "LA", "La")


def decode(handle, found: str, reference: str, instructions, config):
    image = _open(handle, reference)
    try:
        _select(image, reference, instructions, config)
        upright = image.size
        config.check_plan(instructions.plan(*upright))
        target = reduction_target(instructions.operations, *upright)
        if target and target[0] < upright[0]:
            if (target[0] > target[1]) != (upright[0] > upright[1]):
                target = target[::-1]  # a quarter turn among the steps: the stored picture's sides
            image.draft(None, target)
        image.load()
    except Exception as error:
        image.close()
        if isinstance(error, (FileProcError, MemoryError)):
            raise  # the boundary names the memory limit
        raise ProcessingError(
            f"source {reference!r} is {formats.a(found, 'image')} that could not be decoded ({reason(error)})"
        ) from None
    # Loaded, the image no longer needs the file (pillow-heif let go of it); closing it
    # would free the pixels too.
    icc_profile = image.info.get("icc_profile") or None
    if image.mode == "RGBa":  # premultiplied alpha, which no operation expects
        image = image.convert("RGBA")
    return (*normalise(image, icc_profile), upright)
