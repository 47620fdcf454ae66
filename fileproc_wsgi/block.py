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
- ``densities=1,2`` registers one variant per pixel density (every output size of the
  instructions times the density, see :meth:`Instructions.at_density`) and prints
  ``srcset="... 1x, ... 2x"``; densities the source cannot reach are dropped;
- ``sizes=...`` overrides the default ``sizes`` of a ``srcset`` (``100vw``);
- ``source=`` names the source, so that the body holds only operations: a string is a
  source reference, any other object goes through the adapter's ``reference_of`` (a
  Django file field); an empty one (None, ``""``, an empty field) prints the ``empty``
  branch, as does a body whose source printed nothing (`` | fit 100x``, ``source | fit
  100x``; see :func:`~fileproc_wsgi.instructions.has_empty_source`);
- every other argument is an attribute of the ``<img>``, escaped.

All variants of one block are registered in one call (one transaction when new).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from html import escape

from .errors import FileProcError, InstructionError, SourceError, SourceNotFoundError
from .instructions import has_empty_source, is_operation, leading_word, parse, source_step
from .representation import HTML, Registers, Representation

log = logging.getLogger("fileproc_wsgi.block")

RESERVED = frozenset({"widths", "sizes", "formats", "densities", "source"})
MAX_DENSITY = 4.0
MAX_DENSITIES = 4
ReferenceOf = Callable[[object], "str | None"]
"""An adapter's converter from a template value (a Django file field) to a source reference."""
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
    tag or ``<picture>``. ``srcset`` holds the variants by width or, when ``densities``
    is not empty, one per density (the image itself first, at ``1``), as does each of
    ``sources``.
    """

    image: Representation
    attributes: Mapping[str, object] = dataclasses.field(default_factory=dict)
    srcset: tuple[Representation, ...] = ()
    sizes: str | None = None
    sources: tuple[tuple[str, tuple[Representation, ...]], ...] = ()
    densities: tuple[float, ...] = ()

    url = property(lambda self: self.image.url)
    width = property(lambda self: self.image.width)
    height = property(lambda self: self.image.height)
    checksum = property(lambda self: self.image.checksum)
    content_type = property(lambda self: self.image.content_type)

    @functools.cached_property
    def html(self) -> HTML:
        extra = dict(self.attributes)
        sizes = self.sizes or "100vw"
        if self.densities:
            extra["srcset"] = _density_srcset(self.srcset, self.densities)
        elif self.srcset:
            extra["srcset"] = _srcset(self.srcset)
            extra["sizes"] = sizes
        img = self.image.render(extra)
        if not self.sources:
            return img
        parts = ["<picture>"]
        for content_type, variants in self.sources:
            if self.densities:
                srcset = escape(_density_srcset(variants, self.densities))
                parts.append(f'<source type="{content_type}" srcset="{srcset}">')
            elif self.srcset:
                srcset = escape(_srcset(variants))
                parts.append(f'<source type="{content_type}" srcset="{srcset}" sizes="{escape(sizes)}">')
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


def _density_srcset(variants: tuple[Representation, ...], densities: tuple[float, ...]) -> str:
    return ", ".join(
        f"{variant.url} {density:g}x" for variant, density in zip(variants, densities, strict=True)
    )


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


def build(
    registrar: Registers,
    text: str,
    arguments: Mapping[str, object],
    *,
    reference_of: ReferenceOf | None = None,
) -> Rendition | None:
    """Register the block's text (and its variants) and describe what to print; None when
    the source is empty (an empty ``source=``, or a body whose source printed nothing).

    Raises InstructionError for bad text or bad argument values (its line and column are
    the body's, as written), and any other FileProcError the registrar raises (a missing
    source, an outage).
    """
    attributes = {name: value for name, value in arguments.items() if name not in RESERVED}
    reference = None
    if "source" in arguments:
        reference = _reference(arguments["source"], reference_of)
        if reference is None:
            log.debug("fileprocessor block: source= is empty")
            return None
        text = _with_source(reference, text)
    elif has_empty_source(text):
        # A source printed by a variable left nothing (before the first "|", or after the
        # word source): an optional file field left empty. Not a fault of the text, so no
        # error, strict or not.
        log.debug("fileprocessor block: the source printed nothing: %r", text)
        return None
    widths: list[int] = []
    if arguments.get("widths") not in (None, ""):
        for item in _listed(arguments["widths"], "widths"):
            if not item.isdigit() or not 0 < int(item) <= 16384:
                raise _argument_error("widths", f"expects whole numbers of pixels, got {item!r}")
            widths.append(int(item))
    formats: list[str] = []
    if arguments.get("formats") not in (None, ""):
        for name in _listed(arguments["formats"], "formats"):
            if name not in _FORMAT_TYPES:
                known = ", ".join(sorted(set(_FORMAT_TYPES) - {"jpg"}))
                raise _argument_error("formats", f"expects some of {known}, got {name!r}")
            name = "jpeg" if name == "jpg" else name
            if name not in formats:  # once each, in the order given, as widths= are
                formats.append(name)
    densities: list[float] = []
    if arguments.get("densities") not in (None, ""):
        if widths:
            raise _argument_error(
                "densities",
                "and widths= cannot be combined: widths= already lets the browser choose by "
                "its screen's density; give one of them",
            )
        densities = _densities(arguments["densities"])
    try:
        return _register(registrar, text, attributes, arguments, widths, formats, densities)
    except InstructionError as error:
        if reference is None:
            raise
        # The text registered starts with a line of its own for the source.
        if error.line == 1:
            raise _argument_error("source", f"got {reference!r}: {error.problem}") from None
        raise InstructionError(
            error.problem, line=error.line - 1, column=error.column, step=error.step
        ) from None


def _register(registrar: Registers, text, attributes, arguments, widths, formats, densities) -> Rendition:
    texts = [text]
    for name in formats:
        texts.append(f"{text}\nformat {name}")
    for width in sorted(set(widths)):
        texts.append(f"{text}\nfit {width}x")
        texts.extend(f"{text}\nformat {name}\nfit {width}x" for name in formats)
    scaled: list[tuple[float, int]] = []  # (density, index of its first text)
    if len(densities) > 1:
        instructions = parse(text)
        for density in densities[1:]:
            canonical = instructions.at_density(density)
            if canonical is not None:
                scaled.append((density, len(texts)))
                texts.append(canonical)
                texts.extend(f"{canonical}\nformat {name}" for name in formats)
    registered = registrar.register_many(texts)
    image = registered[0]

    by_format = {name: registered[1 + index] for index, name in enumerate(formats)}
    if densities:
        return _with_densities(image, attributes, registered, by_format, formats, scaled)
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


def _with_densities(image, attributes, registered, by_format, formats, scaled) -> Rendition:
    """The rendition of a ``densities=`` block: the densities the source reached."""
    kept = [(1.0, image, [by_format[name] for name in formats])]
    for density, index in scaled:
        variant = registered[index]
        if variant.checksum == image.checksum:
            continue  # nothing to scale (no size step): the same picture
        # A source too small for this density gives a smaller result than asked (no
        # enlarging without upscale); a pixel of rounding per side is still that density.
        if image.width is not None and (
            variant.width is None or variant.width < density * image.width - density
        ):
            continue
        kept.append((density, variant, registered[index + 1 : index + 1 + len(formats)]))
    if len(kept) == 1:  # 1x alone: a plain <img>
        sources = tuple((_FORMAT_TYPES[name], (by_format[name],)) for name in formats)
        return Rendition(image=image, attributes=attributes, sources=sources)
    sources = tuple(
        (_FORMAT_TYPES[name], tuple(variants[position] for _, _, variants in kept))
        for position, name in enumerate(formats)
    )
    return Rendition(
        image=image,
        attributes=attributes,
        srcset=tuple(variant for _, variant, _ in kept),
        sources=sources,
        densities=tuple(density for density, _, _ in kept),
    )


def _with_source(reference: str, body: str) -> str:
    """The text to register for ``source=reference`` and a body of operations."""
    found = leading_word(body)
    if found is not None and not is_operation(found[0]):
        word, line, column = found
        raise InstructionError(
            f"source= is given, so the body holds only operations; line {line} starts with {word!r}",
            line=line,
            column=column,
            step="source",
        )
    # On a line of its own, so that the body's lines are the registered text's lines + 1.
    return f"{source_step(reference)}\n{body}"


def _densities(value: object) -> list[float]:
    """``"1,2"``, ``"1x, 1.5x, 2x"`` or ``[1, 2]`` as sorted densities, 1 always first."""
    densities = {1.0}
    items = _listed(value, "densities")
    if len(set(items)) > MAX_DENSITIES:
        raise _argument_error("densities", f"takes at most {MAX_DENSITIES} densities, got {len(items)}")
    for item in items:
        number = item[:-1] if item.endswith("x") else item
        try:
            density = float(number)
        except ValueError:
            density = math.nan
        if not 1 <= density <= MAX_DENSITY:
            raise _argument_error(
                "densities", f"expects numbers from 1 to {MAX_DENSITY:g}, like 1,2 or 1x,2x, got {item!r}"
            )
        densities.add(density)
    return sorted(densities)


def _reference(value: object, reference_of: ReferenceOf | None) -> str | None:
    """The source reference ``source=`` names, or None when it names nothing."""
    if not value:
        return None
    reference = value if isinstance(value, str) else None
    if reference is None and reference_of is not None:
        reference = reference_of(value)
    if not isinstance(reference, str):
        hint = "" if reference_of is not None else "; pass its name as a string"
        kind = type(value).__name__
        raise _argument_error(
            "source", f"expects a file field, a storage path or a source reference, got {kind}{hint}"
        )
    if not reference.strip():
        return None
    if "\n" in reference:
        raise _argument_error(
            "source", f"got {reference!r}, a name with a line break, which no step can hold"
        )
    if reference.lstrip().startswith("/"):
        raise _argument_error(
            "source",
            # Framework-neutral: the Django adapter names a field's .url or .path itself.
            f"got {reference!r}, an absolute path or URL; give a path relative to a source root, "
            "or the file object itself",
        )
    return reference


def render_block(
    registrar: Registers,
    text: str,
    arguments: Mapping[str, object],
    *,
    strict: bool,
    where: str = "template",
    line: int = 1,
    reference_of: ReferenceOf | None = None,
) -> Rendition | None:
    """:func:`build`, failing softly: None (and a logged warning) instead of an error.

    ``where`` names the template and ``line`` is the template line the block's text
    starts on, so an error points at the template rather than at the text. With
    ``strict`` (Django's DEBUG, or the Jinja2 environment's ``fileprocessor_strict``)
    bad instruction text and a refused reference (an unknown root, ``..``, a host not
    allowed) raise, so a developer sees them; a missing source, an outage or an
    unexpected error (logged with its traceback) never breaks a page, strict or not.
    An empty source is None without a warning: an optional file field is no fault.
    """
    try:
        return build(registrar, text, arguments, reference_of=reference_of)
    except InstructionError as error:
        located = InstructionError(
            error.problem, line=error.line + line - 1, column=error.column, step=error.step, where=where
        )
        if strict:
            raise located from None
        log.warning("fileprocessor block: %s", located)
    except SourceError as error:
        # A reference the settings refuse is the template's mistake, like bad text; a
        # file that is not there (yet) is the data's, and never breaks a page.
        if strict and not isinstance(error, SourceNotFoundError):
            raise SourceError(f"{where}, line {line}: {error}") from None
        log.warning("fileprocessor block in %s, line %d: %s", where, line, error)
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

    __slots__ = ("names", "where", "line", "_source_at", "_rendered")

    def __init__(self, names: Sequence[str], *, where: str = "template", line: int = 1):
        self.names = tuple(names)
        self.where = where
        self.line = line
        self._source_at = self.names.index("source") if "source" in self.names else None
        self._rendered: dict[tuple, tuple[Rendition, str]] = {}

    def render(
        self,
        registrar,
        text: str,
        values: Sequence[object],
        *,
        strict: bool,
        reference_of: ReferenceOf | None = None,
    ) -> Rendition | None:
        """The rendition to print, or None for the ``empty`` branch. ``reference_of`` turns
        a ``source=`` value that is not a string (a file field) into a source reference."""
        at = self._source_at
        if at is not None:
            value = values[at]
            try:
                empty = not value
            except Exception:  # an object that cannot say: build meets it again, and reports it
                return self._render(registrar, text, values, strict, reference_of, None)
            if empty:
                return None  # an optional file left empty: the empty branch, quietly
            if isinstance(value, str):
                # A literal in a template is a SafeString (Django) or a Markup (Jinja2's
                # |safe): the same name as a plain str, and remembered as one. str.__str__,
                # since SafeString.__str__ returns the SafeString itself.
                if type(value) is not str:
                    values = (*values[:at], str.__str__(value), *values[at + 1 :])
            else:
                # Keyed on the reference, not on the object (a model instance cannot be
                # trusted to stay the same): converted first, once per render.
                reference = _converted(value, reference_of)
                if reference is None:  # render_block meets the problem again, and reports it
                    return self._render(registrar, text, values, strict, reference_of, None)
                values = (*values[:at], reference, *values[at + 1 :])
        key = _key(text, values)
        if key is not None:
            found = self._rendered.get(key)
            if found is not None:
                # The text registered then (with its source step, for source=) is what
                # the registrar is asked again: one lookup, nothing rebuilt.
                rendition, registered = found
                try:
                    if registrar.register(registered) is rendition.image:
                        return rendition
                except FileProcError:
                    pass  # render_block below meets it again, and reports it
        return self._render(registrar, text, values, strict, reference_of, key)

    def _render(self, registrar, text, values, strict, reference_of, key) -> Rendition | None:
        arguments = dict(zip(self.names, values, strict=True))
        rendition = render_block(
            registrar,
            text,
            arguments,
            strict=strict,
            where=self.where,
            line=self.line,
            reference_of=reference_of,
        )
        if rendition is not None and key is not None:
            if len(self._rendered) >= _REMEMBERED:
                self._rendered.clear()  # simpler than an LRU; rare, as most blocks see few texts
            at = self._source_at
            registered = text if at is None else f"{source_step(values[at])}\n{text}"
            self._rendered[key] = (rendition, registered)
        return rendition


_REMEMBERED = 1024


def _converted(value: object, reference_of: ReferenceOf | None) -> str | None:
    """``reference_of(value)`` when it gives a string; None for any failure, which
    :func:`build` then meets again and reports where the block's errors are reported."""
    if reference_of is None:
        return None
    try:
        reference = reference_of(value)
    except Exception:
        return None
    return reference if isinstance(reference, str) else None


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
