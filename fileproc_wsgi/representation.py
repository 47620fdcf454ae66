"""What a registration returns: the result's URL, predicted size and ready-made HTML."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from html import escape
from typing import Protocol

_ATTRIBUTE_NAME = re.compile(r"^[A-Za-z_:][-A-Za-z0-9_:.]*$")


class HTML(str):
    """Markup that is already escaped: Django and Jinja2 print it as it is, even under
    autoescape, because it has ``__html__`` (the convention both, and MarkupSafe, follow)."""

    __slots__ = ()

    def __html__(self) -> str:
        return self


@dataclasses.dataclass(frozen=True)
class Representation:
    """A registered result. ``width``/``height`` are None when they cannot be predicted.

    ``html`` is an ``<img>`` tag with every attribute escaped; ``render(alt=..., class_=...)``
    adds or overrides attributes (a trailing ``_`` is dropped, so ``class_`` is ``class``).
    The object is ``__html__``-aware, so Django and Jinja2 print it without escaping it again.
    """

    checksum: str
    url: str
    width: int | None
    height: int | None
    content_type: str

    @functools.cached_property
    def html(self) -> HTML:
        return self.render()

    def render(self, attributes: Mapping[str, object] | None = None, **more: object) -> HTML:
        values: dict[str, object] = {
            "src": self.url,
            "width": self.width,
            "height": self.height,
            "alt": "",
            "loading": "lazy",
            "decoding": "async",
        }
        for name, value in {**(attributes or {}), **more}.items():
            name = name[:-1] if name.endswith("_") else name
            if not _ATTRIBUTE_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTML attribute name")
            values[name.lower()] = value
        parts = ["<img"]
        for name, value in values.items():
            if value is None or value is False:
                continue
            parts.append(f" {name}" if value is True else f' {name}="{escape(str(value), quote=True)}"')
        parts.append(">")
        return HTML("".join(parts))

    def __html__(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.html


class Registers(Protocol):
    """What a template block asks of a registrar: :class:`~.registrar.Registrar` in the
    process that makes the results, :class:`~.remote.RemoteRegistrar` on a template host
    that registers on a processing server."""

    def register(self, text: str) -> Representation: ...
    def register_many(self, texts: Iterable[str]) -> list[Representation]: ...
    def batch(self) -> AbstractContextManager[None]: ...
    def close(self) -> None: ...
