"""Placeholder while the magick engine is built: recognises its formats and refuses them."""

from __future__ import annotations

from ..errors import UnsupportedSourceError

FORMATS = frozenset({"PSD", "HEIF"})


def available() -> dict[str, bool]:
    return {"imagemagick": False}


def probe(handle, found: str, reference: str, instructions) -> tuple[int, int, bool]:
    raise UnsupportedSourceError(f"source {reference!r} is a {found} file, which this server does not decode")


def decode(handle, found: str, reference: str, instructions, config):
    raise UnsupportedSourceError(f"source {reference!r} is a {found} file, which this server does not decode")
