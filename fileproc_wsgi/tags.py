"""What a ``{% fileprocessor %}`` block means, shared by the Django and Jinja2 adapters.

An adapter parses its own tag syntax, makes one :class:`Block` per tag when the template
compiles, and at each render hands it the body rendered to text and the values of the
tag's ``key=value`` arguments. Everything else is decided here once, so both adapters
print the same HTML for the same block, and a warm block costs them the same:

- ``widths=400,800`` registers one variant per width (the instructions plus
  ``fit <w>x``) and prints ``srcset`` and ``sizes``; widths the result cannot reach are
  dropped and the result itself (at its own width) offered instead;
- ``formats=avif,webp`` registers one variant per format (plus ``format <f>``) and
  prints a ``<picture>`` with a ``<source>`` per format and the ``<img>`` as fallback;
- ``sizes=...`` overrides the default ``sizes`` of a ``srcset`` (``100vw``);
- every other argument is an attribute of the ``<img>``, escaped.

All variants of one block are registered in one call (one transaction when new).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from html import escape

from .errors import FileProcError, InstructionError
from .representation import HTML, Representation

log = logging.getLogger("fileproc_wsgi.tags")

RESERVED = frozenset({"widths", "sizes", "formats"})
_FORMAT_TYPES = {
    "avif": "image/avif",
    "webp": "image/webp",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "png": "image/png",
    "gif": "image/gif",
}


@dataclasses.dataclass(frozen=True)
class Rendition:
    """The result of one block: an ``<img>`` (with its variants) ready to print.

    ``url``, ``width``, ``height``, ``checksum`` and ``content_type`` are the fallback
    image's, which is what ``{% fileprocessor as thumb %}`` exposes; ``html`` is the whole
    tag or ``<picture>``.
    """

    image: Representation
    attributes: Mapping[str, object] = dataclasses.field(default_factory=dict)
    srcset: tuple[Representation, ...] = ()
    sizes: str | None = None
    sources: tuple[tuple[str, tuple[Representation, ...]], ...] = ()

    url = property(lambda self: self.image.url)
    width = property(lambda self: self.image.width)
    height = property(lambda self: self.image.height)
    checksum = property(lambda self: self.image.checksum)
    content_type = property(lambda self: self.image.content_type)

    @functools.cached_property
    def html(self) -> HTML:
        extra = dict(self.attributes)
        if self.srcset:
            extra["srcset"] = _srcset(self.srcset)
            extra["sizes"] = self.sizes or "100vw"
        img = self.image.render(extra)
        if not self.sources:
            return img
        parts = ["<picture>"]
        for content_type, variants in self.sources:
            if self.srcset:
                srcset, sizes = escape(_srcset(variants)), escape(extra["sizes"])
                parts.append(f'<source type="{content_type}" srcset="{srcset}" sizes="{sizes}">')
            else:  # one candidate of the <img>'s own size: a bare URL, no width descriptor
                parts.append(f'<source type="{content_type}" srcset="{escape(variants[0].url)}">')
        parts.append(img)
        parts.append("</picture>")
        return HTML("".join(parts))

    def __html__(self) -> HTML:
        return self.html

    def __str__(self) -> HTML:
        return self.html


def _srcset(variants: tuple[Representation, ...]) -> str:
    if len(variants) == 1 and variants[0].width is None:
        return variants[0].url
    return ", ".join(f"{variant.url} {variant.width}w" for variant in variants)


def _listed(value: object, name: str) -> list[str]:
    """``"400,800"``, ``[400, 800]`` or ``400`` as a list of lower-case strings."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = [str(item) for item in value]
    else:
        items = [str(value)]
    items = [item.strip().lower() for item in items if item.strip()]
    if not items:
        raise _argument_error(name, "needs at least one value")
    return items


def _argument_error(name: str, problem: str) -> InstructionError:
    # Tag arguments sit on the tag's own line, before the instructions' first line.
    return InstructionError(f"{name}= {problem}", line=1, column=1, step=name)


def build(registrar, text: str, arguments: Mapping[str, object]) -> Rendition:
    """Register the block's text (and its variants) and describe what to print.

    Raises InstructionError for bad text or bad ``widths``/``formats`` values, and any
    other FileProcError the registrar raises (a missing source, an outage).
    """
    attributes = {name: value for name, value in arguments.items() if name not in RESERVED}
    widths: list[int] = []
    if arguments.get("widths") not in (None, ""):
        for item in _listed(arguments["widths"], "widths"):
            if not item.isdigit() or not 0 < int(item) <= 16384:
                raise _argument_error("widths", f"expects whole numbers of pixels, got {item!r}")
            widths.append(int(item))
    formats: list[str] = []
    if arguments.get("formats") not in (None, ""):
        formats = _listed(arguments["formats"], "formats")
        for name in formats:
            if name not in _FORMAT_TYPES:
                known = ", ".join(sorted(set(_FORMAT_TYPES) - {"jpg"}))
                raise _argument_error("formats", f"expects some of {known}, got {name!r}")

    texts = [text]
    for name in formats:
        texts.append(f"{text}\nformat {name}")
    for width in sorted(set(widths)):
        texts.append(f"{text}\nfit {width}x")
        texts.extend(f"{text}\nformat {name}\nfit {width}x" for name in formats)
    registered = registrar.register_many(texts)
    image = registered[0]

    by_format = {name: registered[1 + index] for index, name in enumerate(formats)}
    # The result itself stands in for a width it already has, and for widths it cannot
    # reach (a source smaller than asked): "up to 2000" then means "as large as it gets".
    ordered = sorted(set(widths))
    kept = [width for width in ordered if image.width is None or width < image.width]
    if image.width is not None and len(kept) < len(ordered):
        kept.append(image.width)
    srcset_of: dict[str | None, list[Representation]] = {None: [], **{name: [] for name in formats}}
    position = 1 + len(formats)
    for width in ordered:
        variants = registered[position : position + 1 + len(formats)]
        position += 1 + len(formats)
        if width in kept and width != image.width:
            srcset_of[None].append(variants[0])
            for name, variant in zip(formats, variants[1:], strict=True):
                srcset_of[name].append(variant)
    if image.width in kept:
        srcset_of[None].append(image)
        for name in formats:
            srcset_of[name].append(by_format[name])
    sources = tuple((_FORMAT_TYPES[name], tuple(srcset_of[name]) or (by_format[name],)) for name in formats)
    return Rendition(
        image=image,
        attributes=attributes,
        srcset=tuple(srcset_of[None]),
        sizes=str(arguments["sizes"]) if arguments.get("sizes") else None,
        sources=sources,
    )


def render_block(
    registrar,
    text: str,
    arguments: Mapping[str, object],
    *,
    strict: bool,
    where: str = "template",
    line: int = 1,
) -> Rendition | None:
    """:func:`build`, failing softly: None (and a logged warning) instead of an error.

    ``where`` names the template and ``line`` is the template line the block's text
    starts on, so an error points at the template rather than at the text. With
    ``strict`` (Django's DEBUG, or the Jinja2 environment's ``fileprocessor_strict``)
    bad instruction text raises, so a developer sees it; a missing source, an outage or
    an unexpected error (logged with its traceback) never breaks a page, strict or not.
    """
    try:
        return build(registrar, text, arguments)
    except InstructionError as error:
        located = InstructionError(
            error.problem, line=error.line + line - 1, column=error.column, step=error.step, where=where
        )
        if strict:
            raise located from None
        log.warning("fileprocessor block: %s", located)
    except FileProcError as error:
        log.warning("fileprocessor block in %s, line %d: %s", where, line, error)
    except Exception:  # the last boundary: no library's exception ever breaks a page
        log.exception("fileprocessor block in %s, line %d: unexpected error", where, line)
    return None


class Block:
    """One ``{% fileprocessor %}`` in a template, made when the template compiles.

    It knows its argument names and where it is (``where``: the template's name;
    ``line``: the line its text starts on). ``render`` takes what changes per render (the
    registrar, the text, the argument values in the order of ``names``) and is
    :func:`render_block` plus a memory: a block rendered before with the same text and
    values costs one registration of its text, because while the registrar answers with
    the very same representation (source and registration unchanged) the rendition made
    then is still right. Both adapters make one per tag, so they print the same thing
    and pay the same.
    """

    __slots__ = ("names", "where", "line", "_rendered")

    def __init__(self, names: Sequence[str], *, where: str = "template", line: int = 1):
        self.names = tuple(names)
        self.where = where
        self.line = line
        self._rendered: dict[tuple, Rendition] = {}

    def render(self, registrar, text: str, values: Sequence[object], *, strict: bool) -> Rendition | None:
        key = _key(text, values)
        if key is not None:
            rendition = self._rendered.get(key)
            if rendition is not None:
                try:
                    if registrar.register(text) is rendition.image:
                        return rendition
                except FileProcError:
                    pass  # render_block below meets it again, and reports it
        arguments = dict(zip(self.names, values, strict=True))
        rendition = render_block(registrar, text, arguments, strict=strict, where=self.where, line=self.line)
        if rendition is not None and key is not None:
            if len(self._rendered) >= _REMEMBERED:
                self._rendered.clear()  # simpler than an LRU; rare, as most blocks see few texts
            self._rendered[key] = rendition
        return rendition


_REMEMBERED = 1024


def _key(text: str, values: Sequence[object]) -> tuple | None:
    """What identifies a rendering of a block, or None when a value cannot be trusted to
    stay the same (a list, a model instance): strings, numbers and None only.

    Numbers carry their type, because ``1 == 1.0 == True`` yet each prints differently.
    """
    values = tuple(values)
    typed = False
    for value in values:
        if isinstance(value, str) or value is None:
            continue
        if not isinstance(value, (int, float)):
            return None
        typed = True
    if typed:
        return (text, values, tuple(map(type, values)))
    return (text, values)
