"""Engines turn a source file into an upright Pillow image, and nothing more.

The engine is chosen from the file's first bytes (never its name) against an allow-list,
and the library is told that format explicitly, so a PostScript file called ``.pdf``
cannot reach a PostScript interpreter and an HLS playlist called ``.mp4`` cannot make
FFmpeg open a URL. Each engine reports at start-up whether its library is present
(:func:`available`), instead of failing on first use.

An engine is a module with:

- ``FORMATS``: the names :func:`sniff` gives that it decodes;
- ``available()``: ``{"name": bool}`` for its libraries (``"name:FORMAT"`` for a part
  only that format needs);
- ``probe(handle, found, reference, instructions) -> (width, height, has_alpha)``: the
  upright size of what ``decode`` will give (the page, the frame), from headers only;
- ``decode(handle, found, reference, instructions, config) -> (image, icc_profile)``: an
  upright image in L, LA, RGB or RGBA, decoded no larger than the operations need.

They raise :class:`UnsupportedSourceError`, :class:`ProcessingError` or
:class:`LimitError`, all naming the source. Pillow (:mod:`.raster`) comes first; PDF
pages (:mod:`.pdf`), video frames (:mod:`.video`) and what only ImageMagick reads
(:mod:`.magick`, also the fallback for TIFFs Pillow cannot decode) follow.
"""

from __future__ import annotations

import dataclasses
from typing import BinaryIO

from PIL import Image

from ..errors import FileProcError, ProcessingError, UnsupportedSourceError
from . import magick, pdf, raster, video

ENGINES = (raster, pdf, video, magick)
# Sources a first engine failed on that ImageMagick may still read.
_FALLBACKS = {"TIFF": magick}
# Recognised, and never decoded, whatever the installation has.
_REFUSED = {
    b"%!PS": "PostScript",
    b"\xc5\xd0\xd3\xc6": "EPS",
    b"#EXTM3U": "HLS playlist",
}
HEAD_BYTES = 64


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What a header says about a source: its format and upright size."""

    format: str
    width: int
    height: int
    has_alpha: bool


@dataclasses.dataclass
class Decoded:
    """A decoded, upright, mode-normalised image and the colour profile it carries."""

    image: Image.Image
    icc_profile: bytes | None


def sniff(head: bytes) -> str | None:
    """The format named by a file's magic bytes: ``'JPEG'``, ``'PDF'``, ``'MP4'`` ... or None."""
    found = raster.sniff(head)
    if found:
        return found
    if head.startswith(b"%PDF-"):
        return "PDF"
    if head.startswith(b"8BPS"):
        return "PSD"
    for magic, name in _REFUSED.items():
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIF"
        return "MOV" if brand == b"qt  " else "MP4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "MOV"  # QuickTime files older than the ftyp box
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "MKV"  # Matroska, and WebM, which is Matroska
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "AVI"
    stripped = head.lstrip()
    if stripped.startswith((b"<?xml", b"<svg", b"<!DOCTYPE svg")):
        return "SVG"
    return None


def engine_for(head: bytes, reference: str):
    """``(format, engine)`` for a file, by its first bytes; refuses everything else."""
    found = sniff(head)
    if found is None:
        raise UnsupportedSourceError(
            f"source {reference!r} is not in a recognised image, PDF or video format"
        )
    for engine in ENGINES:
        if found in engine.FORMATS:
            if not _usable(engine):
                raise UnsupportedSourceError(
                    f"source {reference!r} is a {found} file, and this server lacks the library to read it"
                )
            return found, engine
    raise UnsupportedSourceError(f"source {reference!r} is a {found} file, which this server does not decode")


def probe(handle: BinaryIO, reference: str, instructions=None) -> SourceInfo:
    """Read only the header: format, upright size (of the page or frame asked for) and
    transparency."""
    found, engine = _engine(handle, reference)
    size = _with_fallback(found, engine, lambda e: e.probe(handle, found, reference, instructions), handle)
    return SourceInfo(found, *size)


def decode(handle: BinaryIO, reference: str, instructions, config) -> Decoded:
    """Decode the image the instructions ask for, within the configured limits."""
    found, engine = _engine(handle, reference)
    image, icc_profile = _with_fallback(
        found, engine, lambda e: e.decode(handle, found, reference, instructions, config), handle
    )
    return Decoded(image, icc_profile)


def available() -> dict[str, bool]:
    """Which engines and output encoders this installation can use."""
    found: dict[str, bool] = {}
    for engine in ENGINES:
        found.update(engine.available())
    return found


def _usable(engine) -> bool:
    """Whether ``engine``'s libraries are present. A part only one format needs (an
    ``available()`` key ``"name:FORMAT"``, e.g. ImageMagick's HEIC coder) is reported at
    start-up, and the engine refuses that format itself, saying what is missing."""
    return all(present for name, present in engine.available().items() if ":" not in name)


def _engine(handle: BinaryIO, reference: str):
    head = handle.read(HEAD_BYTES)
    handle.seek(0)
    return engine_for(head, reference)


def _with_fallback(found: str, engine, call, handle: BinaryIO):
    try:
        return call(engine)
    except ProcessingError as error:
        fallback = _FALLBACKS.get(found)
        if fallback is None or fallback is engine or not _usable(fallback):
            raise
        handle.seek(0)
        try:
            return call(fallback)
        except FileProcError:
            raise error from None  # the first engine's reason is the one to show
