"""The ``{% fileprocessor %}`` block tag.

::

    {% fileprocessor [as NAME] [key=value ...] %} instructions [{% empty %} fallback] {% endfileprocessor %}

The body is rendered to text, registered (no pixel is touched) and printed as an
``<img>`` (or a ``<picture>``, see :mod:`fileproc_wsgi.tags` for ``widths=``,
``formats=`` and ``sizes=``); every other argument becomes an escaped attribute. With
``as NAME`` the rendition (``url``, ``width``, ``height``, ``checksum``,
``content_type``, ``html``) is stored in the context instead and nothing is printed.
When the block cannot be registered (a missing source; bad text unless ``DEBUG``) the
``{% empty %}`` branch is printed, or nothing, and ``NAME`` is None.
"""

from __future__ import annotations

import re

from django import template
from django.conf import settings
from django.template.base import FilterExpression, Node, NodeList, Parser, Token, TokenType

from fileproc_django.conf import get_registrar
from fileproc_wsgi.errors import InstructionError
from fileproc_wsgi.tags import Block

register = template.Library()

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
        self.name = name
        self.block = block

    def render(self, context) -> str:
        # The body is instructions, not HTML or prose: 'a&b.jpg' must reach the registrar
        # as it is, and 1200 or 0.5 must not become '1,200' or '0,5' in some locales.
        autoescape, use_l10n = context.autoescape, context.use_l10n
        context.autoescape = context.use_l10n = False
        try:
            text = self.nodelist.render(context)
        finally:
            context.autoescape, context.use_l10n = autoescape, use_l10n
        values = [value.resolve(context) for value in self.values]
        try:
            rendition = self.block.render(get_registrar(), text, values, strict=settings.DEBUG)
        except InstructionError as error:
            self._point_debug_page_at(error, context)
            raise
        if self.name is not None:
            context[self.name] = rendition
            return self.empty.render(context) if rendition is None else ""
        # The HTML is already escaped (it has __html__); Django prints a node's str as is.
        return self.empty.render(context) if rendition is None else rendition.html

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
        error.template_debug = current.get_exception_info(error, token)


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
    where = parser.origin.template_name or parser.origin.name
    return FileProcessorNode(
        nodelist, empty, arguments, name, Block(arguments, where=where, line=token.lineno)
    )


def _syntax_error(problem: str) -> template.TemplateSyntaxError:
    return template.TemplateSyntaxError(f"fileprocessor tag: {problem}; expected {SYNTAX}")
