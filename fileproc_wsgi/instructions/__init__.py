"""Instruction text: the grammar, its canonical form and the checksum (SPEC section 2).

:func:`parse` turns the text between the template tags into :class:`Instructions`: the
source reference and the operations of :mod:`fileproc_wsgi.operations`, or raises an
:class:`~fileproc_wsgi.errors.InstructionError` naming the step, line and column. Two texts
that mean the same thing (whitespace, ``|`` versus newline, case of words and keys, order
of ``key=value`` arguments, comments, spelling of numbers, sizes and colours) have the same
:attr:`Instructions.canonical` text and so the same :func:`checksum`.

This module is pure: it resolves no source root and touches no file, database or network.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Literal, NamedTuple, overload

from .. import plugins
from ..errors import InstructionError, ProcessingError
from ..operations import (
    GRAVITIES,
    GRAVITY_NAMES,
    OUTPUT_FORMATS,
    RESAMPLING,
    Background,
    Blur,
    Crop,
    Fill,
    Fit,
    Flip,
    Format,
    Frame,
    Grayscale,
    Operation,
    Pad,
    Page,
    PluginOperation,
    Quality,
    Resize,
    Rotate,
    Sharpen,
    Upscale,
)

PROCESSING_VERSION = "1"
"""Part of every checksum: bump it when results for the same text change, to get new URLs."""

CHECKSUM_LENGTH = 32
MAX_SIDE = 16384
MAX_PAGE = 1_000_000

# --------------------------------------------------------------------------- lexing

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


class _Token(NamedTuple):
    text: str  # quotes removed, escapes resolved
    key: str | None  # the key of key=value, as written
    quoted: bool
    line: int
    column: int  # 1-based start of the token
    value_column: int  # 1-based start of the value (after ``key=``)
    end: int  # 0-based end of the token in its line: the token is line[column - 1 : end]


# NamedTuple's generated __new__ is Python code; this C path halves the lexing time.
_token = functools.partial(tuple.__new__, _Token)


def _unquote_piece(match: re.Match[str]) -> str:
    inner = match.group(1) if match.group(1) is not None else match.group(2)
    return _ESCAPE.sub(r"\1", inner) if "\\" in inner else inner


def _unquote(raw: str) -> tuple[str, bool]:
    if '"' not in raw and "'" not in raw:
        return raw, False
    return _QUOTED_PIECE.sub(_unquote_piece, raw), True


def _lex_plain(line: str, number: int) -> list[list[_Token]]:
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


def _step_name(tokens: list[_Token], *, first: bool) -> str | None:
    """The step an unfinished list of tokens belongs to, for an error message."""
    if not tokens:
        return None
    word = tokens[0].text.lower()
    return "source" if first and word not in OPERATION_WORDS else word


def _is_word(token: _Token, words) -> bool:
    return token.key is None and not token.quoted and token.text.lower() in words


def _lex_quoted(line: str, number: int, steps: list[list[_Token]]) -> None:
    """The steps of a line with quotes, added to ``steps``."""
    step: list[_Token] = []
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
            step.append(_Token(value, None, quoted, number, column, column, position))
        elif kind == "value":
            value, quoted = _unquote(match.group("value"))
            step.append(
                _Token(value, match.group("key"), quoted, number, column, match.start("value") + 1, position)
            )
        elif kind == "pipe":
            if step:
                steps.append(step)
            step = []
        else:
            named = step[1:] if step and _is_word(step[0], ("source",)) else step
            if steps or not named or _is_word(step[0], OPERATION_WORDS):
                raise InstructionError(
                    f"unterminated quote: expected a closing {match.group()} before the end of the line",
                    line=number,
                    column=column,
                    step=_step_name(step, first=not steps),
                )
            # A lone quote inside a source name (Bob's photo.jpg, printed by a variable) is
            # part of the name: a source not starting with a quote is taken as written.
            start = named[0].column - 1
            bar = line.find("|", match.start())
            stop = len(line) if bar < 0 else bar
            text = line[start:stop].rstrip()
            literal = _Token(text, None, True, number, start + 1, start + 1, start + len(text))
            steps.append([*step[: len(step) - len(named)], literal])
            step = []
            position = stop + 1
    if step:
        steps.append(step)


def _step_lines(text: str) -> Iterator[tuple[int, str]]:
    """The lines of ``text`` that hold steps, with their numbers: not blank, no comment."""
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.lstrip()
        if stripped and stripped[0] != "#":
            yield number, line


def _lex(text: str) -> list[list[_Token]]:
    """The non-empty steps of ``text``, each a list of tokens (the word first)."""
    steps: list[list[_Token]] = []
    for number, line in _step_lines(text):
        if '"' not in line and "'" not in line:
            steps.extend(_lex_plain(line, number))
        else:
            _lex_quoted(line, number, steps)
    return steps


# --------------------------------------------------------------------------- values

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_SIZE = re.compile(r"([0-9]*)[xX]([0-9]*)")
_COLOR = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_SECONDS = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)[sS]?")
_CLOCK = re.compile(r"(?:([0-9]+):)?([0-9]+):([0-9]+(?:\.[0-9]*)?)")
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)%")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_ROOT_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_-]*:")
_SLASHES = re.compile(r"/{2,}")


def _fail(problem: str, token: _Token, step: str | None, *, at_value: bool = True) -> InstructionError:
    column = token.value_column if at_value else token.column
    return InstructionError(problem, line=token.line, column=column, step=step)


def _float(token: _Token, step: str, what: str) -> float:
    if not _NUMBER.fullmatch(token.text):
        raise _fail(f"expected a number for {what}, got {token.text!r}", token, step)
    value = float(token.text)
    if not math.isfinite(value):
        raise _fail(f"{what} is out of range, got {token.text!r}", token, step)
    return value


def _ranged(token: _Token, step: str, what: str, low: float, high: float, *, open_low: bool = False) -> float:
    value = _float(token, step, what)
    if value < low or value > high or (open_low and value == low):
        bound = (
            f"greater than {_num(low)} and at most {_num(high)}"
            if open_low
            else (f"from {_num(low)} to {_num(high)}")
        )
        raise _fail(f"{what} must be {bound}, got {token.text!r}", token, step)
    return value


def _integer(token: _Token, step: str, what: str, low: int, high: int) -> int:
    if not _INTEGER.fullmatch(token.text):
        raise _fail(f"expected a whole number for {what}, got {token.text!r}", token, step)
    # Long digit strings are out of range anyway; int() of thousands of digits raises.
    digits = token.text.lstrip("+-").lstrip("0")
    value = int(token.text) if len(digits) <= 18 else high + 1
    if not low <= value <= high:
        raise _fail(f"{what} must be from {low} to {high}, got {token.text!r}", token, step)
    return value


def _side(text: str, token: _Token, step: str, what: str) -> int | None:
    if not text:
        return None
    digits = text.lstrip("0")
    value = int(digits or "0") if len(digits) <= 6 else MAX_SIDE + 1
    if not 1 <= value <= MAX_SIDE:
        raise _fail(f"{what} must be from 1 to {MAX_SIDE} pixels, got {token.text!r}", token, step)
    return value


@overload
def _size(token: _Token, step: str, *, both: Literal[True]) -> tuple[int, int]: ...


@overload
def _size(token: _Token, step: str, *, both: bool) -> tuple[int | None, int | None]: ...


def _size(token: _Token, step: str, *, both: bool) -> tuple[int | None, int | None]:
    match = _SIZE.fullmatch(token.text)
    if not match or not (match.group(1) or match.group(2)):
        like = "400x300" if both else "400x300, 400x or x300"
        raise _fail(f"expected a size like {like}, got {token.text!r}", token, step)
    width = _side(match.group(1), token, step, "width")
    height = _side(match.group(2), token, step, "height")
    if both and (width is None or height is None):
        raise _fail(f"expected both sides of the size, like 400x300, got {token.text!r}", token, step)
    return width, height


def _color(token: _Token, step: str) -> str:
    match = _COLOR.fullmatch(token.text)
    if not match:
        raise _fail(f"expected a colour like #rrggbb or #rgb, got {token.text!r}", token, step)
    digits = match.group(1).lower()
    if len(digits) == 3:
        digits = "".join(digit * 2 for digit in digits)
    return "#" + digits


def _num(value: float) -> str:
    """The shortest text that reads back as ``value``: ``2.5``, ``90``, never ``1e-07``."""
    if value == int(value):
        return str(int(value))
    text = repr(value)
    if "e" in text:
        text = format(decimal.Decimal(text), "f")
    return text


def _quote(text: str) -> str:
    if text and not _NEEDS_QUOTES.search(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def canonical_source(reference: str) -> str:
    """``reference`` tidied without looking anything up.

    Surrounding whitespace goes; for paths (not ``scheme://`` URLs) repeated slashes
    collapse and a leading ``./`` is dropped, after an optional ``root:`` prefix.
    """
    # Each tidying step can expose work for another ("./ a.jpg" loses "./", then a space),
    # and the canonical form must be a fixed point, so tidy until nothing changes.
    while True:
        tidied = _tidy_source(reference)
        if tidied == reference:
            return tidied
        reference = tidied


def _tidy_source(reference: str) -> str:
    reference = reference.strip()
    if _URL.match(reference):
        return reference
    prefix_match = _ROOT_PREFIX.match(reference)
    prefix = prefix_match.group() if prefix_match else ""
    path = _SLASHES.sub("/", reference[len(prefix) :])
    while path.startswith("./"):
        path = path[2:]
    return prefix + path


# --------------------------------------------------------------------------- steps


@dataclasses.dataclass(frozen=True)
class _Spec:
    usage: str
    least: int
    most: int
    keys: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()  # also the fixed order flags have in the canonical text


class _Args(NamedTuple):
    positional: list[_Token]
    keys: dict[str, _Token]
    flags: dict[str, _Token]
    head: _Token  # the step's word, where an error about the whole step points


def _split(step: str, head: _Token, tokens: list[_Token], spec: _Spec) -> _Args:
    positional: list[_Token] = []
    keys: dict[str, _Token] = {}
    flags: dict[str, _Token] = {}
    for token in tokens:
        if token.key is not None:
            key = token.key.lower()
            if key in spec.flags:
                raise _fail(
                    f"{key!r} is a flag and takes no value: write just {key}", token, step, at_value=False
                )
            if key not in spec.keys:
                expected = (
                    "; expected one of: " + ", ".join(spec.keys) if spec.keys else "; it takes no key=value"
                )
                raise _fail(f"unknown key {key!r} for step {step!r}{expected}", token, step, at_value=False)
            if key in keys:
                raise _fail(f"duplicate key {key!r}: give it once", token, step, at_value=False)
            keys[key] = token
            continue
        word = token.text.lower() if not token.quoted else None
        if word in spec.flags:
            if word in flags:
                raise _fail(f"duplicate flag {word!r}: give it once", token, step)
            flags[word] = token
        elif word in spec.keys:
            raise _fail(f"expected {word}=<value>, got the bare word {token.text!r}", token, step)
        else:
            positional.append(token)
    if len(positional) > spec.most:
        extra = positional[spec.most]
        raise _fail(
            f"too many arguments: expected {spec.usage}, got {len(positional)} instead of {spec.most}",
            extra,
            step,
            at_value=False,
        )
    if len(positional) < spec.least:
        raise _fail(f"too few arguments: expected {spec.usage}", head, step, at_value=False)
    return _Args(positional, keys, flags, head)


# 'south-east' as well as the built-in 'southeast': sites and plugins write both, and
# both must give one checksum, so each spelling maps to the built-in one.
_GRAVITY_SPELLINGS = {
    **{name: name for name in GRAVITY_NAMES},
    **{f"{name[:5]}-{name[5:]}": name for name in GRAVITY_NAMES if name[5:] in ("east", "west")},
}


def _gravity(token: _Token, step: str, names: tuple[str, ...], what: str = "gravity") -> str:
    found = _GRAVITY_SPELLINGS.get(token.text.lower())
    if found is None or found not in names:
        raise _fail(f"expected {what} to be one of {', '.join(names)}, got {token.text!r}", token, step)
    return found


def _build_fit(step: str, args: _Args) -> Operation:
    return Fit(*_size(args.positional[0], step, both=False))


def _build_fill(step: str, args: _Args) -> Operation:
    width, height = _size(args.positional[0], step, both=True)
    gravity, focus = "center", None
    if "gravity" in args.keys and "focus" in args.keys:
        raise _fail("give either gravity= or focus=, not both", args.keys["focus"], step, at_value=False)
    if "gravity" in args.keys:
        gravity = _gravity(args.keys["gravity"], step, GRAVITY_NAMES)
    if "focus" in args.keys:
        token = args.keys["focus"]
        parts = token.text.split(",")
        if len(parts) != 2:
            raise _fail(
                f"expected a focus like 0.5,0.3 (fractions of width and height), got {token.text!r}",
                token,
                step,
            )
        x, y = (_ranged(token._replace(text=part), step, "focus", 0, 1) for part in parts)
        focus = (x, y)
    return Fill(width, height, gravity=gravity, focus=focus)


def _build_pad(step: str, args: _Args) -> Operation:
    width, height = _size(args.positional[0], step, both=True)
    color = _color(args.keys["color"], step) if "color" in args.keys else None
    return Pad(width, height, color=color)


def _build_resize(step: str, args: _Args) -> Operation:
    return Resize(*_size(args.positional[0], step, both=True))


def _build_crop(step: str, args: _Args) -> Operation:
    token = args.positional[0]
    parts = token.text.split(",")
    if len(parts) != 4:
        raise _fail(
            f"expected a crop like X,Y,W,H in pixels or percent (10%,10%,80%,80%), got {token.text!r}",
            token,
            step,
        )
    percent = [part.endswith("%") for part in parts]
    if any(percent) and not all(percent):
        raise _fail(
            f"expected all four of X,Y,W,H in pixels or all in percent, got {token.text!r}", token, step
        )
    if percent[0]:
        values = [
            _ranged(token._replace(text=part[:-1]), step, "a crop percentage", 0, 100) for part in parts
        ]
    else:
        values = [_float(token._replace(text=part), step, "a crop coordinate") for part in parts]
        if values[0] < 0 or values[1] < 0:
            raise _fail(f"crop X and Y must not be negative, got {token.text!r}", token, step)
    if values[2] <= 0 or values[3] <= 0:
        raise _fail(f"crop width and height must be greater than 0, got {token.text!r}", token, step)
    x, y, width, height = values
    return Crop(x, y, width, height, percent=percent[0])


def _build_rotate(step: str, args: _Args) -> Operation:
    token = args.positional[0]
    if not _NUMBER.fullmatch(token.text):
        raise _fail(
            f"expected a number of degrees for rotate, like 90 or -12.5, got {token.text!r}", token, step
        )
    # Exact decimal arithmetic so that 360.1 is 0.1, not 0.10000000000002274; the
    # precision grows with the input so that huge angles stay exact too.
    context = decimal.Context(prec=max(28, len(token.text) + 2))
    angle = context.remainder(decimal.Decimal(token.text), decimal.Decimal(360))
    if angle < 0:
        angle = context.add(angle, decimal.Decimal(360))
    degrees = float(angle)
    color = _color(args.keys["color"], step) if "color" in args.keys else None
    return Rotate(0.0 if degrees >= 360 else degrees + 0.0, color=color)


def _build_flip(step: str, args: _Args) -> Operation:
    token = args.positional[0]
    direction = token.text.lower()
    if direction not in ("horizontal", "vertical"):
        raise _fail(f"expected horizontal or vertical, got {token.text!r}", token, step)
    return Flip(direction)


def _build_blur(step: str, args: _Args) -> Operation:
    return Blur(_ranged(args.positional[0], step, "the blur radius", 0, 100, open_low=True))


def _build_sharpen(step: str, args: _Args) -> Operation:
    if not args.positional:
        return Sharpen()
    return Sharpen(_ranged(args.positional[0], step, "the sharpen amount", 0, 10, open_low=True))


def _build_background(step: str, args: _Args) -> Operation:
    return Background(_color(args.positional[0], step))


def _build_page(step: str, args: _Args) -> Operation:
    return Page(_integer(args.positional[0], step, "the page number", 1, MAX_PAGE))


def _build_frame(step: str, args: _Args) -> Operation:
    token = args.positional[0]
    text = token.text
    if match := _PERCENT.fullmatch(text):
        percent = _ranged(token._replace(text=match.group(1)), step, "the frame percentage", 0, 100)
        return Frame(percent=percent)
    if _SECONDS.fullmatch(text):
        return Frame(seconds=_float(token._replace(text=text.rstrip("sS")), step, "the frame time"))
    if (match := _CLOCK.fullmatch(text)) and len(text) <= 64:
        hours, minutes, seconds = match.groups()
        if decimal.Decimal(seconds) >= 60 or (hours is not None and int(minutes) >= 60):
            raise _fail(f"expected minutes and seconds below 60 in the frame time, got {text!r}", token, step)
        total = decimal.Decimal(seconds) + 60 * int(minutes) + 3600 * int(hours or 0)
        value = float(total)
        if not math.isfinite(value):
            raise _fail(f"the frame time is out of range, got {text!r}", token, step)
        return Frame(seconds=value)
    raise _fail(f"expected a frame time like 2.5, 2.5s, 00:01:02.5, 01:02 or 10%, got {text!r}", token, step)


def _build_format(step: str, args: _Args) -> Operation:
    token = args.positional[0]
    name = token.text.lower()
    name = "jpeg" if name == "jpg" else name
    if name not in OUTPUT_FORMATS:
        raise _fail(f"expected a format, one of {', '.join(OUTPUT_FORMATS)}, got {token.text!r}", token, step)
    quality = None
    if "quality" in args.keys:
        quality = _integer(args.keys["quality"], step, "quality", 1, 100)
    allowed = {"lossless": ("webp", "avif"), "progressive": ("jpeg",)}
    for flag, flag_token in args.flags.items():
        if name not in allowed[flag]:
            raise _fail(
                f"{flag!r} is only valid for {' or '.join(allowed[flag])}, not {name}", flag_token, step
            )
    return Format(name, quality, lossless="lossless" in args.flags, progressive="progressive" in args.flags)


def _build_quality(step: str, args: _Args) -> Operation:
    return Quality(_integer(args.positional[0], step, "quality", 1, 100))


class Arguments:
    """A plugin step's arguments, split as built-in steps' are, for its ``parse``.

    ``positional`` holds the values in order, ``keys`` the ``key=value`` values by
    lowercase key, ``flags`` the flags given. The readers below take a position (an index
    into ``positional``) or a key and read the value as built-in steps do; a bad value
    raises an :class:`InstructionError` naming the step, line and column, as
    :meth:`fail` does for a plugin's own checks.
    """

    def __init__(self, step: str, args: _Args):
        self._step = step
        self._head = args.head
        self._tokens = args
        self.positional: tuple[str, ...] = tuple(token.text for token in args.positional)
        self.keys: Mapping[str, str] = MappingProxyType({key: token.text for key, token in args.keys.items()})
        self.flags: frozenset[str] = frozenset(args.flags)

    def _token(self, at: int | str) -> _Token:
        return self._tokens.positional[at] if isinstance(at, int) else self._tokens.keys[at]

    def fail(self, problem: str, at: int | str | None = None) -> InstructionError:
        """The error to raise for ``problem`` in the value at ``at`` (the step's word
        when None)."""
        if at is None:
            return _fail(problem, self._head, self._step, at_value=False)
        return _fail(problem, self._token(at), self._step)

    def text(self, at: int | str, default: str | None = None) -> str | None:
        """The value as written (quotes removed); ``default`` when the key is absent."""
        return self._token(at).text if isinstance(at, int) or at in self.keys else default

    def number(
        self,
        at: int | str,
        what: str,
        low: float,
        high: float,
        *,
        default: float | None = None,
        above_low: bool = False,
    ):
        """A number from ``low`` (greater than it with ``above_low``) to ``high``;
        ``default`` when the key is absent."""
        if isinstance(at, str) and at not in self.keys:
            return default
        return _ranged(self._token(at), self._step, what, low, high, open_low=above_low) + 0.0

    def integer(self, at: int | str, what: str, low: int, high: int, *, default: int | None = None):
        """A whole number from ``low`` to ``high``; ``default`` when the key is absent."""
        if isinstance(at, str) and at not in self.keys:
            return default
        return _integer(self._token(at), self._step, what, low, high)

    def choice(self, at: int | str, what: str, choices: Mapping[str, str], *, default: str | None = None):
        """The canonical name of one of ``choices`` (spelling, case-insensitive: canonical
        name); ``default`` when the key is absent."""
        if isinstance(at, str) and at not in self.keys:
            return default
        token = self._token(at)
        found = choices.get(token.text.lower())
        if found is None:
            names = ", ".join(dict.fromkeys(choices.values()))
            raise _fail(f"expected {what} to be one of {names}, got {token.text!r}", token, self._step)
        return found

    def color(self, at: int | str, *, default: str | None = None) -> str | None:
        """A colour as ``#rrggbb``; ``default`` when the key is absent."""
        if isinstance(at, str) and at not in self.keys:
            return default
        return _color(self._token(at), self._step)

    def size(self, at: int | str, *, both: bool = False) -> tuple[int | None, int | None]:
        """A size like ``400x300`` (also ``400x`` or ``x300`` unless ``both``)."""
        return _size(self._token(at), self._step, both=both)

    def gravity(self, at: int | str, what: str = "position", *, default: str | None = None) -> str | None:
        """One of the built-in gravities (:data:`~.operations.GRAVITIES`: ``center``,
        ``north`` ... ``southeast``), also written ``south-east``, as its built-in name;
        ``default`` when the key is absent. ``GRAVITIES[name]`` is where it puts a thing,
        as fractions of the room around it."""
        if isinstance(at, str) and at not in self.keys:
            return default
        return _gravity(self._token(at), self._step, tuple(GRAVITIES), what)


@functools.lru_cache(maxsize=256)  # plugins are read once per process; so is each word's spec
def _plugin_entry(word: str) -> tuple[_Spec, _Builder] | None:
    """The spec and builder of a plugin's step ``word``, or None: the first unknown word
    of a process reads the installed plugins (:mod:`fileproc_wsgi.plugins`)."""
    plugin = plugins.find_operation(word)
    if plugin is None:
        return None
    kind: type[PluginOperation] = plugin.target
    spec = _Spec(kind.usage, kind.least, kind.most, keys=kind.keys, flags=kind.flags)

    def build(step: str, args: _Args) -> Operation:
        made = kind.parse(Arguments(step, args))
        if not isinstance(made, kind):
            raise TypeError(f"{kind.__name__}.parse gave {type(made).__name__}, not a {kind.__name__}")
        return made

    return spec, build


def _entry(word: str) -> tuple[_Spec, _Builder] | None:
    return _STEPS.get(word) or _plugin_entry(word)


def is_operation(word: str) -> bool:
    """Whether ``word`` (any case) is a step: a built-in one, or an installed plugin's."""
    word = word.lower()
    return word in OPERATION_WORDS or (word != "source" and _plugin_entry(word) is not None)


def _unknown(written: str) -> str:
    """What an unknown step's error says: the built-in words and the installed plugins'."""
    problem = f"unknown operation {written!r}; expected one of: {_KNOWN}"
    installed = sorted(plugins.operations())
    if installed:
        problem += f"; or of the installed plugins: {', '.join(installed)}"
    failed = plugins.find_problem(written.lower())
    if failed is not None:
        problem += f"; {failed}"
    return problem


_Builder = Callable[[str, _Args], Operation]
_SOURCE_SPEC = _Spec("source <ref>", 1, 1)
_STEPS: dict[str, tuple[_Spec, _Builder]] = {
    "fit": (_Spec("fit WxH, fit Wx or fit xH", 1, 1), _build_fit),
    "fill": (_Spec("fill WxH [gravity=G] [focus=X,Y]", 1, 1, keys=("focus", "gravity")), _build_fill),
    "pad": (_Spec("pad WxH [color=#rrggbb]", 1, 1, keys=("color",)), _build_pad),
    "resize": (_Spec("resize WxH", 1, 1), _build_resize),
    "crop": (_Spec("crop X,Y,W,H", 1, 1), _build_crop),
    "upscale": (_Spec("upscale", 0, 0), lambda step, args: Upscale()),
    "rotate": (_Spec("rotate DEG [color=#rrggbb]", 1, 1, keys=("color",)), _build_rotate),
    "flip": (_Spec("flip horizontal or flip vertical", 1, 1), _build_flip),
    "grayscale": (_Spec("grayscale", 0, 0), lambda step, args: Grayscale()),
    "blur": (_Spec("blur RADIUS", 1, 1), _build_blur),
    "sharpen": (_Spec("sharpen [AMOUNT]", 0, 1), _build_sharpen),
    "background": (_Spec("background #rrggbb", 1, 1), _build_background),
    "page": (_Spec("page N", 1, 1), _build_page),
    "frame": (_Spec("frame T", 1, 1), _build_frame),
    "format": (
        _Spec(
            "format NAME [quality=Q] [lossless] [progressive]",
            1,
            1,
            keys=("quality",),
            flags=("lossless", "progressive"),
        ),
        _build_format,
    ),
    "quality": (_Spec("quality Q", 1, 1), _build_quality),
}

OPERATION_WORDS = frozenset(_STEPS)
"""Every built-in step word except ``source`` (plugins add more: :func:`is_operation`)."""
BUILTIN_WORDS = OPERATION_WORDS | {"source"}
"""The words no plugin may take."""

_KNOWN = ", ".join(sorted(OPERATION_WORDS))


def _step_text(operation: Operation) -> str:
    """The canonical text of one step; parsing it gives back an equal operation."""
    if isinstance(operation, (Fit, Fill, Pad, Resize)):
        text = f"{operation.word} {operation.width or ''}x{operation.height or ''}"
        if isinstance(operation, Fill):
            if operation.focus is not None:
                text += f" focus={_num(operation.focus[0])},{_num(operation.focus[1])}"
            elif operation.gravity != "center":
                text += f" gravity={operation.gravity}"
        elif isinstance(operation, Pad) and operation.color is not None:
            text += f" color={operation.color}"
        return text
    if isinstance(operation, Crop):
        unit = "%" if operation.percent else ""
        values = (operation.x, operation.y, operation.width, operation.height)
        return "crop " + ",".join(_num(value) + unit for value in values)
    if isinstance(operation, Rotate):
        color = f" color={operation.color}" if operation.color is not None else ""
        return f"rotate {_num(operation.degrees)}{color}"
    if isinstance(operation, Flip):
        return f"flip {operation.direction}"
    if isinstance(operation, Blur):
        return f"blur {_num(operation.radius)}"
    if isinstance(operation, Sharpen):
        return "sharpen" if operation.amount == 1 else f"sharpen {_num(operation.amount)}"
    if isinstance(operation, Background):
        return f"background {operation.color}"
    if isinstance(operation, Page):
        return f"page {operation.number}"
    if isinstance(operation, Frame):
        if operation.percent is not None:
            return f"frame {_num(operation.percent)}%"
        return f"frame {_num(operation.seconds or 0.0)}"
    if isinstance(operation, Format):
        text = f"format {operation.name}"
        text += " lossless" if operation.lossless else ""
        text += " progressive" if operation.progressive else ""
        return text + (f" quality={operation.quality}" if operation.quality is not None else "")
    if isinstance(operation, Quality):
        return f"quality {operation.value}"
    if isinstance(operation, PluginOperation):
        return _plugin_step_text(operation)
    return operation.word


def _plugin_step_text(operation: PluginOperation) -> str:
    parts = [operation.word]
    for argument in operation.canonical_arguments():
        if isinstance(argument, tuple):
            key, value = argument
            parts.append(f"{key}={_quote(str(value))}")
        else:
            parts.append(_quote(str(argument)))
    return " ".join(parts)


def _times(side: int | None, density: float) -> int | None:
    # Half up, not Python's half to even: 1.5 x 333 is 500 whatever the parity.
    return None if side is None else max(1, math.floor(side * density + 0.5))


# --------------------------------------------------------------------------- public


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
        return "\n".join([f"source {_quote(self.source)}", *map(_step_text, self.steps)])

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


def _source_token(text: str, tokens: list[_Token]) -> _Token:
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
            raise _fail(
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


def _read_as_steps(tokens: list[_Token]) -> bool:
    """Whether ``tokens`` are one or more whole, valid steps (each starting with its word)."""
    if not _is_step(tokens[0]):
        return False
    starts = [index for index, token in enumerate(tokens) if _is_step(token)]
    for start, stop in zip(starts, [*starts[1:], len(tokens)], strict=True):
        word = tokens[start].text.lower()
        entry = _entry(word)
        assert entry is not None  # _is_step saw a step's word
        spec, build = entry
        try:
            build(word, _split(word, tokens[start], tokens[start + 1 : stop], spec))
        except InstructionError:
            return False
    return True


def _is_step(token: _Token) -> bool:
    return token.key is None and not token.quoted and is_operation(token.text)


def parse(text: str) -> Instructions:
    """The :class:`Instructions` that ``text`` describes.

    Raises :class:`InstructionError` (a ``ValueError``) naming the step, line and column
    of the first problem and saying what was expected and what was found.
    """
    steps = _lex(text)
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
                raise _fail("source must be the first step", later[0], "source")
        raise _fail(
            f"expected a source first (source <ref>, or just <ref>), got the operation {word!r}; "
            "to make the source optional, pass it as source= on the tag and keep only operations "
            "in the body",
            head,
            word,
        )
    named = first[1:] if word == "source" else first
    if not named:
        _split("source", head, named, _SOURCE_SPEC)  # raises: too few arguments
    token = _source_token(text, named)
    source = canonical_source(token.text)
    if not source:
        raise _fail(f"expected a source reference like photos/a.jpg, got {token.text!r}", token, "source")

    operations = []
    for tokens in rest:
        head = tokens[0]
        written = head.text if head.key is None else f"{head.key}={head.text}"
        word = written.lower()
        if word == "source":
            raise _fail("source given twice: give one source, as the first step", head, "source")
        entry = _STEPS.get(word) or _plugin_entry(word)
        if entry is None:
            raise _fail(_unknown(written), head, written, at_value=False)
        spec, build = entry
        operations.append(build(word, _split(word, head, tokens[1:], spec)))
    return Instructions(source, tuple(operations))


def source_step(reference: str) -> str:
    """The step ``source <reference>``, quoted so that any name reads back as it is
    (tidied by :func:`canonical_source` only). Raises InstructionError for a name with a
    line break, which no step can hold."""
    if "\n" in reference:
        raise InstructionError(
            f"source {reference!r} has a line break, which a source reference cannot hold", line=1, column=1
        )
    return f"source {_quote(reference)}"


def has_empty_source(text: str) -> bool:
    """Whether the source step of ``text`` is there but names nothing: ``source`` without
    a name, or nothing before the first ``|`` of the first line with steps (as a template
    leaves ``{{ photo }} | fit 80x`` when it prints no photo). A first line holding only
    operations is not counted: a source on a line of its own that printed nothing cannot
    be told from one forgotten. Raises InstructionError where the text cannot be split
    into words."""
    for _, line in _step_lines(text):
        if line.lstrip()[0] == "|":
            return True
        break
    steps = _lex(text)
    return bool(steps) and len(steps[0]) == 1 and _is_word(steps[0][0], ("source",))


def leading_word(text: str) -> tuple[str, int, int] | None:
    """The first word of ``text`` as written, with its line and column; None when the
    text has no step. Raises InstructionError where the text cannot be split into words."""
    steps = _lex(text)
    if not steps:
        return None
    head = steps[0][0]
    return text.split("\n")[head.line - 1][head.column - 1 : head.end], head.line, head.column


def checksum(
    canonical: str, source_version: str, *, processing_version: str = PROCESSING_VERSION, plugins: str = ""
) -> str:
    """The first 32 hex digits of a SHA-256 over the salt, the source version and the text.

    The source version is length-prefixed, so no pair of (version, text) can run into
    another pair's bytes. ``plugins`` (:attr:`Instructions.plugins`), when not empty,
    is part of the salt, also length-prefixed.
    """
    version = source_version.encode("utf-8", "surrogatepass")
    import hashlib  # here, not at the top: OpenSSL costs a worker ~4 MiB it rarely needs

    digest = hashlib.sha256()
    digest.update(f"fileproc-wsgi processing v{processing_version}\n".encode("utf-8", "surrogatepass"))
    if plugins:
        salt = plugins.encode("utf-8", "surrogatepass")
        digest.update(b"plugins %d:" % len(salt) + salt + b"\n")
    digest.update(b"%d:" % len(version) + version + b"\n")
    digest.update(canonical.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:CHECKSUM_LENGTH]


_CHECKSUM = re.compile(f"[0-9a-f]{{{CHECKSUM_LENGTH}}}")


def is_checksum(text: str) -> bool:
    """Whether ``text`` is exactly a checksum's shape: 32 lowercase hex digits."""
    return isinstance(text, str) and _CHECKSUM.fullmatch(text) is not None
