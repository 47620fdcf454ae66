"""A ``watermark`` step for fileproc-wsgi, and the worked example of its plugin API.

    photos/a.jpg | fit 800x | watermark logo.png position=south-east opacity=0.5 scale=0.2

lays the logo ``logo.png`` over the picture, ``scale`` times the picture's width
(0.2 by default), at one of fileproc-wsgi's gravities (``center``, ``north`` ...
``southeast``, also written ``south-east``; ``southeast`` by default), ``opacity``
times as opaque as the logo itself (1 by default). The logo's size is relative to the
picture's, so the step stays as written for a ``2x`` variant (no ``scaled()``).

The logo is named, never given as a path: a plain file name, looked for first in the
directory that the environment variable ``FILEPROC_WATERMARK_DIR`` names (the site's
own logos) and then among the logos this package ships (``logo.png``). So a template
can make the step read nothing but a logo, and the step stays what fileproc-wsgi asks an
operation to be: a value that knows no source, URL or database. A logo's bytes enter the
checksum through :meth:`Watermark.salt`, so replacing a logo gives new URLs, as a new
version of this package does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pathlib
import re
import threading
from typing import ClassVar

from PIL import Image

from fileproc_wsgi.errors import ProcessingError
from fileproc_wsgi.operations import GRAVITIES, PluginOperation

__all__ = ["Watermark"]

DIRECTORY_VARIABLE = "FILEPROC_WATERMARK_DIR"
_SHIPPED = pathlib.Path(__file__).resolve().parent / "logos"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_MARGIN = 0.02  # of the picture's shorter side, between the logo and the edge
_DEFAULT_POSITION = "southeast"
_DEFAULT_OPACITY = 1.0
_DEFAULT_SCALE = 0.2
_PLACES = 3  # opacity and scale are kept to 0.001, so 0.5 and 0.5000001 are one URL


@dataclasses.dataclass(frozen=True)
class Watermark(PluginOperation):
    """Lay a named logo over the picture; the picture's size is unchanged."""

    word: ClassVar[str] = "watermark"
    usage: ClassVar[str] = "watermark LOGO [position=P] [opacity=O] [scale=S]"
    least: ClassVar[int] = 1
    most: ClassVar[int] = 1
    keys: ClassVar[tuple[str, ...]] = ("opacity", "position", "scale")

    logo: str
    position: str = _DEFAULT_POSITION
    opacity: float = _DEFAULT_OPACITY
    scale: float = _DEFAULT_SCALE

    @classmethod
    def parse(cls, arguments) -> Watermark:
        logo = arguments.text(0)
        if not _NAME.fullmatch(logo) or ".." in logo:
            problem = f"expected a logo's file name like logo.png, without a directory, got {logo!r}"
            raise arguments.fail(problem, 0)
        position = arguments.gravity("position", default=_DEFAULT_POSITION)
        opacity = _fraction(arguments, "opacity", _DEFAULT_OPACITY)
        scale = _fraction(arguments, "scale", _DEFAULT_SCALE)
        return cls(logo, position, opacity, scale)

    def canonical_arguments(self) -> tuple[str | tuple[str, str], ...]:
        arguments: list[str | tuple[str, str]] = [self.logo]
        if self.opacity != _DEFAULT_OPACITY:
            arguments.append(("opacity", _text(self.opacity)))
        if self.position != _DEFAULT_POSITION:
            arguments.append(("position", self.position))
        if self.scale != _DEFAULT_SCALE:
            arguments.append(("scale", _text(self.scale)))
        return tuple(arguments)

    def salt(self) -> str:
        """A digest of the logo's bytes: a replaced logo gives new URLs."""
        return _read(self.logo)[0]

    def size(self, width: int, height: int) -> tuple[int, int]:
        return width, height

    def apply(self, image: Image.Image) -> Image.Image:
        logo = _read(self.logo)[1]
        width = max(1, round(image.width * self.scale))
        height = max(1, round(logo.height * width / logo.width))
        if height > image.height:  # a tall logo on a wide strip: fit the height instead
            height = image.height
            width = max(1, min(image.width, round(logo.width * height / logo.height)))
        mark = logo.resize((width, height), Image.Resampling.LANCZOS)
        if self.opacity < 1:
            mark.putalpha(mark.getchannel("A").point(lambda value: round(value * self.opacity)))
        margin = round(min(image.size) * _MARGIN)
        across, down = GRAVITIES[self.position]
        left = max(0, round(margin + (image.width - width - 2 * margin) * across))
        top = max(0, round(margin + (image.height - height - 2 * margin) * down))
        layer = image.convert("RGBA")
        layer.alpha_composite(mark, (min(left, image.width - width), min(top, image.height - height)))
        return layer if image.mode == "RGBA" else layer.convert(image.mode)


def _fraction(arguments, key: str, default: float) -> float:
    value = arguments.number(key, key, 0, 1, default=default, above_low=True)
    value = round(value, _PLACES)
    if value <= 0:
        raise arguments.fail(f"{key} must be at least 0.001, got {arguments.keys[key]!r}", key)
    return value


def _text(value: float) -> str:
    return f"{value:.{_PLACES}f}".rstrip("0").rstrip(".")


_cache: dict[str, tuple[tuple[str, int, int], str, Image.Image]] = {}
_cache_lock = threading.Lock()


def _path(name: str) -> pathlib.Path:
    """The logo called ``name``: the site's directory first, then the shipped logos."""
    directory = os.environ.get(DIRECTORY_VARIABLE)
    for folder in ([pathlib.Path(directory)] if directory else []) + [_SHIPPED]:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    where = f"in {DIRECTORY_VARIABLE} or " if directory else ""
    raise ProcessingError(f"watermark: there is no logo named {name!r} {where}among the shipped logos")


def _read(name: str) -> tuple[str, Image.Image]:
    """The digest and the RGBA image of the logo ``name``, read again when its file
    changes (size or modification time), so registering a text costs one ``stat``."""
    path = _path(name)
    status = path.stat()
    key = (str(path), status.st_mtime_ns, status.st_size)
    with _cache_lock:
        found = _cache.get(name)
    if found is not None and found[0] == key:
        return found[1], found[2]
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            logo = opened.convert("RGBA")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise ProcessingError(f"watermark: the logo {name!r} is not an image Pillow reads") from None
    digest = hashlib.sha256(data).hexdigest()[:16]
    with _cache_lock:
        _cache[name] = (key, digest, logo)
    return digest, logo
