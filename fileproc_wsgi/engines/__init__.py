"""Engines turn a source file into an upright Pillow image, and nothing more.

The engine is chosen from the file's first bytes (never its name) against an allow-list,
and the library is told that format explicitly, so a PostScript file called ``.jpg``
cannot reach a PostScript decoder. Each engine reports at start-up whether its library
is present (:func:`available`), instead of failing on first use.

PDF pages, video frames and the formats only ImageMagick reads slot in here as further
engines; the operations pipeline after them stays the same.
"""

from __future__ import annotations

import dataclasses
from typing import BinaryIO

from PIL import Image

from ..errors import UnsupportedSourceError
from . import raster

# Formats this installation recognises but has no engine for: refused with their name.
_KNOWN_OTHER = {
    b"%PDF-": "PDF",
    b"%!PS": "PostScript",
    b"\xc5\xd0\xd3\xc6": "EPS",
    b"8BPS": "PSD",
    b"#EXTM3U": "HLS playlist",
    b"\x1a\x45\xdf\xa3": "Matroska/WebM video",
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
    """The format named by a file's magic bytes: ``'JPEG'``, ``'PDF'``, ... or None."""
    found = raster.sniff(head)
    if found:
        return found
    for magic, name in _KNOWN_OTHER.items():
        if head.startswith(magic):
            return name
    stripped = head.lstrip()
    if stripped.startswith((b"<?xml", b"<svg", b"<!DOCTYPE svg")):
        return "SVG"
    if head[4:8] == b"ftyp":
        return "HEIF" if head[8:12] in (b"heic", b"heix", b"mif1", b"msf1") else "MP4/QuickTime video"
    return None


def engine_for(head: bytes, reference: str):
    """The engine module for a file, by its first bytes; refuses everything else."""
    found = sniff(head)
    if found in raster.FORMATS:
        return found, raster
    if found is None:
        raise UnsupportedSourceError(f"source {reference!r} is not in a recognised image format")
    raise UnsupportedSourceError(f"source {reference!r} is a {found} file, which this server does not decode")


def probe(handle: BinaryIO, reference: str) -> SourceInfo:
    """Read only the header: format, upright size and transparency."""
    head = handle.read(HEAD_BYTES)
    handle.seek(0)
    found, engine = engine_for(head, reference)
    return SourceInfo(found, *engine.probe(handle, found, reference))


def decode(handle: BinaryIO, reference: str, instructions, config) -> Decoded:
    """Decode the image the instructions ask for, within the configured limits."""
    head = handle.read(HEAD_BYTES)
    handle.seek(0)
    found, engine = engine_for(head, reference)
    image, icc_profile = engine.decode(handle, found, reference, instructions, config)
    return Decoded(image, icc_profile)


def available() -> dict[str, bool]:
    """Which engines and output encoders this installation can use."""
    return raster.available()
