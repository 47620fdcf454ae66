"""What a ``{% fileprocessor %}`` block means, shared by the Django and Jinja2 adapters.

An adapter parses its own tag syntax, renders the block's body to text and calls
:func:`render_block` with the tag's ``key=value`` arguments. Everything else is decided
here once, so both adapters print the same HTML for the same block:

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
from collections.abc import Mapping
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
    bad instruction text raises, so a developer sees it; a missing source or an outage
    never breaks a page, strict or not.

    A block rendered before with the same text and arguments costs one registration of
    its text: while the registrar answers with the very same representation (its source
    and registration unchanged), the rendition made then is still right.
    """
    key = _block_key(text, arguments)
    if key is not None:
        rendition = _RENDERED.get(key)
        if rendition is not None:
            try:
                if registrar.register(text) is rendition.image:
                    return rendition
            except FileProcError:
                pass  # build() below raises it again, and it is reported there
    try:
        rendition = build(registrar, text, arguments)
    except InstructionError as error:
        located = InstructionError(
            error.problem, line=error.line + line - 1, column=error.column, step=error.step, where=where
        )
        if strict:
            raise located from None
        log.warning("fileprocessor block: %s", located)
        return None
    except FileProcError as error:
        log.warning("fileprocessor block in %s, line %d: %s", where, line, error)
        return None
    if key is not None:
        if len(_RENDERED) >= _RENDERED_LIMIT:
            _RENDERED.clear()  # simpler than an LRU; a site's warm blocks fit
        _RENDERED[key] = rendition
    return rendition


# Blocks rendered before, by text and arguments; see render_block.
_RENDERED: dict[tuple, Rendition] = {}
_RENDERED_LIMIT = 8192


def _block_key(text: str, arguments: Mapping[str, object]) -> tuple | None:
    """A key for a block, or None when a value cannot be one (a list, a model instance).

    Only strings, numbers, booleans and None are trusted: they cannot change behind our
    back. Types are part of the key because ``1 == True`` prints differently.
    """
    values = tuple(arguments.values())
    for value in values:
        if not isinstance(value, _PLAIN):
            return None
    return (text, tuple(arguments), values, tuple(map(type, values)))


_PLAIN = (str, int, float, type(None))
