"""Reading argument values: numbers, whole numbers, sizes, colours and gravities.

Each ``read_*`` function takes the :class:`~.lexer.Token` holding the value, the step it
belongs to and what the value is for, and gives the value in its one canonical spelling
(``#rgb`` becomes ``#rrggbb``, ``south-east`` becomes ``southeast``), or raises an
:class:`~fileproc_wsgi.errors.InstructionError` pointing at it that says what was
expected. Built-in steps (:mod:`.steps`) and plugins' steps (:class:`.Arguments`) read
their values with them; :func:`num` writes a number back for the canonical text.
"""

from __future__ import annotations

import decimal
import math
import re
from typing import Literal, overload

from ..operations import GRAVITY_NAMES
from .lexer import Token, fail

MAX_SIDE = 16384
MAX_PAGE = 1_000_000

NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_SIZE = re.compile(r"([0-9]*)[xX]([0-9]*)")
_COLOR = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
SECONDS = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)[sS]?")
CLOCK = re.compile(r"(?:([0-9]+):)?([0-9]+):([0-9]+(?:\.[0-9]*)?)")
PERCENT = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)%")


def read_float(token: Token, step: str, what: str) -> float:
    if not NUMBER.fullmatch(token.text):
        raise fail(f"expected a number for {what}, got {token.text!r}", token, step)
    value = float(token.text)
    if not math.isfinite(value):
        raise fail(f"{what} is out of range, got {token.text!r}", token, step)
    return value


def read_ranged(
    token: Token, step: str, what: str, low: float, high: float, *, open_low: bool = False
) -> float:
    value = read_float(token, step, what)
    if value < low or value > high or (open_low and value == low):
        bound = (
            f"greater than {num(low)} and at most {num(high)}"
            if open_low
            else (f"from {num(low)} to {num(high)}")
        )
        raise fail(f"{what} must be {bound}, got {token.text!r}", token, step)
    return value


def read_integer(token: Token, step: str, what: str, low: int, high: int) -> int:
    if not _INTEGER.fullmatch(token.text):
        raise fail(f"expected a whole number for {what}, got {token.text!r}", token, step)
    # Long digit strings are out of range anyway; int() of thousands of digits raises.
    digits = token.text.lstrip("+-").lstrip("0")
    value = int(token.text) if len(digits) <= 18 else high + 1
    if not low <= value <= high:
        raise fail(f"{what} must be from {low} to {high}, got {token.text!r}", token, step)
    return value


def _side(text: str, token: Token, step: str, what: str) -> int | None:
    if not text:
        return None
    digits = text.lstrip("0")
    value = int(digits or "0") if len(digits) <= 6 else MAX_SIDE + 1
    if not 1 <= value <= MAX_SIDE:
        raise fail(f"{what} must be from 1 to {MAX_SIDE} pixels, got {token.text!r}", token, step)
    return value


@overload
def read_size(token: Token, step: str, *, both: Literal[True]) -> tuple[int, int]: ...


@overload
def read_size(token: Token, step: str, *, both: bool) -> tuple[int | None, int | None]: ...


def read_size(token: Token, step: str, *, both: bool) -> tuple[int | None, int | None]:
    match = _SIZE.fullmatch(token.text)
    if not match or not (match.group(1) or match.group(2)):
        like = "400x300" if both else "400x300, 400x or x300"
        raise fail(f"expected a size like {like}, got {token.text!r}", token, step)
    width = _side(match.group(1), token, step, "width")
    height = _side(match.group(2), token, step, "height")
    if both and (width is None or height is None):
        raise fail(f"expected both sides of the size, like 400x300, got {token.text!r}", token, step)
    return width, height


def read_color(token: Token, step: str) -> str:
    match = _COLOR.fullmatch(token.text)
    if not match:
        raise fail(f"expected a colour like #rrggbb or #rgb, got {token.text!r}", token, step)
    digits = match.group(1).lower()
    if len(digits) == 3:
        digits = "".join(digit * 2 for digit in digits)
    return "#" + digits


def num(value: float) -> str:
    """The shortest text that reads back as ``value``: ``2.5``, ``90``, never ``1e-07``."""
    if value == int(value):
        return str(int(value))
    text = repr(value)
    if "e" in text:
        text = format(decimal.Decimal(text), "f")
    return text


# 'south-east' as well as the built-in 'southeast': sites and plugins write both, and
# both must give one checksum, so each spelling maps to the built-in one.
_GRAVITY_SPELLINGS = {
    **{name: name for name in GRAVITY_NAMES},
    **{f"{name[:5]}-{name[5:]}": name for name in GRAVITY_NAMES if name[5:] in ("east", "west")},
}


def read_gravity(token: Token, step: str, names: tuple[str, ...], what: str = "gravity") -> str:
    found = _GRAVITY_SPELLINGS.get(token.text.lower())
    if found is None or found not in names:
        raise fail(f"expected {what} to be one of {', '.join(names)}, got {token.text!r}", token, step)
    return found
