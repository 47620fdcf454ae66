"""Output formats: choosing one, and writing a Pillow image in it.

Only the colour profile survives from the source's metadata (EXIF, XMP and comments are
dropped by never passing them to the encoder). A profile is kept only while it still
describes the pixels: an RGB profile on a greyscale result would be wrong, so it goes.
"""

from __future__ import annotations

import io

from PIL import Image

from .operations import WHITE, Format, flatten, has_alpha

EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "avif": "avif", "gif": "gif"}
CONTENT_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
    "gif": "image/gif",
}
FORMAT_OF_EXTENSION = {extension: name for name, extension in EXTENSIONS.items()}
DEFAULT_QUALITY = {"jpeg": 85, "webp": 80, "avif": 60}
# Source formats every current browser shows, kept as the output when none is asked for.
_BROWSER_FORMATS = {"JPEG": "jpeg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "AVIF": "avif"}


def choose_format(source_format: str, has_transparency: bool, requested: Format | None) -> str:
    """The output format: the requested one, else the source's if browsers show it,
    else JPEG, or PNG when there is transparency to keep."""
    if requested is not None and requested.name:
        return requested.name
    return _BROWSER_FORMATS.get(source_format) or ("png" if has_transparency else "jpeg")


def _profile_fits(icc_profile: bytes | None, mode: str) -> bool:
    if not icc_profile or len(icc_profile) < 20:
        return False
    space = icc_profile[16:20]
    return space == b"GRAY" if mode in ("L", "LA") else space == b"RGB "


def encode(
    image: Image.Image, name: str, options: Format | None, icc_profile: bytes | None, background: str = WHITE
) -> bytes:
    """The image as ``name`` ('jpeg', 'png', ...) with the options of a ``format`` step."""
    quality = options.quality if options and options.quality else DEFAULT_QUALITY.get(name)
    params: dict = {}
    if name == "jpeg":
        image = flatten(image, background)
        params = {"quality": quality, "optimize": True, "progressive": bool(options and options.progressive)}
    elif name == "png":
        params = {"compress_level": 6}
    elif name == "webp":
        params = {"quality": quality, "method": 4, "lossless": bool(options and options.lossless)}
    elif name == "avif":
        if image.mode in ("L", "LA"):
            image = image.convert("RGBA" if has_alpha(image) else "RGB")
        params = {"quality": 100 if options and options.lossless else quality, "speed": 6}
        if options and options.lossless:
            params["subsampling"] = "4:4:4"
    elif name == "gif":
        image = _palette(image)
    if _profile_fits(icc_profile, image.mode) and name != "gif":
        params["icc_profile"] = icc_profile
    buffer = io.BytesIO()
    image.save(buffer, format=name.upper(), **params)
    return buffer.getvalue()


def _palette(image: Image.Image) -> Image.Image:
    """An adaptive 256-colour palette, with one entry for full transparency."""
    if not has_alpha(image):
        return image.convert("RGB").quantize(256, dither=Image.Dither.FLOYDSTEINBERG)
    rgba = image.convert("RGBA")
    quantised = rgba.convert("RGB").quantize(255, dither=Image.Dither.FLOYDSTEINBERG)
    transparent = rgba.getchannel("A").point(lambda alpha: 255 if alpha < 128 else 0, "1")
    quantised.paste(255, mask=transparent)
    quantised.info["transparency"] = 255
    return quantised
