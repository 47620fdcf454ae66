"""The SVG engine: a drawing rendered by LunaSVG straight at the size the steps need.

An SVG is a program of sorts from a stranger: it may name files and URLs, declare XML
entities, nest without end. Two layers keep it harmless:

- **Our own XML pass** (Python's expat, no library added) runs before the renderer sees
  a byte. It refuses any entity declaration (XXE, billion laughs) and any entity it
  cannot expand without a DTD, nesting deeper than :data:`MAX_DEPTH`, a root that is
  not ``<svg>`` and XML that is not well formed, each with a one-line reason. Expat never
  reads an external DTD or entity here: no handler is set for one.
- **The renderer**, LunaSVG through ``pillow-lunasvg``, has no code that opens a file or
  a socket for a document: ``<image href>`` other than ``data:``, ``<use>`` of another
  file, CSS ``@import`` and ``@font-face`` URLs, ``<script>`` and ``<foreignObject>``
  are all ignored (measured under strace with a listener, ``bench/svg.py``). It draws
  with the system's fonts only. It was chosen over resvg-py, which read local image
  paths named by ``<image href="/...">`` and crashed on 10,000 nested groups, and which
  is 20 to 40 times slower here because it hands back a PNG to decode. LunaSVG does not
  draw filter effects (blurs, drop shadows): they are left out, never a hang.

The *natural size* is what the root element says, as a browser reads it for ``<img>``:
``width`` and ``height`` in px (unitless), pt, pc, mm, cm or in at 96 dpi, em and ex at
16 and 8 px; a missing or percentage side comes from the ``viewBox``'s aspect ratio, and
both from the ``viewBox`` itself. An SVG with neither is refused: it has no size to
promise. Reading it parses the root start tag only (the first :data:`PROBE_BYTES`), in
the web process, without importing the renderer.

Like a PDF page, the drawing is rendered at the size the operations need
(:func:`~fileproc_wsgi.operations.reduction_target`), never at its natural size and then
shrunk: a 10^6 x 10^6 ``viewBox`` under ``fit 200x`` is a 200 x 200 render. Only the
render is held to ``max_source_pixels``, so that same file without a resizing step is
refused at registration. Results keep their transparency (PNG unless asked otherwise).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import math
import re
from typing import BinaryIO
from xml.parsers import expat

from PIL import Image

from ..errors import LimitError, ProcessingError
from ..operations import reduction_target

FORMATS = frozenset({"SVG"})
# How far into the file the root element may start (after the XML declaration, comments
# and a DOCTYPE): editors write a few hundred bytes before it.
PROBE_BYTES = 256 * 1024
# Elements nested deeper than this are refused. Drawings from editors stay under 50;
# LunaSVG itself gives up at 256, and resvg overflows its stack at a few thousand.
MAX_DEPTH = 200
_CHUNK = 64 * 1024
# CSS pixels per unit (CSS Values 3: 1in = 96px; em and ex at the initial font size).
_UNITS = {"": 1.0, "px": 1.0, "in": 96.0, "cm": 96 / 2.54, "mm": 96 / 25.4, "pt": 96 / 72, "pc": 16.0}
_FONT_UNITS = {"em": 16.0, "ex": 8.0}
_LENGTH = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(px|in|cm|mm|pt|pc|em|ex|%)?\s*")
_SEPARATORS = re.compile(r"[\s,]+")


def available() -> dict[str, bool]:
    return {"svg": _renderer_installed()}


@functools.cache
def _renderer_installed() -> bool:
    # Found without importing it: a web process that only registers never loads LunaSVG.
    return importlib.util.find_spec("pillow_lunasvg") is not None


def probe(
    handle: BinaryIO, found: str, reference: str, instructions=None, config=None
) -> tuple[int, int, bool]:
    """The natural size, from the root element alone; always transparent."""
    root = _scan(handle, reference, whole=False)
    natural = _natural_size(root, reference)
    if config is not None and instructions is not None:
        config.check_plan(instructions.plan(*natural))
        _check_render_size(instructions, natural, reference, config)
    elif config is not None:
        _check_pixels(natural, reference, config)
    return (*natural, True)


def decode(handle: BinaryIO, found: str, reference: str, instructions, config):
    """The drawing as an RGBA image, rendered at the size the operations need."""
    data = handle.read()  # the source's own open() bounds it by max_source_bytes
    root = _scan(io.BytesIO(data), reference, whole=True)
    natural = _natural_size(root, reference)
    config.check_plan(instructions.plan(*natural))
    width, height = _check_render_size(instructions, natural, reference, config)
    from pillow_lunasvg import _lunasvg  # noqa: PLC0415 - only the workers render

    document = _lunasvg.load(data)
    if document is None or not document.width > 0 or not document.height > 0:
        raise ProcessingError(f"source {reference!r} is an SVG file that LunaSVG cannot draw")
    # One scale for both sides, large enough to cover the canvas: where rounding makes
    # the canvas' aspect differ from the drawing's, a fraction of a pixel is cut off
    # rather than a half-transparent line left along one edge.
    scale = max(width / document.width, height / document.height)
    pixels = document.render(width, height, scale)
    return Image.frombytes("RGBA", (width, height), pixels), None, natural


class _Stop(Exception):
    """Raised from a handler to end the parse once the root element is read."""


def _scan(handle: BinaryIO, reference: str, *, whole: bool) -> dict[str, str]:
    """Parse the document (``whole``) or up to its root element, refusing what is unsafe.

    Returns the root's attributes. Every refusal is a :class:`ProcessingError` naming the
    source.
    """
    # Without namespace processing, as LunaSVG reads it: a drawing that uses a prefix it
    # never declared (xlink:href without xmlns:xlink, common in hand-written files) is
    # still drawn.
    parser = expat.ParserCreate()
    root: dict[str, str] = {}
    depth = 0
    refusal: list[str] = []

    def refuse(reason: str) -> None:
        refusal.append(reason)
        raise _Stop

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            refuse(f"nests its elements deeper than {MAX_DEPTH} levels")
        if depth == 1:
            if name.rpartition(":")[2] != "svg":
                refuse(f"has <{name}> as its root element, not <svg>")
            root.update(attributes)
            if not whole:
                raise _Stop

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1

    def entity(*_) -> None:
        refuse("declares XML entities, which are never expanded here")

    def skipped(name: str, is_parameter: int) -> None:
        refuse(f"uses the entity &{name}; that it does not define")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.EntityDeclHandler = entity
    parser.UnparsedEntityDeclHandler = entity
    parser.SkippedEntityHandler = skipped
    # Attribute values read from a DTD would change the document behind our back.
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    handle.seek(0)
    read = 0
    try:
        while True:
            chunk = handle.read(_CHUNK)
            read += len(chunk)
            parser.Parse(chunk, not chunk)
            if not chunk:
                break
            if not whole and read >= PROBE_BYTES:
                raise ProcessingError(
                    f"source {reference!r} is an SVG file whose <svg> element does not start "
                    f"in its first {PROBE_BYTES // 1024} KiB"
                )
    except _Stop:
        if refusal:
            raise ProcessingError(f"source {reference!r} is an SVG file that {refusal[0]}") from None
    except expat.ExpatError as error:
        if refusal:  # raised from a handler, seen by expat as its own error
            raise ProcessingError(f"source {reference!r} is an SVG file that {refusal[0]}") from None
        raise ProcessingError(
            f"source {reference!r} is an SVG file that is not well-formed XML "
            f"({expat.errors.messages[error.code]}, line {error.lineno}, column {error.offset})"
        ) from None
    finally:
        handle.seek(0)
    return root


def _length(value: str | None) -> float | None:
    """A root ``width`` or ``height`` in CSS pixels; None when absent, a percentage,
    ``auto``, not a positive finite number, or not a length at all."""
    if value is None:
        return None
    match = _LENGTH.fullmatch(value)
    if match is None or match.group(2) == "%":
        return None
    unit = match.group(2) or ""
    pixels = float(match.group(1)) * _UNITS.get(unit, _FONT_UNITS.get(unit, 0.0))
    return pixels if math.isfinite(pixels) and pixels > 0 else None


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
    width, height = _length(root.get("width")), _length(root.get("height"))
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
    return max(1, round(width)), max(1, round(height))


def _check_pixels(size: tuple[int, int], reference: str, config) -> tuple[int, int]:
    width, height = size
    if width * height > config.max_source_pixels:
        raise LimitError(
            f"source {reference!r} would render at {width}x{height} = {width * height} pixels, "
            f"more than max_source_pixels={config.max_source_pixels}"
        )
    return size


def _check_render_size(instructions, natural: tuple[int, int], reference: str, config):
    """The size the drawing will be rendered at, refused over ``max_source_pixels``."""
    return _check_pixels(_render_size(instructions, *natural), reference, config)


def _render_size(instructions, width: int, height: int) -> tuple[int, int]:
    """The pixel size to render a drawing of natural size ``width`` x ``height`` at.

    As in the PDF engine: the size the operations reduce to, nudged by a pixel where
    that is what makes the steps land exactly on the promised result; the natural size
    when a step needs the drawing's own coordinates (a crop first) or enlarges.
    """
    target = reduction_target(instructions.operations, width, height)
    wanted = instructions.predict_size(width, height)
    if target is None or wanted is None or max(target) >= max(width, height):
        return width, height
    longest, needed = max(width, height), max(target)
    for side in (needed, needed - 1, needed + 1, needed + 2):
        if side < 1:
            continue
        scale = side / longest
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if instructions.predict_size(*size) == wanted:
            return size
    return width, height
