"""A step's arguments: what each step takes, splitting its tokens, and plugins' readers.

:func:`split` sorts the tokens after a step's word into positional values, ``key=value``
arguments and flags, as the step's :class:`Spec` allows, for the step's builder
(:mod:`.steps`). A plugin's step receives them as :class:`Arguments`, whose readers are
the built-in steps' own (:mod:`.values`), so that its errors read like theirs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from ..errors import InstructionError
from ..operations import GRAVITIES
from .lexer import Token, fail
from .values import read_color, read_gravity, read_integer, read_ranged, read_size


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a step takes: its usage (for errors), how many positional values, which keys and flags."""

    usage: str
    least: int
    most: int
    keys: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()  # also the fixed order flags have in the canonical text


class Args(NamedTuple):
    """A step's tokens as :func:`split` sorts them."""

    positional: list[Token]
    keys: dict[str, Token]
    flags: dict[str, Token]
    head: Token  # the step's word, where an error about the whole step points


def split(step: str, head: Token, tokens: list[Token], spec: Spec) -> Args:
    """The tokens after a step's word (``head``) sorted into values, keys and flags as
    ``spec`` allows, or an InstructionError for one it does not take or too few or many."""
    positional: list[Token] = []
    keys: dict[str, Token] = {}
    flags: dict[str, Token] = {}
    for token in tokens:
        if token.key is not None:
            key = token.key.lower()
            if key in spec.flags:
                raise fail(
                    f"{key!r} is a flag and takes no value: write just {key}", token, step, at_value=False
                )
            if key not in spec.keys:
                expected = (
                    "; expected one of: " + ", ".join(spec.keys) if spec.keys else "; it takes no key=value"
                )
                raise fail(f"unknown key {key!r} for step {step!r}{expected}", token, step, at_value=False)
            if key in keys:
                raise fail(f"duplicate key {key!r}: give it once", token, step, at_value=False)
            keys[key] = token
            continue
        word = token.text.lower() if not token.quoted else None
        if word in spec.flags:
            if word in flags:
                raise fail(f"duplicate flag {word!r}: give it once", token, step)
            flags[word] = token
        elif word in spec.keys:
            raise fail(f"expected {word}=<value>, got the bare word {token.text!r}", token, step)
        else:
            positional.append(token)
    if len(positional) > spec.most:
        extra = positional[spec.most]
        raise fail(
            f"too many arguments: expected {spec.usage}, got {len(positional)} instead of {spec.most}",
            extra,
            step,
            at_value=False,
        )
    if len(positional) < spec.least:
        raise fail(f"too few arguments: expected {spec.usage}", head, step, at_value=False)
    return Args(positional, keys, flags, head)


class Arguments:
    """A plugin step's arguments, split as built-in steps' are, for its ``parse``.

    ``positional`` holds the values in order, ``keys`` the ``key=value`` values by
    lowercase key, ``flags`` the flags given. The readers below take a position (an index
    into ``positional``) or a key and read the value as built-in steps do; a bad value
    raises an :class:`InstructionError` naming the step, line and column, as
    :meth:`fail` does for a plugin's own checks.
    """

    def __init__(self, step: str, args: Args):
        self._step = step
        self._head = args.head
        self._tokens = args
        self.positional: tuple[str, ...] = tuple(token.text for token in args.positional)
        self.keys: Mapping[str, str] = MappingProxyType({key: token.text for key, token in args.keys.items()})
        self.flags: frozenset[str] = frozenset(args.flags)

    def _token(self, at: int | str) -> Token:
        return self._tokens.positional[at] if isinstance(at, int) else self._tokens.keys[at]

    def fail(self, problem: str, at: int | str | None = None) -> InstructionError:
        """The error to raise for ``problem`` in the value at ``at`` (the step's word
        when None)."""
        if at is None:
            return fail(problem, self._head, self._step, at_value=False)
        return fail(problem, self._token(at), self._step)

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
        return read_ranged(self._token(at), self._step, what, low, high, open_low=above_low) + 0.0

    def integer(self, at: int | str, what: str, low: int, high: int, *, default: int | None = None):
        """A whole number from ``low`` to ``high``; ``default`` when the key is absent."""
        if isinstance(at, str) and at not in self.keys:
            return default
        return read_integer(self._token(at), self._step, what, low, high)

    def choice(self, at: int | str, what: str, choices: Mapping[str, str], *, default: str | None = None):
        """The canonical name of one of ``choices`` (spelling, case-insensitive: canonical
        name); ``default`` when the key is absent."""
        if isinstance(at, str) and at not in self.keys:
            return default
        token = self._token(at)
        found = choices.get(token.text.lower())
        if found is None:
            names = ", ".join(dict.fromkeys(choices.values()))
            raise fail(f"expected {what} to be one of {names}, got {token.text!r}", token, self._step)
        return found

    def color(self, at: int | str, *, default: str | None = None) -> str | None:
        """A colour as ``#rrggbb``; ``default`` when the key is absent."""
        if isinstance(at, str) and at not in self.keys:
            return default
        return read_color(self._token(at), self._step)

    def size(self, at: int | str, *, both: bool = False) -> tuple[int | None, int | None]:
        """A size like ``400x300`` (also ``400x`` or ``x300`` unless ``both``)."""
        return read_size(self._token(at), self._step, both=both)

    def gravity(self, at: int | str, what: str = "position", *, default: str | None = None) -> str | None:
        """One of the built-in gravities (:data:`~.operations.GRAVITIES`: ``center``,
        ``north`` ... ``southeast``), also written ``south-east``, as its built-in name;
        ``default`` when the key is absent. ``GRAVITIES[name]`` is where it puts a thing,
        as fractions of the room around it."""
        if isinstance(at, str) and at not in self.keys:
            return default
        return read_gravity(self._token(at), self._step, tuple(GRAVITIES), what)
