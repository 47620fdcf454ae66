"""Instruction text: the grammar, its canonical form and the checksum (SPEC section 2).

:func:`parse` turns the text between the template tags into :class:`Instructions`: the
source reference and the operations of :mod:`fileproc_wsgi.operations`, or raises an
:class:`~fileproc_wsgi.errors.InstructionError` naming the step, line and column. Two texts
that mean the same thing (whitespace, ``|`` versus newline, case of words and keys, order
of ``key=value`` arguments, comments, spelling of numbers, sizes and colours) have the same
:attr:`Instructions.canonical` text and so the same :func:`checksum`.

The parts, each importing only those before it:

- :mod:`.lexer`: the text as steps of tokens with their lines and columns; quoting;
- :mod:`.values`: reading a number, size, colour or gravity from a token;
- :mod:`.arguments`: what a step takes, splitting its tokens, and plugins' :class:`Arguments`;
- :mod:`.steps`: the table of steps (word, spec, builder), built-in and plugins';
- :mod:`.canonical`: the canonical text of a source and a step, and the checksum;
- this module: :class:`Instructions` and :func:`parse`, and every name the rest of the
  package imports from here.

This package is pure: it resolves no source root and touches no file, database or network.
"""

from __future__ import annotations

import dataclasses
import functools
import math

from .. import plugins
from ..errors import InstructionError, ProcessingError
from ..operations import (
    RESAMPLING,
    Background,
    Blur,
    Crop,
    Fill,
    Fit,
    Format,
    Frame,
    Operation,
    Pad,
    Page,
    PluginOperation,
    Quality,
    Upscale,
)
from .arguments import Arguments, split
from .canonical import (
    CHECKSUM_LENGTH,
    PROCESSING_VERSION,
    canonical_source,
    checksum,
    is_checksum,
    source_step,
    step_text,
)
from .lexer import Token, fail, is_word, lex, quote, step_lines
from .steps import (
    BUILTIN_WORDS,
    OPERATION_WORDS,
    SOURCE_SPEC,
    STEPS,
    find_entry,
    is_operation,
    plugin_entry,
    unknown,
)
from .values import MAX_PAGE, MAX_SIDE

__all__ = [
    "BUILTIN_WORDS",
    "CHECKSUM_LENGTH",
    "MAX_PAGE",
    "MAX_SIDE",
    "OPERATION_WORDS",
    "PROCESSING_VERSION",
    "Arguments",
    "Instructions",
    "canonical_source",
    "checksum",
    "has_empty_source",
    "is_checksum",
    "is_operation",
    "leading_word",
    "parse",
    "source_step",
]


def _times(side: int | None, density: float) -> int | None:
    # Half up, not Python's half to even: 1.5 x 333 is 500 whatever the parity.
    return None if side is None else max(1, math.floor(side * density + 0.5))


@dataclasses.dataclass(frozen=True)
class Instructions:
    """What one instruction text asks for: a source reference and steps, as written.

    ``source`` is tidied only syntactically (see :func:`canonical_source`); resolving it
    against roots and hosts is :mod:`fileproc_wsgi.sources`' job.
    """

    source: str
    steps: tuple[Operation, ...] = ()

    @functools.cached_property
    def operations(self) -> tuple[Operation, ...]:
        """The steps to run, with ``upscale`` set on every fit, fill and pad when any
        ``upscale`` step is present (it is a switch for the whole text, not a pixel step)."""
        if not any(isinstance(step, Upscale) for step in self.steps):
            return self.steps
        return tuple(
            dataclasses.replace(step, upscale=True) if isinstance(step, (Fit, Fill, Pad)) else step
            for step in self.steps
        )

    @functools.cached_property
    def canonical(self) -> str:
        """One step per line, the source first; equal for texts that mean the same."""
        return "\n".join([f"source {quote(self.source)}", *map(step_text, self.steps)])

    @functools.cached_property
    def background(self) -> str | None:
        """The colour transparency is flattened onto (the last ``background`` step's), or
        None when no step asks for it: transparency is then kept where the format allows."""
        colours = [step.color for step in self.steps if isinstance(step, Background)]
        return colours[-1] if colours else None

    @functools.cached_property
    def output(self) -> Format | None:
        """The effective output format, or None when no ``format``/``quality`` step is given.

        The last ``format`` step names the format and its flags; the quality is the last
        one given, by a ``quality`` step or a ``format ... quality=Q``. With a ``quality``
        step but no ``format`` step the result is ``Format(name="", quality=Q)``: an empty
        name means "the default format for this source", at that quality.
        """
        chosen: Format | None = None
        quality: int | None = None
        for step in self.steps:
            if isinstance(step, Format):
                chosen = step
                quality = step.quality if step.quality is not None else quality
            elif isinstance(step, Quality):
                quality = step.value
        if chosen is None:
            return None if quality is None else Format(name="", quality=quality)
        return chosen if chosen.quality == quality else dataclasses.replace(chosen, quality=quality)

    @property
    def page(self) -> int | None:
        """The page to render (the last ``page`` step), or None."""
        pages = [step.number for step in self.steps if isinstance(step, Page)]
        return pages[-1] if pages else None

    @property
    def frame(self) -> Frame | None:
        """The video frame to decode (the last ``frame`` step), or None."""
        frames = [step for step in self.steps if isinstance(step, Frame)]
        return frames[-1] if frames else None

    def plan(self, width: int, height: int) -> list[tuple[str, int, int]] | None:
        """``(step word, width, height)`` after each step, for a source of ``width`` x
        ``height`` (the first entry is the source itself, as ``"source"``).

        The one size computation shared by the registrar (what it promises and which
        limits it checks) and the pipeline (the size each step must give, checked
        before the step runs). None when it cannot be known: a crop outside the image,
        or a size below 1.
        """
        if width < 1 or height < 1:
            return None
        sizes = [("source", width, height)]
        try:
            for operation in self.operations:
                width, height = operation.size(width, height)
                sizes.append((operation.word, width, height))
        except ProcessingError:
            return None
        return sizes

    def predict_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The result's size for a source of ``width`` x ``height``, without decoding.

        None when it cannot be known: a crop outside the image, or a size below 1.
        """
        sizes = self.plan(width, height)
        return None if sizes is None else sizes[-1][1:]

    def at_density(self, density: float) -> str | None:
        """The canonical text of these instructions at ``density`` times the output size
        (``2`` for a ``2x`` screen), or None when a side would pass the largest allowed.

        Every output size is scaled (``fit``, ``fill``, ``pad``, ``resize``), and so is
        what is measured in output pixels after the first of them (a pixel ``crop``, a
        ``blur`` radius, a plugin step as its :meth:`~.PluginOperation.scaled` says), so
        the result is the same picture with more pixels rather than the ``1x`` enlarged.
        A step before any resampling is in source pixels and stays.
        """
        steps: list[Operation] = []
        resampled = False
        for step in self.steps:
            if isinstance(step, RESAMPLING):
                sides = [_times(side, density) for side in (step.width, step.height)]
                if any(side is not None and side > MAX_SIDE for side in sides):
                    return None
                if isinstance(step, Fit):
                    step = dataclasses.replace(step, width=sides[0], height=sides[1])
                else:
                    # Fill, Pad and Resize always have both sides, so both scaled ones too.
                    width, height = sides
                    assert width is not None and height is not None
                    step = dataclasses.replace(step, width=width, height=height)
                resampled = True
            elif resampled and isinstance(step, Crop) and not step.percent:
                step = dataclasses.replace(
                    step,
                    x=step.x * density,
                    y=step.y * density,
                    width=step.width * density,
                    height=step.height * density,
                )
            elif resampled and isinstance(step, Blur):
                step = Blur(min(100.0, step.radius * density))
            elif resampled and isinstance(step, PluginOperation):
                scaled = step.scaled(density)
                if type(scaled) is not type(step):
                    kind = type(step).__name__
                    raise TypeError(f"{kind}.scaled gave {type(scaled).__name__}, not a {kind}")
                step = scaled
            steps.append(step)
        return Instructions(self.source, tuple(steps)).canonical

    def checksum(self, source_version: str) -> str:
        """The checksum of these instructions for that version of their source.

        A text using a plugin's step adds the plugin's distribution and version (and the
        step's own :meth:`~.PluginOperation.salt`) to the salt: upgrading a plugin gives
        new URLs, and every other text keeps its checksum.
        """
        return checksum(self.canonical, source_version, plugins=self.plugins)

    @functools.cached_property
    def plugins(self) -> str:
        """What the plugins these steps come from add to the checksum's salt ('' for none)."""
        if not any(isinstance(step, PluginOperation) for step in self.steps):
            return ""
        lines = {
            f"{step.word} {plugins.identity_of(step)} {step.salt()}".rstrip()
            for step in self.steps
            if isinstance(step, PluginOperation)
        }
        return "\n".join(sorted(lines))


def _source_token(text: str, tokens: list[Token]) -> Token:
    """The source reference: everything its step holds, spaces between words as written.

    A name printed by a variable (``my cat.jpg``) needs no quotes. Only words that end
    the step and read as operations with valid arguments (``photo.jpg fit 100x100``: a
    missing ``|``) are refused, since such a file name is far less likely than that typo.
    """
    words = [
        token if token.key is None else token._replace(text=f"{token.key}={token.text}") for token in tokens
    ]
    if len(words) == 1:
        return words[0]
    line = text.split("\n")[words[0].line - 1]
    for index in range(1, len(words)):
        if _read_as_steps(tokens[index:]):
            token = words[index]
            written = line[words[0].column - 1 : token.column - 1].strip()
            steps = line[token.column - 1 : words[-1].end]
            raise fail(
                f"{token.text!r} after the source reads as an operation: put a | or a new line "
                f"before it ({written} | {steps}); if it is part of the file name, quote the name "
                "or pass it as source= on the tag",
                token,
                "source",
                at_value=False,
            )
    parts = [words[0].text]
    for before, token in zip(words, words[1:], strict=False):
        parts.append(line[before.end : token.column - 1])
        parts.append(token.text)
    return words[0]._replace(text="".join(parts), quoted=True, end=words[-1].end)


def _read_as_steps(tokens: list[Token]) -> bool:
    """Whether ``tokens`` are one or more whole, valid steps (each starting with its word)."""
    if not _is_step(tokens[0]):
        return False
    starts = [index for index, token in enumerate(tokens) if _is_step(token)]
    for start, stop in zip(starts, [*starts[1:], len(tokens)], strict=True):
        word = tokens[start].text.lower()
        entry = find_entry(word)
        assert entry is not None  # _is_step saw a step's word
        spec, build = entry
        try:
            build(word, split(word, tokens[start], tokens[start + 1 : stop], spec))
        except InstructionError:
            return False
    return True


def _is_step(token: Token) -> bool:
    return token.key is None and not token.quoted and is_operation(token.text)


def parse(text: str) -> Instructions:
    """The :class:`Instructions` that ``text`` describes.

    Raises :class:`InstructionError` (a ``ValueError``) naming the step, line and column
    of the first problem and saying what was expected and what was found.
    """
    steps = lex(text, OPERATION_WORDS)
    if not steps:
        raise InstructionError(
            "expected a source first (source photos/a.jpg, or just photos/a.jpg), got no steps",
            line=1,
            column=1,
        )
    first, *rest = steps
    head = first[0]
    word = head.text.lower() if head.key is None and not head.quoted else None
    # A plugin's word is looked for only when more words follow: a lone word is a source
    # name, and reading the plugins costs a process its first parse.
    if word in OPERATION_WORDS or (word is not None and len(first) > 1 and is_operation(word)):
        for later in rest:
            if later[0].text.lower() == "source" and later[0].key is None:
                raise fail("source must be the first step", later[0], "source")
        raise fail(
            f"expected a source first (source <ref>, or just <ref>), got the operation {word!r}; "
            "to make the source optional, pass it as source= on the tag and keep only operations "
            "in the body",
            head,
            word,
        )
    named = first[1:] if word == "source" else first
    if not named:
        split("source", head, named, SOURCE_SPEC)  # raises: too few arguments
    token = _source_token(text, named)
    source = canonical_source(token.text)
    if not source:
        raise fail(f"expected a source reference like photos/a.jpg, got {token.text!r}", token, "source")

    operations = []
    for tokens in rest:
        head = tokens[0]
        written = head.text if head.key is None else f"{head.key}={head.text}"
        word = written.lower()
        if word == "source":
            raise fail("source given twice: give one source, as the first step", head, "source")
        entry = STEPS.get(word) or plugin_entry(word)
        if entry is None:
            raise fail(unknown(written), head, written, at_value=False)
        spec, build = entry
        operations.append(build(word, split(word, head, tokens[1:], spec)))
    return Instructions(source, tuple(operations))


def has_empty_source(text: str) -> bool:
    """Whether the source step of ``text`` is there but names nothing: ``source`` without
    a name, or nothing before the first ``|`` of the first line with steps (as a template
    leaves ``{{ photo }} | fit 80x`` when it prints no photo). A first line holding only
    operations is not counted: a source on a line of its own that printed nothing cannot
    be told from one forgotten. Raises InstructionError where the text cannot be split
    into words."""
    for _, line in step_lines(text):
        if line.lstrip()[0] == "|":
            return True
        break
    steps = lex(text, OPERATION_WORDS)
    return bool(steps) and len(steps[0]) == 1 and is_word(steps[0][0], ("source",))


def leading_word(text: str) -> tuple[str, int, int] | None:
    """The first word of ``text`` as written, with its line and column; None when the
    text has no step. Raises InstructionError where the text cannot be split into words."""
    steps = lex(text, OPERATION_WORDS)
    if not steps:
        return None
    head = steps[0][0]
    return text.split("\n")[head.line - 1][head.column - 1 : head.end], head.line, head.column
