"""The SVG engine: a drawing rendered by LunaSVG straight at the size the steps need.

An SVG is a program of sorts from a stranger: it may name files and URLs, declare XML
entities, nest without end. Two layers keep it harmless:

- **Our own XML pass** (:mod:`.safexml`, Python's expat) runs before the renderer sees a
  byte. It refuses a DOCTYPE internal subset (entities: XXE, billion laughs; attribute
  defaults the renderer would not see), an entity it cannot expand without a DTD, nesting
  deeper than :data:`~.safexml.MAX_DEPTH`, a root that is not ``<svg>`` and XML that is
  not well formed, each with a one-line reason. Expat never reads an external DTD or
  entity there, so Illustrator's ``<!DOCTYPE svg PUBLIC ...>`` is fine.
- **The renderer**, LunaSVG through ``pillow-lunasvg``, has no code that opens a file or
  a socket for a document: ``<image href>`` other than ``data:``, ``<use>`` of another
  file, CSS ``@import`` and ``@font-face`` URLs, ``<script>`` and ``<foreignObject>``
  are all ignored (measured under strace with a listener, ``bench/svg.py``). It draws
  with the system's fonts only. It was chosen over resvg-py, which read local image
  paths named by ``<image href="/...">`` and crashed on 10,000 nested groups, and which
  is 20 to 40 times slower here because it hands back a PNG to decode. LunaSVG does not
  draw filter effects (blurs, drop shadows): they are left out, never a hang.

The *natural size* is what the root element says, read as LunaSVG reads it, so that the
size promised is the size drawn: ``width`` and ``height`` in px (unitless), pt, pc, mm,
cm or in at 96 dpi; em and ex at the root's ``font-size`` (attribute or ``style``) and
half of it, 12 and 6 px without one (LunaSVG's, not a browser's 16); a missing, invalid
or percentage side comes from the ``viewBox``'s aspect ratio, and both from the
``viewBox`` itself. An SVG with neither is refused: it has no size to promise. Reading it
parses the root start tag only (the first :data:`PROBE_BYTES`), in the web process,
without importing the renderer. (A ``<style>`` sheet setting the root's font size is not
read there: such a drawing is drawn into the promised size all the same.)

Like a PDF page, the drawing is drawn at the size the operations need (:mod:`.vector`):
a 10^6 x 10^6 ``viewBox`` under ``fit 200x`` is a 200 x 200 render, and ``upscale | fit
600x`` of a 40 x 30 logo is drawn at 600 x 450, crisp. Without ``upscale`` a drawing is
not enlarged by fit, fill or pad, like any source. Only the render is held to
``max_source_pixels``, so the huge ``viewBox`` without a resizing step is refused at
registration. Results keep their transparency (PNG unless asked otherwise).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from PIL import Image

from ..errors import ProcessingError
from . import safexml
from .native import NativeLibrary
from .vector import natural_size, render_size

FORMATS = frozenset({"SVG"})
# How far into the file the root element may start (after the XML declaration, comments
# and a DOCTYPE): editors write a few hundred bytes before it.
PROBE_BYTES = 256 * 1024
_CHUNK = 64 * 1024
_SEPARATORS = re.compile(r"[\s,]+")


# Found without importing it: a web process that only registers never loads LunaSVG.
_LUNASVG = NativeLibrary("pillow_lunasvg", "_lunasvg")


def available() -> dict[str, bool]:
    return {"svg": _LUNASVG.installed()}


def load() -> None:
    _LUNASVG.load()


def probe(
    handle: BinaryIO, found: str, reference: str, instructions=None, config=None
) -> tuple[int, int, bool]:
    """The natural size, from the root element alone; always transparent."""
    try:
        root = _root(_head(handle, reference), reference, whole=False)
    finally:
        handle.seek(0)
    natural = _natural_size(root, reference)
    if config is not None and instructions is not None:
        config.check_plan(instructions.plan(*natural))
        render_size(instructions, natural, f"source {reference!r}", config)
    elif config is not None:
        config.check_source_pixels(f"source {reference!r}", *natural, rendered=True)
    return (*natural, True)


def decode(handle: BinaryIO, found: str, reference: str, instructions, config):
    """The drawing as an RGBA image, rendered at the size the operations need."""
    data = handle.read()  # the source's own open() bounds it by max_source_bytes
    natural = _natural_size(_root(data, reference, whole=True), reference)
    config.check_plan(instructions.plan(*natural))
    width, height = render_size(instructions, natural, f"source {reference!r}", config)
    _lunasvg = _LUNASVG.get()._lunasvg  # only the workers render

    document = _lunasvg.load(data)
    if document is None or not document.width > 0 or not document.height > 0:
        raise ProcessingError(f"source {reference!r} is an SVG file that LunaSVG cannot draw")
    # One scale for both sides, large enough to cover the canvas: where rounding makes
    # the canvas' aspect differ from the drawing's, a fraction of a pixel is cut off
    # rather than a half-transparent line left along one edge.
    scale = max(width / document.width, height / document.height)
    pixels = document.render(width, height, scale)
    return Image.frombytes("RGBA", (width, height), pixels), None, natural


def _root(data: bytes | Iterable[bytes], reference: str, *, whole: bool) -> dict[str, str]:
    """The root element's attributes, refusing what is unsafe or not SVG; ``whole``
    parses the rest of the document too (for the renderer), else stops at the root."""
    root: dict[str, str] | None = None
    for name, attributes, depth in safexml.elements(data, f"source {reference!r} is an SVG file that"):
        if depth == 1:
            if name.rpartition(":")[2] != "svg":
                raise ProcessingError(
                    f"source {reference!r} is an SVG file that has <{name}> as its root element, not <svg>"
                )
            root = attributes
            if not whole:
                break
    if root is None:  # expat refuses a document without an element before this
        raise ProcessingError(f"source {reference!r} is an SVG file without an <svg> element")
    return root


def _head(handle: BinaryIO, reference: str) -> Iterator[bytes]:
    """The file in chunks, refused once past :data:`PROBE_BYTES` (the root is not there)."""
    handle.seek(0)
    read = 0
    while chunk := handle.read(_CHUNK):
        if read >= PROBE_BYTES:
            raise ProcessingError(
                f"source {reference!r} is an SVG file whose <svg> element does not start "
                f"in its first {PROBE_BYTES // 1024} KiB"
            )
        read += len(chunk)
        yield chunk


def _font_size(root: dict[str, str]) -> float:
    """The root's font size in px, as LunaSVG takes it for em and ex: ``style`` over the
    attribute, relative units of its 12 px initial size, keywords and nonsense ignored."""
    size = safexml.FONT_SIZE
    declared = [root.get("font-size")]
    declared += [value for prop, value in _declarations(root.get("style", "")) if prop == "font-size"]
    for value in declared:
        found = safexml.length(value, percent_of=safexml.FONT_SIZE)
        if found is not None:
            size = found
    return size


def _declarations(style: str) -> Iterator[tuple[str, str]]:
    for declaration in style.split(";"):
        prop, colon, value = declaration.partition(":")
        if colon:
            yield prop.strip(), value


def _view_box(value: str | None) -> tuple[float, float] | None:
    """The ``viewBox``'s width and height, when it is four numbers with both positive."""
    if value is None:
        return None
    parts = [part for part in _SEPARATORS.split(value.strip()) if part]
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        return None
    if len(numbers) != 4 or not all(math.isfinite(number) for number in numbers):
        return None
    width, height = numbers[2], numbers[3]
    return (width, height) if width > 0 and height > 0 else None


def _natural_size(root: dict[str, str], reference: str) -> tuple[int, int]:
    font_size = _font_size(root)
    width = safexml.length(root.get("width"), font_size=font_size)
    height = safexml.length(root.get("height"), font_size=font_size)
    box = _view_box(root.get("viewBox"))
    if width is None or height is None:
        if box is None:
            raise ProcessingError(
                f"source {reference!r} is an SVG file without a size: its <svg> element "
                "needs a width and a height in absolute units, or a viewBox"
            )
        if width is not None:
            height = width * box[1] / box[0]
        elif height is not None:
            width = height * box[0] / box[1]
        else:
            width, height = box
    if not (math.isfinite(width) and math.isfinite(height)):
        raise ProcessingError(f"source {reference!r} is an SVG file whose size is not a finite number")
    return natural_size(width, height)
