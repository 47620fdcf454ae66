"""The Jinja2 extension behind ``{% fileprocessor %}``: tag syntax in, core calls out.

Parsing happens once per template, so everything knowable then is decided then: the
argument names, the template's name, the line the instructions start on, and whether
the result is printed or stored under ``as NAME``. A render only evaluates the
argument values, renders the body to text and hands both to the core's ``Block`` for
the tag, which decides what is printed (and answers a warm block from what it printed
before, once the registrar confirms its registration is unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from jinja2 import Environment, nodes, pass_context
from jinja2.ext import Extension
from jinja2.lexer import describe_token
from jinja2.parser import Parser
from jinja2.runtime import Context, StrictUndefined, Undefined

from fileproc_wsgi.block import Block, ReferenceOf
from fileproc_wsgi.errors import ConfigError

_END_OF_BODY = ("name:empty", "name:endfileprocessor")
_FILTER = "fileprocessor:block"
_TEXT = "fileprocessor:text"


class _Settings(Protocol):
    """The attributes the extension adds to its environment (``Environment.extend``)."""

    fileprocessor_registrar: Any
    fileprocessor_strict: bool | Callable[[], object]
    fileprocessor_source_reference: ReferenceOf | None


class FileProcessorExtension(Extension):
    """Adds ``{% fileprocessor [as NAME] [key=value ...] %}…[{% empty %}…]{% endfileprocessor %}``.

    Configuration lives on the environment (an extension takes no arguments):
    ``fileprocessor_registrar`` is what registers the text (a ``Registrar``, a
    ``RemoteRegistrar`` or anything with their ``register_many``);
    ``fileprocessor_strict`` (a bool, or a callable asked at each render, such as
    ``lambda: app.debug``) makes bad instruction text raise instead of being logged and
    rendered as the ``empty`` branch; ``fileprocessor_source_reference`` (optional) turns
    a ``source=`` value that is not a string, such as a framework's file object, into a
    source reference. A missing source never raises, and an empty one (None, ``""``)
    renders the ``empty`` branch. None printed into the body prints nothing.
    """

    tags = {"fileprocessor"}

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.extend(
            fileprocessor_registrar=None, fileprocessor_strict=False, fileprocessor_source_reference=None
        )
        environment.filters[_TEXT] = _text
        # A block compiles to a call of this filter, under a name no template can spell:
        # a Call node would go through Context.call, whose probing for pass_context and
        # friends costs a warm block about as much as its own work in this module.
        environment.filters[_FILTER] = self._block
        # The core's Block of each tag, by (template, line, argument names): what the
        # compiled template holds, since its code (which a bytecode cache may have
        # brought from another process) can hold only literals.
        self._blocks: dict[tuple, Block] = {}

    def parse(self, parser: Parser) -> list[nodes.Node]:
        lineno = next(parser.stream).lineno
        target, names, values = self._parse_arguments(parser, lineno)

        parser.stream.expect("block_end")
        # The body's first token, not the tag, gives the line its text starts on: with
        # trim_blocks or "-%}" the text begins on a later line than the tag.
        first_line = parser.stream.current.lineno
        body = self._parse_until(parser, _END_OF_BODY, lineno)
        empty: list[nodes.Node] = []
        if next(parser.stream).value == "empty":
            self._expect_end_of_tag(parser, "empty")
            parser.stream.expect("block_end")
            empty = self._parse_until(parser, ("name:endfileprocessor",), lineno)
            next(parser.stream)
        self._expect_end_of_tag(parser, "endfileprocessor")

        parts = _plain_parts(body)
        text = parser.free_identifier(lineno) if parts is None else nodes.Tuple(parts, "load")
        result = nodes.Name(target, "store") if target else parser.free_identifier(lineno)
        found = nodes.Name(target, "load") if target else result
        block = nodes.Const((parser.name or "<template>", first_line, tuple(names)))
        call = nodes.Filter(
            text,
            _FILTER,
            [block, nodes.Tuple(values, "load"), nodes.Const(target is not None)],
            [],
            None,
            None,
            lineno=lineno,
        )
        statements: list[nodes.Node] = []
        if parts is None:
            # None printed anywhere in the body prints nothing, as in the plain parts; the
            # environment's own finalize (if any) stays for every other template.
            for output in _outputs(body):
                output.nodes = [
                    child
                    if isinstance(child, nodes.TemplateData)
                    else nodes.Filter(child, _TEXT, [], [], None, None, lineno=child.lineno)
                    for child in output.nodes
                ]
            # Instruction text is not HTML: "a&b.jpg" must reach the registrar as it is.
            statements.append(
                nodes.ScopedEvalContextModifier(
                    [nodes.Keyword("autoescape", nodes.Const(False))],
                    [nodes.AssignBlock(text, None, body, lineno=first_line)],
                    lineno=lineno,
                )
            )
        statements.append(nodes.Assign(result, call, lineno=lineno))
        if target:
            if empty:
                statements.append(nodes.If(nodes.Not(found), empty, [], [], lineno=lineno))
        else:
            statements.append(nodes.If(found, [nodes.Output([found])], [], empty, lineno=lineno))
        # Nodes built here carry no line of their own; Jinja's tracebacks need one.
        return [node.set_lineno(lineno) for node in statements]

    def _parse_arguments(self, parser: Parser, lineno: int) -> tuple[str | None, list[str], list[nodes.Expr]]:
        """``as NAME`` (anywhere, once) and ``key=value`` pairs: their names, and their values
        as expressions evaluated at each render."""
        stream = parser.stream
        target: str | None = None
        names: list[str] = []
        values: list[nodes.Expr] = []
        while stream.current.type != "block_end":
            token = stream.current
            if token.test("name:as") and stream.look().type != "assign":
                next(stream)
                if target is not None:
                    self._fail(parser, "'as' is given twice", token.lineno)
                name = stream.current
                if name.type != "name" or not nodes.Name(name.value, "store").can_assign():
                    self._fail(
                        parser, f"'as' needs a variable name, got {describe_token(name)}", token.lineno
                    )
                target = next(stream).value
            elif token.type == "name":
                key = next(stream).value
                # Attribute names such as aria-label and data-id lex as name - name.
                while stream.current.type == "sub" and stream.look().type == "name":
                    next(stream)
                    key += "-" + next(stream).value
                if not stream.skip_if("assign"):
                    self._fail(parser, f"expected key=value, got {key!r} without a value", token.lineno)
                if stream.current.type == "block_end":
                    self._fail(parser, f"{key}= needs a value", token.lineno)
                if key.lower() in (name.lower() for name in names):
                    self._fail(parser, f"argument {key!r} is given twice", token.lineno)
                names.append(key)
                values.append(parser.parse_expression())
            else:
                self._fail(
                    parser, f"expected key=value or 'as NAME', got {describe_token(token)}", token.lineno
                )
        return target, names, values

    def _parse_until(self, parser: Parser, end_tokens: tuple[str, ...], lineno: int) -> list[nodes.Node]:
        body = parser.subparse(end_tokens)
        if parser.stream.current.type == "eof":
            # Jinja's own message points at the last line; the opening tag is what to fix.
            self._fail(parser, f"the block opened on line {lineno} has no endfileprocessor", lineno)
        return body

    def _expect_end_of_tag(self, parser: Parser, tag: str) -> None:
        token = parser.stream.current
        if token.type != "block_end":
            self._fail(parser, f"'{tag}' takes no arguments, got {describe_token(token)}", token.lineno)

    def _fail(self, parser: Parser, problem: str, lineno: int):
        start, end = self.environment.block_start_string, self.environment.block_end_string
        parser.fail(
            f"fileprocessor: {problem}. Expected {start} fileprocessor [as NAME] [key=value ...] {end}"
            f"…[{start} empty {end}…]{start} endfileprocessor {end}",
            lineno,
        )

    # pass_context, not pass_environment: Jinja's optimizer calls an environment filter
    # whose arguments are all constants at compile time, which would register a block of
    # plain text once, when the template compiles, and never look at its source again.
    @pass_context
    def _block(
        self, context: Context, text: str | tuple, block: tuple, values: Sequence[object], stored: bool
    ):
        """What a block gives its template: the HTML to print, or with ``as NAME`` (``stored``)
        the rendition; None when it could not be registered (already logged)."""
        # Settings come from the environment rendering, which may be an overlay of ours.
        environment = cast(_Settings, context.environment)
        registrar = environment.fileprocessor_registrar
        if registrar is None:
            raise ConfigError(
                "fileprocessor: no registrar; set environment.fileprocessor_registrar to a "
                "fileproc_wsgi Registrar (or RemoteRegistrar) before rendering"
            )
        if isinstance(text, tuple):
            text = "".join([part if type(part) is str else _text(part) for part in text])
        if values:
            values = [str(value) if isinstance(value, Undefined) else value for value in values]
        compiled = self._blocks.get(block)
        if compiled is None:
            where, line, names = block
            compiled = self._blocks.setdefault(block, Block(names, where=where, line=line))
        strict = environment.fileprocessor_strict
        if type(strict) is not bool:  # Flask's lambda: app.debug, read when the page renders
            strict = bool(strict() if callable(strict) else strict)
        rendition = compiled.render(
            registrar, text, values, strict=strict, reference_of=environment.fileprocessor_source_reference
        )
        if rendition is None or stored:
            return rendition
        # Already escaped, and marked so with __html__: autoescape prints it as it is (as
        # Markup), and returning it unwrapped spares building that Markup twice.
        return rendition.html


def _text(value: object) -> str:
    """What a value prints as inside a block's body: None and undefined values (other
    than a StrictUndefined, which raises as its owner asked) print nothing, so that
    ``{{ user.photo }} | fit 80x80`` with no photo renders the ``empty`` branch."""
    if value is None or (isinstance(value, Undefined) and not isinstance(value, StrictUndefined)):
        return ""
    return str(value)


def _outputs(body: list[nodes.Node]) -> list[nodes.Output]:
    """Every output node of a body, at any depth (inside ``{% if %}``, ``{% for %}`` ...)."""
    found: list[nodes.Output] = []
    for node in body:
        if isinstance(node, nodes.Output):
            found.append(node)
        found.extend(node.find_all(nodes.Output))
    return found


def _plain_parts(body: list[nodes.Node]) -> list[nodes.Expr] | None:
    """The body as a list of strings and expressions to join, when it is only text and
    ``{{ ... }}`` (the usual case); None when it has statements (``{% if %}`` ...).

    Joined by the block itself, the parts are never escaped, so such a body needs none of
    the autoescape switching (and its cost on every render) that a general body does.
    """
    parts: list[nodes.Expr] = []
    for node in body:
        if not isinstance(node, nodes.Output):
            return None
        for child in node.nodes:
            parts.append(nodes.Const(child.data) if isinstance(child, nodes.TemplateData) else child)
    return parts
