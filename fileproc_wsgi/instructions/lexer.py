"""Lexing: instruction text as steps of tokens, and quoting a word so that it reads back.

:func:`lex` splits the text into steps (at ``|`` and line breaks, skipping blank lines and
``#`` comments), each a list of :class:`Token`: a word or a ``key=value``, with quotes
removed and escapes resolved, and the line and column it was written at, which every
:class:`~fileproc_wsgi.errors.InstructionError` (:func:`fail`) points to. What the words
mean is for :mod:`.steps`; the lexer only needs to know which words start an operation,
to tell a quote left open from one that is part of a source's name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Container, Iterator
from typing import NamedTuple

from ..errors import InstructionError

# A word is a run of bare characters and quoted strings, as in a shell, so that both
# key="a b" and "a b" work. Quotes do not span lines: a step never contains a newline.
_PIECES = r"""(?:[^\s|"']+|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
_LEXEME = re.compile(
    rf"""(?P<key>[A-Za-z_][A-Za-z0-9_-]*)=(?P<value>{_PIECES}*)
       | (?P<word>{_PIECES}+)
       | (?P<pipe>\|)
       | (?P<quote>["'])
       | \s+""",
    re.VERBOSE,
)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*=")
_QUOTED_PIECE = re.compile(r""""((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'""")
_ESCAPE = re.compile(r"""\\(["'\\])""")
_NEEDS_QUOTES = re.compile(r"""[\s"'|#=]""")


class Token(NamedTuple):
    """One word or ``key=value`` of a step, and where it was written."""

    text: str  # quotes removed, escapes resolved
    key: str | None  # the key of key=value, as written
    quoted: bool
    line: int
    column: int  # 1-based start of the token
    value_column: int  # 1-based start of the value (after ``key=``)
    end: int  # 0-based end of the token in its line: the token is line[column - 1 : end]


# NamedTuple's generated __new__ is Python code; this C path halves the lexing time.
_token = functools.partial(tuple.__new__, Token)


def _unquote_piece(match: re.Match[str]) -> str:
    inner = match.group(1) if match.group(1) is not None else match.group(2)
    return _ESCAPE.sub(r"\1", inner) if "\\" in inner else inner


def _unquote(raw: str) -> tuple[str, bool]:
    if '"' not in raw and "'" not in raw:
        return raw, False
    return _QUOTED_PIECE.sub(_unquote_piece, raw), True


def _lex_plain(line: str, number: int) -> list[list[Token]]:
    """The steps of a line without quotes: the common case, kept off the regex path."""
    steps = []
    offset = 1
    for part in line.split("|"):
        step = []
        end = 0
        for word in part.split():
            start = part.find(word, end)
            end = start + len(word)
            column = offset + start
            stop = column - 1 + len(word)
            key = _KEY.match(word) if "=" in word else None
            if key:
                split = key.end()
                step.append(
                    _token((word[split:], word[: split - 1], False, number, column, column + split, stop))
                )
            else:
                step.append(_token((word, None, False, number, column, column, stop)))
        if step:
            steps.append(step)
        offset += len(part) + 1
    return steps


def _step_name(tokens: list[Token], operations: Container[str], *, first: bool) -> str | None:
    """The step an unfinished list of tokens belongs to, for an error message."""
    if not tokens:
        return None
    word = tokens[0].text.lower()
    return "source" if first and word not in operations else word


def is_word(token: Token, words) -> bool:
    return token.key is None and not token.quoted and token.text.lower() in words


def _lex_quoted(line: str, number: int, steps: list[list[Token]], operations: Container[str]) -> None:
    """The steps of a line with quotes, added to ``steps``."""
    step: list[Token] = []
    position = 0
    while position < len(line):
        match = _LEXEME.match(line, position)
        # Every character starts one of the alternatives (a lone quote is one).
        assert match is not None
        position = match.end()
        kind = match.lastgroup
        if kind is None:
            continue
        column = match.start() + 1
        if kind == "word":
            value, quoted = _unquote(match.group("word"))
            step.append(Token(value, None, quoted, number, column, column, position))
        elif kind == "value":
            value, quoted = _unquote(match.group("value"))
            step.append(
                Token(value, match.group("key"), quoted, number, column, match.start("value") + 1, position)
            )
        elif kind == "pipe":
            if step:
                steps.append(step)
            step = []
        else:
            named = step[1:] if step and is_word(step[0], ("source",)) else step
            if steps or not named or is_word(step[0], operations):
                raise InstructionError(
                    f"unterminated quote: expected a closing {match.group()} before the end of the line",
                    line=number,
                    column=column,
                    step=_step_name(step, operations, first=not steps),
                )
            # A lone quote inside a source name (Bob's photo.jpg, printed by a variable) is
            # part of the name: a source not starting with a quote is taken as written.
            start = named[0].column - 1
            bar = line.find("|", match.start())
            stop = len(line) if bar < 0 else bar
            text = line[start:stop].rstrip()
            literal = Token(text, None, True, number, start + 1, start + 1, start + len(text))
            steps.append([*step[: len(step) - len(named)], literal])
            step = []
            position = stop + 1
    if step:
        steps.append(step)


def step_lines(text: str) -> Iterator[tuple[int, str]]:
    """The lines of ``text`` that hold steps, with their numbers: not blank, no comment."""
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.lstrip()
        if stripped and stripped[0] != "#":
            yield number, line


def lex(text: str, operations: Container[str]) -> list[list[Token]]:
    """The non-empty steps of ``text``, each a list of tokens (the word first).

    ``operations`` are the words that start an operation step (lowercase): a quote left
    open in the first step is part of the source's name unless that step starts with one.
    """
    steps: list[list[Token]] = []
    for number, line in step_lines(text):
        if '"' not in line and "'" not in line:
            steps.extend(_lex_plain(line, number))
        else:
            _lex_quoted(line, number, steps, operations)
    return steps


def fail(problem: str, token: Token, step: str | None, *, at_value: bool = True) -> InstructionError:
    """The error to raise for ``problem`` in ``step``, pointing at ``token``'s value (at
    the token itself unless ``at_value``)."""
    column = token.value_column if at_value else token.column
    return InstructionError(problem, line=token.line, column=column, step=step)


def quote(text: str) -> str:
    """``text`` as one word that lexes back to it: quoted only when it has to be."""
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
