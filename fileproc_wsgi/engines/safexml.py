"""Reading XML from strangers (SVG drawings, office packages) with one set of rules.

Two engines read XML that anyone may have written: the SVG engine its root element (the
size to promise) and the office engine a few parts of a package (the page size). Both
use :func:`elements`, Python's expat with these rules, each refusal a one-line
:class:`~fileproc_wsgi.errors.ProcessingError` naming the source:

- **No DOCTYPE internal subset.** Entity declarations are XXE and billion laughs, and an
  ``<!ATTLIST>`` default is an attribute the document never wrote that a DTD-reading
  parser sees and the renderer does not: ``<!ATTLIST svg width CDATA "40000">`` on a 10 x
  10 drawing would make expat read 40000 x 40000 while LunaSVG draws 10 x 10. A DOCTYPE
  that only names an external DTD (Illustrator writes one) is fine: expat never reads it,
  since no external entity handler is set and parameter entities are never parsed. A
  caller whose format never has one (office parts, which LibreOffice reads after us and
  whose DTD it might fetch) refuses any DOCTYPE (``doctype=False``).
- **No entity but XML's five.** A reference to an undefined one is refused (after a
  DOCTYPE expat skips it, without one it is a well-formedness error).
- **Bounded nesting** (``max_depth``) and **bounded bytes** (``max_bytes``), whatever the
  caller's source of bytes.

:func:`length` reads the lengths these documents give (SVG's ``width``, OpenDocument's
``fo:page-width``) with CSS's absolute units and LunaSVG's rule for ``em``/``ex``, so that
the size promised is the size drawn.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from xml.parsers import expat

from ..errors import LimitError, ProcessingError

# Elements nested deeper than this are refused. Drawings from editors and office parts
# stay under 50; LunaSVG itself gives up at 256, and resvg overflows its stack at a few
# thousand.
MAX_DEPTH = 200
MAX_BYTES = 64 * 1024 * 1024
# CSS Values 3 absolute units, in CSS pixels (1in = 96px). Case-sensitive and with no
# space before the unit, as LunaSVG reads them: "10PX" and "10 px" are not lengths there.
_PIXELS = {"": 1.0, "px": 1.0, "in": 96.0, "cm": 96 / 2.54, "mm": 96 / 25.4, "pt": 96 / 72, "pc": 16.0}
# LunaSVG's initial font size (12px, not a browser's 16) and its ex, half an em: it has
# no font metrics for the root's size. Measured: width="2em" draws 24px wide.
FONT_SIZE = 12.0
_LENGTH = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([a-z]+|%)?\s*")


def length(
    text: str | None, *, unit: str = "px", font_size: float = FONT_SIZE, percent_of: float | None = None
) -> float | None:
    """``text`` as a length in ``unit`` (px, pt, in, ...): None when absent, not a length,
    not positive and finite, or a percentage without ``percent_of`` (in px) to take it of.
    ``em`` is ``font_size`` px, ``ex`` half of it."""
    match = _LENGTH.fullmatch(text or "")
    if match is None:
        return None
    number, written = float(match.group(1)), match.group(2) or ""
    if written == "%":
        if percent_of is None:
            return None
        pixels = number * percent_of / 100
    elif written in ("em", "ex"):
        pixels = number * font_size * (1.0 if written == "em" else 0.5)
    elif written in _PIXELS:
        pixels = number * _PIXELS[written]
    else:
        return None
    value = pixels / _PIXELS[unit]
    return value if math.isfinite(value) and value > 0 else None


_DECLARES = "declares entities or attribute defaults in its DOCTYPE, which are never read here"


def _amount(size: int) -> str:
    return f"{size / (1 << 20):g} MiB" if size >= 1 << 20 else f"{size / 1024:g} KiB"


class _Refused(Exception):
    """Raised from a handler: expat passes it out of Parse unchanged."""

    def __init__(self, reason: str, error: type[ProcessingError | LimitError] = ProcessingError):
        super().__init__(reason)
        self.error = error


def elements(
    data: bytes | Iterable[bytes],
    subject: str,
    *,
    namespaces: bool = False,
    max_depth: int = MAX_DEPTH,
    max_bytes: int = MAX_BYTES,
    doctype: bool = True,
) -> Iterator[tuple[str, dict[str, str], int]]:
    """``(name, attributes, depth)`` of each element, the root at depth 1, as ``data``
    (bytes, or an iterable of them read lazily) streams in; stop iterating to stop reading.

    ``namespaces`` gives names as ``namespace + " " + local name``; without it names are
    as written (``svg``, ``svg:svg``), as LunaSVG reads them, so an undeclared prefix is
    no error. ``doctype=False`` refuses even a DOCTYPE without an internal subset. A
    refusal is ``subject`` followed by the reason: "source 'a.svg' is an SVG file that" +
    "nests its elements deeper than 200 levels".
    """
    parser = expat.ParserCreate(namespace_separator=" " if namespaces else None)
    # Attribute values from a DTD would change the document behind the renderer's back,
    # and external parameter entities would be fetched: neither is ever parsed.
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    found: list[tuple[str, dict[str, str], int]] = []
    depth = 0

    def start_doctype(name: str, system_id, public_id, has_internal_subset: int) -> None:
        if has_internal_subset:
            raise _Refused(_DECLARES)
        if not doctype:
            raise _Refused("has a DOCTYPE, which this format never has")

    def declaration(*_) -> None:  # unreachable past the DOCTYPE check, kept as a second lock
        raise _Refused(_DECLARES)

    def skipped(name: str, is_parameter: int) -> None:
        raise _Refused(f"uses the entity &{name}; that it does not define")

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > max_depth:
            raise _Refused(f"nests its elements deeper than {max_depth} levels")
        found.append((name, attributes, depth))

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1

    parser.StartDoctypeDeclHandler = start_doctype
    parser.EntityDeclHandler = declaration
    parser.UnparsedEntityDeclHandler = declaration
    parser.AttlistDeclHandler = declaration
    parser.SkippedEntityHandler = skipped
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    read = 0
    try:
        for piece in [data] if isinstance(data, (bytes, bytearray)) else data:
            read += len(piece)
            if read > max_bytes:
                raise _Refused(f"has more than {_amount(max_bytes)} of XML", LimitError)
            parser.Parse(piece, False)
            yield from found
            found.clear()
        parser.Parse(b"", True)
        yield from found
    except _Refused as refused:
        raise refused.error(f"{subject} {refused}") from None
    except expat.ExpatError as error:
        raise ProcessingError(
            f"{subject} is not well-formed XML "
            f"({expat.errors.messages[error.code]}, line {error.lineno}, column {error.offset})"
        ) from None
