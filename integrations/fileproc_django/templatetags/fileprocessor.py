"""The ``{% fileprocessor %}`` block tag.

::

    {% fileprocessor [as NAME] [key=value ...] %} instructions [{% empty %} fallback] {% endfileprocessor %}

``source=photo.image`` takes a model's file field (any ``FieldFile`` or a file with a
storage, see :mod:`fileproc_django.storages`), a path under a source root or a source
reference; the body then holds only the operations, and an empty field, None or ``""``
prints the ``{% empty %}`` branch, ``DEBUG`` or not. The field's ``.url`` or ``.path``
passed by mistake is an error naming the expression to write instead.

The body is rendered to text, registered (no pixel is touched) and printed as an
``<img>`` (or a ``<picture>``, see :mod:`fileproc_wsgi.block` for ``widths=``,
``formats=`` and ``sizes=``); every other argument becomes an escaped attribute. With
``as NAME`` the rendition (``url``, ``width``, ``height``, ``checksum``,
``content_type``, ``html``) is stored in the context instead and nothing is printed.
When the block cannot be registered (a missing source; a mistake, unless the template
engine's ``debug``, which is ``DEBUG`` unless ``TEMPLATES`` sets it) the ``{% empty %}``
branch is printed, or nothing, and ``NAME`` is None. A ``source=`` that raises (an empty
field's ``.url``) or names a root the settings lack is such a mistake; whatever else an
argument raises is Django's error with ``debug`` and logged without.
"""

from __future__ import annotations

import logging
import os
import re

from django import template
from django.conf import settings
from django.template.base import (
    FilterExpression,
    Node,
    NodeList,
    Parser,
    Token,
    TokenType,
    VariableNode,
    render_value_in_context,
)

from fileproc_django.conf import get_config, get_registrar
from fileproc_django.storages import KIND_PREFIX, open_storage, reference_of, storage_of_root
from fileproc_wsgi.block import Block
from fileproc_wsgi.errors import ConfigError, InstructionError

register = template.Library()
log = logging.getLogger("fileproc_wsgi.block")

SYNTAX = (
    "{% fileprocessor [as NAME] [key=value ...] %} instructions [{% empty %} fallback] {% endfileprocessor %}"
)
# Wider than Django's own key=value pattern: data-* and aria-* attributes have dashes.
_ARGUMENT = re.compile(r"^([A-Za-z_][-\w]*)=(.+)$", re.DOTALL)


class FileProcessorNode(Node):
    child_nodelists = ("nodelist", "empty")

    def __init__(
        self,
        nodelist: NodeList,
        empty: NodeList,
        arguments: dict[str, FilterExpression],
        name: str | None,
        block: Block,
    ):
        self.nodelist = nodelist
        self.empty = empty
        self.values = tuple(arguments.values())
        names = tuple(arguments)
        self.source = names.index("source") if "source" in names else None
        self.name = name
        self.block = block

    def render(self, context) -> str:
        strict = _strict(context)
        try:
            text, values = self._resolved(context)
        except Exception:
            # A variable or filter of the project's raised (a property, a method): with
            # debug it is Django's to show, like any template error; without, the block
            # fails softly as for any other fault, since no exception leaves a page.
            if strict:
                raise
            log.exception(
                "fileprocessor block in %s, line %d: resolving its arguments",
                self.block.where,
                self.block.line,
            )
            return self._empty(context)
        try:
            rendition = self.block.render(
                get_registrar(), text, values, strict=strict, reference_of=_reference_of
            )
        except InstructionError as error:
            self._point_debug_page_at(error, context)
            raise
        if rendition is None:
            return self._empty(context)
        if self.name is not None:
            context[self.name] = rendition
            return ""
        # The HTML is already escaped (it has __html__); Django prints a node's str as is.
        return rendition.html

    def _empty(self, context) -> str:
        if self.name is not None:
            context[self.name] = None
        return self.empty.render(context)

    def _resolved(self, context) -> tuple[str, list]:
        """The body as text and the arguments' values, ``source=`` checked."""
        # The body is instructions, not HTML or prose: 'a&b.jpg' must reach the registrar
        # as it is, and 1200 or 0.5 must not become '1,200' or '0,5' in some locales.
        autoescape, use_l10n = context.autoescape, context.use_l10n
        context.autoescape = context.use_l10n = False
        try:
            text = _body_text(self.nodelist, context)
        finally:
            context.autoescape, context.use_l10n = autoescape, use_l10n
        values = []
        for at, value in enumerate(self.values):
            if at != self.source:
                values.append(value.resolve(context))
                continue
            try:
                resolved = value.resolve(context)
            except Exception as error:
                # photo.image.url on an empty field raises ValueError: the commonest
                # mistake must be told as such, not as a 500 from inside Django.
                resolved = _Misplaced(_unresolved(value.token, error))
            if isinstance(resolved, str):
                resolved = _checked(resolved, value.token)
            values.append(resolved)
        return text, values

    def _point_debug_page_at(self, error: InstructionError, context) -> None:
        """Make Django's debug page highlight the instruction line the error names,
        not the line of the tag (which Django would pick)."""
        current = context.render_context.template
        if not current.engine.debug or current.origin != self.origin:
            return
        lines = current.source.splitlines(keepends=True)
        if not 1 <= error.line <= len(lines):
            return
        start = sum(len(line) for line in lines[: error.line - 1])
        end = start + len(lines[error.line - 1].rstrip("\r\n"))
        token = Token(TokenType.TEXT, current.source[start:end], (start, end), error.line)
        # What Django's debug page reads from an exception; no type declares it.
        vars(error)["template_debug"] = current.get_exception_info(error, token)


def _body_text(nodelist: NodeList, context) -> str:
    """The body rendered to text, where a variable that is None prints nothing: Django
    would print "None", and a block would look for a file of that name instead of
    printing its empty branch (Jinja2's adapter does the same)."""
    parts = []
    for node in nodelist:
        if type(node) is VariableNode:
            value = node.filter_expression.resolve(context)
            parts.append("" if value is None else render_value_in_context(value, context))
        else:
            # django-stubs says int | str; Django's Node.render_annotated gives the node's text.
            parts.append(node.render_annotated(context))  # type: ignore[arg-type]
    return "".join(parts)


class _Misplaced:
    """A ``source=`` string that is a stored file's URL or path: passed on as an object,
    so that the core meets it in the converter and reports it as it reports any bad
    ``source=`` (raised with ``DEBUG``, logged with the empty branch without)."""

    __slots__ = ("problem",)

    def __init__(self, problem: str):
        self.problem = problem


def _reference_of(value) -> str | None:
    if isinstance(value, _Misplaced):
        raise InstructionError(value.problem, line=1, column=1, step="source")
    return reference_of(value)


def _strict(context) -> bool:
    """The template engine's ``debug`` (TEMPLATES' OPTIONS, DEBUG unless set): what
    makes Django's own template errors show, and what a project's tests can turn on
    while the test runner keeps DEBUG off."""
    template = getattr(context, "template", None)
    if template is None:
        return settings.DEBUG
    return template.engine.debug


def _unresolved(expression: str, error: Exception) -> str:
    problem = f"source={expression} raised {type(error).__name__}: {str(error).rstrip('.')}"
    field, dot, what = expression.rpartition(".")
    if dot and what in ("url", "path"):
        problem += (
            f"; pass the file field itself (source={field}), not its .{what}: an empty field "
            "then prints the {% empty %} branch"
        )
    return problem


def _checked(value: str, expression: str):
    """``value`` itself, or a :class:`_Misplaced` when it is a media URL or file path, or
    a reference the settings cannot serve (a root they lack, a '..')."""
    if not value.strip():
        return value  # an optional value left empty: the empty branch, quietly
    if not value.startswith(("/", "http://", "https://", "\\")) and not os.path.isabs(value):
        problem = _reference_problem(value)
        if problem is None:
            return value
        return _Misplaced(f"source={expression} gave {value!r}: {problem}")
    return _misplaced(value, expression)


# A reference's root, as the core reads it (fileproc_wsgi.sources).
_ROOT_PREFIX = re.compile(r"^([a-z][a-z0-9_-]*):(?!//)")


# Per config (a settings change makes a new one): what is wrong with each string source
# seen, so that a warm block pays a dict lookup rather than parsing its reference again.
_reference_problems: tuple = (None, {})
_REMEMBERED = 4096


def _reference_problem(reference: str) -> str | None:
    """Why ``reference`` can never name a file under these settings, or None.

    A mistake in the template or the settings, unlike a file not (yet) there, so it is
    an error with debug; the core would only log it as a source it cannot find."""
    global _reference_problems
    config = get_config()
    for_config, problems = _reference_problems
    if for_config is not config:
        problems = {}
        _reference_problems = (config, problems)
    try:
        return problems[reference]
    except KeyError:
        pass
    if len(problems) >= _REMEMBERED:
        problems.clear()  # simpler than an LRU; a page names few distinct sources
    problem = problems[reference] = _find_reference_problem(config, reference)
    return problem


def _find_reference_problem(config, reference: str) -> str | None:
    match = _ROOT_PREFIX.match(reference)
    root, path = (match.group(1), reference[match.end() :]) if match else ("default", reference)
    value = config.source_roots.get(root)
    if value is None:
        known = ", ".join(sorted(config.source_roots)) or "none"
        return f'no source root {root!r} (roots: {known}); add it to FILEPROCESSOR["source_roots"]'
    if ".." in re.split(r"[\\/]", path):
        return "'..' is not allowed in a source path; name the file under its root"
    if value.startswith(KIND_PREFIX):
        return _storage_problem(config, value)
    return None


# Per config (a settings change makes a new one): whether each django: root names a
# storage, so that a warm block with a string source asks the app registry nothing.
_storage_problems: tuple = (None, {})


def _storage_problem(config, value: str) -> str | None:
    global _storage_problems
    for_config, problems = _storage_problems
    if for_config is not config:
        problems = {}
        _storage_problems = (config, problems)
    if value not in problems:
        try:
            open_storage(value[len(KIND_PREFIX) :])
            problems[value] = None
        except ConfigError as error:
            problems[value] = str(error)
    return problems[value]


def _misplaced(value: str, expression: str):
    """``value`` itself, or a :class:`_Misplaced` when it is a media URL or file path."""
    what = _what_it_is(value)
    if what is None:
        return value
    field = expression[: -len(what) - 1] if expression.endswith(f".{what}") else "photo.image"
    shown = f" {value!r}" if what == "url" else ""  # a path would show the server's directories
    return _Misplaced(
        f"source={expression} gave the file's {what}{shown}; pass the file field itself "
        f"(source={field}), not its .{what}"
    )


def _what_it_is(value: str) -> str | None:
    """ "url" or "path" when ``value`` is under MEDIA_URL or MEDIA_ROOT, or under the
    URL or directory of a storage a source root reads."""
    urls, directories = [settings.MEDIA_URL], [settings.MEDIA_ROOT]
    for root in get_config().source_roots.values():
        if not root.startswith(KIND_PREFIX):
            continue
        storage = storage_of_root(root)
        if storage is None:
            continue
        try:
            urls.append(storage.url("").split("?", 1)[0])
        except Exception:  # noqa: S110 - a storage without URLs (InMemoryStorage): none to match
            pass
        location = getattr(storage, "location", None)
        if isinstance(location, str) and os.path.isabs(location):
            directories.append(location)
    if any(url and url != "/" and value.startswith(str(url)) for url in urls):
        return "url"
    for directory in directories:
        if directory and os.path.isabs(str(directory)):
            directory = os.path.join(os.path.abspath(str(directory)), "")
            if os.path.abspath(value).startswith(directory):
                return "path"
    return None


@register.tag("fileprocessor")
def do_fileprocessor(parser: Parser, token: Token) -> FileProcessorNode:
    tag, *bits = token.split_contents()
    name = None
    if bits[:1] == ["as"]:
        if len(bits) < 2 or not bits[1].isidentifier():
            raise _syntax_error(f"'as' needs a variable name after it, got {' '.join(bits)!r}")
        name, bits = bits[1], bits[2:]
    arguments: dict[str, FilterExpression] = {}
    for bit in bits:
        if bit == "as":
            raise _syntax_error("'as NAME' must come first, before any key=value")
        match = _ARGUMENT.match(bit)
        if match is None:
            raise _syntax_error(f"expected key=value, got {bit!r}")
        key, value = match.groups()
        if key in arguments:
            raise _syntax_error(f"{key}= is given twice")
        arguments[key] = parser.compile_filter(value)

    end = f"end{tag}"
    try:
        nodelist = parser.parse(("empty", end))
        empty = NodeList()
        if parser.next_token().contents == "empty":
            empty = parser.parse((end,))
            parser.delete_first_token()
    except template.TemplateSyntaxError as error:
        # Django reports an unclosed block on the opening tag's token; errors inside
        # the body carry their own token and are left as they are.
        if getattr(error, "token", None) is token:
            raise _syntax_error(f"no {{% {end} %}} closes the block opened on line {token.lineno}") from None
        raise
    origin = parser.origin
    # Django's lexer numbers every token, and a template it compiles always has an origin.
    assert origin is not None and token.lineno is not None
    where = origin.template_name if isinstance(origin.template_name, str) else None
    block = Block(tuple(arguments), where=where or origin.name, line=token.lineno)
    return FileProcessorNode(nodelist, empty, arguments, name, block)


def _syntax_error(problem: str) -> template.TemplateSyntaxError:
    return template.TemplateSyntaxError(f"fileprocessor tag: {problem}; expected {SYNTAX}")
