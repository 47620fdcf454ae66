"""The canonical form: one text per meaning, and the checksum made from it.

Two texts that mean the same thing (whitespace, ``|`` versus newline, case of words and
keys, order of ``key=value`` arguments, comments, spelling of numbers, sizes and colours)
parse to equal operations, and :func:`step_text` writes each operation back in one way
only, the source first (:func:`source_step`, tidied by :func:`canonical_source`), so they
have the same canonical text and the same :func:`checksum`, the name of their result.
"""

from __future__ import annotations

import re

from ..errors import InstructionError
from ..operations import (
    Background,
    Blur,
    Crop,
    Fill,
    Fit,
    Flip,
    Format,
    Frame,
    Operation,
    Pad,
    Page,
    PluginOperation,
    Quality,
    Resize,
    Rotate,
    Sharpen,
)
from .lexer import quote
from .values import num

PROCESSING_VERSION = "1"
"""Part of every checksum: bump it when results for the same text change, to get new URLs."""

CHECKSUM_LENGTH = 32

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_ROOT_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9_-]*:")
_SLASHES = re.compile(r"/{2,}")


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


def step_text(operation: Operation) -> str:
    """The canonical text of one step; parsing it gives back an equal operation."""
    if isinstance(operation, (Fit, Fill, Pad, Resize)):
        text = f"{operation.word} {operation.width or ''}x{operation.height or ''}"
        if isinstance(operation, Fill):
            if operation.focus is not None:
                text += f" focus={num(operation.focus[0])},{num(operation.focus[1])}"
            elif operation.gravity != "center":
                text += f" gravity={operation.gravity}"
        elif isinstance(operation, Pad) and operation.color is not None:
            text += f" color={operation.color}"
        return text
    if isinstance(operation, Crop):
        unit = "%" if operation.percent else ""
        values = (operation.x, operation.y, operation.width, operation.height)
        return "crop " + ",".join(num(value) + unit for value in values)
    if isinstance(operation, Rotate):
        color = f" color={operation.color}" if operation.color is not None else ""
        return f"rotate {num(operation.degrees)}{color}"
    if isinstance(operation, Flip):
        return f"flip {operation.direction}"
    if isinstance(operation, Blur):
        return f"blur {num(operation.radius)}"
    if isinstance(operation, Sharpen):
        return "sharpen" if operation.amount == 1 else f"sharpen {num(operation.amount)}"
    if isinstance(operation, Background):
        return f"background {operation.color}"
    if isinstance(operation, Page):
        return f"page {operation.number}"
    if isinstance(operation, Frame):
        if operation.percent is not None:
            return f"frame {num(operation.percent)}%"
        return f"frame {num(operation.seconds or 0.0)}"
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
            parts.append(f"{key}={quote(str(value))}")
        else:
            parts.append(quote(str(argument)))
    return " ".join(parts)


def source_step(reference: str) -> str:
    """The step ``source <reference>``, quoted so that any name reads back as it is
    (tidied by :func:`canonical_source` only). Raises InstructionError for a name with a
    line break, which no step can hold."""
    if "\n" in reference:
        raise InstructionError(
            f"source {reference!r} has a line break, which a source reference cannot hold", line=1, column=1
        )
    return f"source {quote(reference)}"


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
