"""Writing a Pillow image in an output format (the formats, their extensions and content
types, and the choice among them are in :mod:`.formats`).

Only the colour profile survives from the source's metadata (EXIF, XMP and comments are
dropped by never passing them to the encoder). A profile is kept only while it still
describes the pixels: an RGB profile on a greyscale result would be wrong, so it goes.

GIF and WebP results can animate (:data:`~fileproc_wsgi.formats.ANIMATED_FORMATS`): :func:`encode_animation`
writes whole frames, each with its time on screen, and the play count. AVIF is not
among them although Pillow writes AVIF sequences: its writer cannot set a play count
(every sequence loops for ever, so a GIF that plays once would not), and it takes two
to four times as long as WebP, for a fifth of the bytes (bench/animations.py).
"""

from __future__ import annotations

import io

from PIL import Image

from .operations import WHITE, Format, flatten, has_alpha

# Defaults chosen with bench/quality.py: the lowest quality at which our 400x300
# thumbnails of photo-like and of screenshot-like sources score, on average, at least as
# well as pyvips' default output on both SSIMULACRA2 and SSIM. There JPEG is 0.98x
# pyvips' bytes; WebP (the same libwebp) 1.03-1.05x and AVIF 1.05-1.06x, for a little more
# quality. Against 85/80/60 before, 8-26% fewer bytes.
DEFAULT_QUALITY = {"jpeg": 77, "webp": 77, "avif": 54}
ENCODER_OPTIONS: dict[str, dict] = {
    "jpeg": {"subsampling": "4:2:0", "optimize": True},
    "webp": {"method": 4},
    "avif": {"speed": 6},
}
"""Pillow's options for each lossy format beside its quality (bench/quality.py, bytes at
equal quality). JPEG: optimised Huffman tables save 4-7%; 4:4:4 chroma costs 6-12% more,
screenshots included; progressive saves 1-3% more, left to the ``progressive`` flag.
WebP: method 6 is no smaller over both kinds of source and takes three times as long.
AVIF: speed 6, about 140 ms a 400x300 thumbnail on two cores (libvips' default 310 ms);
speed 8 is 13-27% larger, speed 5 2-7% smaller but three to four times slower; 4:4:4
saves 7% on screenshots and costs photos 3%."""


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
        params = {**ENCODER_OPTIONS["jpeg"], "quality": quality}
        if options and options.progressive:
            params["progressive"] = True
    elif name == "png":
        params = {"compress_level": 6}
    elif name == "webp":
        params = {
            **ENCODER_OPTIONS["webp"],
            "quality": quality,
            "lossless": bool(options and options.lossless),
        }
    elif name == "avif":
        if image.mode in ("L", "LA"):
            image = image.convert("RGBA" if has_alpha(image) else "RGB")
        params = {**ENCODER_OPTIONS["avif"], "quality": 100 if options and options.lossless else quality}
        if options and options.lossless:
            params["subsampling"] = "4:4:4"
    elif name == "gif":
        image = _palette(image)
    if _profile_fits(icc_profile, image.mode) and name != "gif":
        params["icc_profile"] = icc_profile
    buffer = io.BytesIO()
    image.save(buffer, format=name.upper(), **params)
    return buffer.getvalue()


def animation_frame(image: Image.Image, name: str) -> Image.Image:
    """One frame of an animated ``name`` result, as :func:`encode_animation` takes it,
    made as soon as the frame is: a GIF's frame is held in its palette, a quarter of the
    memory of RGBA, while the others are made."""
    if name != "gif":
        return image
    # Fast octree: 0.4 ms a 240x135 frame against 14 ms for median cut, its error as
    # small (bench/animations.py); paid once per frame, it decides what a GIF costs.
    # Every frame keeps index 255 free, for transparency should a later frame need it.
    frame = _palette(image, Image.Quantize.FASTOCTREE, keep_slot=True)
    # Pillow's GIF writer takes the first frame's info as defaults (a source's loop
    # count, its background index): only what is said here may reach the file.
    frame.info = {"transparency": 255} if has_alpha(image) else {}
    return frame


def encode_animation(
    frames: list[Image.Image],
    durations: list[int],
    plays: int,
    name: str,
    options: Format | None,
    icc_profile: bytes | None,
) -> bytes:
    """``frames`` (whole frames of one size, each from :func:`animation_frame`) as an
    animated ``name`` (one of :data:`~fileproc_wsgi.formats.ANIMATED_FORMATS`), frame ``k`` shown for
    ``durations[k]`` milliseconds, the whole played ``plays`` times (0: for ever)."""
    params: dict = {"save_all": True, "duration": durations}
    if name == "gif":
        # Every frame is whole. Each is left for the next to cover (disposal 1), which
        # lets Pillow store only the part that changed, unless a frame has transparent
        # pixels, which must show what is behind the animation: then every frame is
        # cleared before the next (disposal 2), to transparent. Every frame then names
        # its transparent index, used or not (optimize=False keeps Pillow from dropping
        # it), since readers that clear to the background colour, Pillow's among them,
        # clear to transparency where a frame names one. One value for all frames:
        # Pillow merges identical frames and fails writing what is left with a list.
        clear = any("transparency" in frame.info for frame in frames)
        for frame in frames:
            frame.info = {"transparency": 255} if clear else {}
        params["disposal"] = 2 if clear else 1
        if clear:
            params["optimize"] = False
        if plays != 1:  # a GIF states its repeats after the first play; none plays once
            params["loop"] = 0 if plays == 0 else plays - 1
    elif name == "webp":
        quality = options.quality if options and options.quality else DEFAULT_QUALITY["webp"]
        params.update(
            ENCODER_OPTIONS["webp"], quality=quality, lossless=bool(options and options.lossless), loop=plays
        )
        if _profile_fits(icc_profile, frames[0].mode):
            params["icc_profile"] = icc_profile
    else:
        raise ValueError(f"{name} results do not animate")
    first, *rest = frames
    buffer = io.BytesIO()
    first.save(buffer, format=name.upper(), append_images=rest, **params)
    return buffer.getvalue()


def _palette(
    image: Image.Image, method: Image.Quantize | None = None, *, keep_slot: bool = False
) -> Image.Image:
    """An adaptive 256-colour palette, with one entry for full transparency (left unused
    in an opaque image with ``keep_slot``)."""
    if not has_alpha(image):
        colours = 255 if keep_slot else 256
        return image.convert("RGB").quantize(colours, method=method, dither=Image.Dither.FLOYDSTEINBERG)
    rgba = image.convert("RGBA")
    quantised = rgba.convert("RGB").quantize(255, method=method, dither=Image.Dither.FLOYDSTEINBERG)
    transparent = rgba.getchannel("A").point(lambda alpha: 255 if alpha < 128 else 0, "1")
    quantised.paste(255, mask=transparent)
    quantised.info["transparency"] = 255
    return quantised
