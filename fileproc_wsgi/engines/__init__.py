"""Engines turn a source file into an upright Pillow image, and nothing more.

The engine is chosen from the file's first bytes (never its name) against an allow-list,
and the library is told that format explicitly, so a PostScript file called ``.pdf``
cannot reach a PostScript interpreter and an HLS playlist called ``.mp4`` cannot make
FFmpeg open a URL. Each engine reports at start-up whether its library is present
(:func:`available`), instead of failing on first use.

An engine is a module with:

- ``FORMATS``: the names :func:`sniff` gives that it decodes;
- ``available()``: ``{"name": bool}`` for its libraries (``"name:FORMAT"`` for a part
  only that format needs);
- ``probe(handle, found, reference, instructions, config) -> (width, height, has_alpha)``:
  the upright size of what ``decode`` will give (the page, the frame), from headers only,
  refusing what the header already shows to be over a limit;
- ``decode(handle, found, reference, instructions, config) -> (image, icc_profile, size)``:
  an upright image in L, LA, RGB or RGBA, decoded no larger than the operations need, and
  ``size``, the upright size ``probe`` gives, worked out by the same code.

They raise :class:`UnsupportedSourceError`, :class:`ProcessingError` or
:class:`LimitError`, all naming the source. Whatever else a library raises (a decoder
meets far more broken files than its authors did) is caught at one boundary here,
:func:`.boundary.failure`, and becomes a :class:`ProcessingError` that names the format and the
stage, or a :class:`LimitError` when memory ran out: a source that breaks a decoder is a
fact about the source, refused for good, never an error page or a retry.

Pillow (:mod:`.raster`) comes first; PDF pages (:mod:`.pdf`), video frames (:mod:`.video`)
and what only ImageMagick reads (:mod:`.magick`, also the fallback for TIFFs Pillow cannot
decode) follow.
"""

from __future__ import annotations

import dataclasses
from typing import BinaryIO

from PIL import Image

from .. import formats
from ..errors import ProcessingError, UnsupportedSourceError
from . import magick, pdf, raster, video
from .boundary import failure

ENGINES = (raster, pdf, video, magick)
# Sources a first engine failed on that ImageMagick may still read: TIFF layouts Pillow
# does not decode, and AVIFs its libavif build refuses (alpha in some layouts, 10-bit HDR).
_FALLBACKS = {"TIFF": magick, "AVIF": magick}
HEAD_BYTES = formats.HEAD_BYTES


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What a header says about a source: its format and upright size."""

    format: str
    width: int
    height: int
    has_alpha: bool


@dataclasses.dataclass
class Decoded:
    """A decoded, upright, mode-normalised image and the colour profile it carries.

    ``size`` is the upright size of the source (the page, the frame) as :func:`probe`
    reports it, which the predicted result size was computed from; ``image`` may be
    smaller when the engine decoded at a reduced scale.
    """

    image: Image.Image
    icc_profile: bytes | None
    size: tuple[int, int]


def sniff(head: bytes) -> str | None:
    """The format named by a file's magic bytes: ``'JPEG'``, ``'PDF'``, ``'MP4'`` ... or None."""
    return formats.sniff(head)


def engine_for(head: bytes, reference: str):
    """``(format, engine)`` for a file, by its first bytes; refuses everything else."""
    found = sniff(head)
    if found is None:
        raise UnsupportedSourceError(
            f"source {reference!r} is not in a recognised image, PDF or video format"
        )
    for engine in ENGINES:
        if found in engine.FORMATS:
            if not _usable(engine):
                raise UnsupportedSourceError(
                    f"source {reference!r} is {formats.a(found)}, "
                    "and this server lacks the library to read it"
                )
            return found, engine
    raise UnsupportedSourceError(
        f"source {reference!r} is {formats.a(found)}, which this server does not decode"
    )


def probe(handle: BinaryIO, reference: str, instructions=None, config=None) -> SourceInfo:
    """Read only the header: format, upright size (of the page or frame asked for) and
    transparency. With ``config``, refuse what the header shows to be over its limits."""
    found, engine = _engine(handle, reference, instructions)
    width, height, alpha = _with_fallback(
        found,
        engine,
        "read",
        reference,
        handle,
        lambda e: e.probe(handle, found, reference, instructions, config),
    )
    if width < 1 or height < 1:  # a fuzzed header can say 0x0 and still parse
        raise ProcessingError(
            f"source {reference!r} is {formats.a(found)} whose header gives no picture size"
        )
    return SourceInfo(found, width, height, alpha)


def decode(handle: BinaryIO, reference: str, instructions, config) -> Decoded:
    """Decode the image the instructions ask for, within the configured limits."""
    found, engine = _engine(handle, reference, instructions)
    image, icc_profile, size = _with_fallback(
        found,
        engine,
        "decoded",
        reference,
        handle,
        lambda e: e.decode(handle, found, reference, instructions, config),
    )
    return Decoded(image, icc_profile, size)


def available() -> dict[str, bool]:
    """Which engines and output encoders this installation can use."""
    found: dict[str, bool] = {}
    for engine in ENGINES:
        found.update(engine.available())
    return found


def _usable(engine) -> bool:
    """Whether ``engine``'s libraries are present. A part only one format needs (an
    ``available()`` key ``"name:FORMAT"``, e.g. ImageMagick's HEIC coder) is reported at
    start-up, and the engine refuses that format itself, saying what is missing."""
    return all(present for name, present in engine.available().items() if ":" not in name)


def _engine(handle: BinaryIO, reference: str, instructions):
    head = handle.read(HEAD_BYTES)
    handle.seek(0)
    found, engine = engine_for(head, reference)
    _check_steps_apply(found, engine, reference, instructions)
    return found, engine


def _check_steps_apply(found: str, engine, reference: str, instructions) -> None:
    """Refuse ``frame`` on what is not a video and ``page`` on a video, from the format
    alone: at registration as surely as when processing."""
    if instructions is None:
        return
    if instructions.frame is not None and engine is not video:
        what = "a PDF document" if found == "PDF" else formats.a(found, "image")
        raise ProcessingError(f"frame applies to video sources; {reference!r} is {what}")
    if instructions.page is not None and engine is video:
        raise ProcessingError(
            f"page applies to PDFs and other documents; {reference!r} is {formats.a(found, 'video')}"
        )


def _with_fallback(found: str, engine, stage: str, reference: str, handle: BinaryIO, call):
    message = f"source {reference!r} is {formats.a(found)} that could not be {stage}"
    try:
        with failure(message, handle):
            return call(engine)
    except ProcessingError as error:
        fallback = _FALLBACKS.get(found)
        if fallback is None or fallback is engine or not _usable(fallback):
            raise
        handle.seek(0)
        try:
            with failure(message, handle):
                return call(fallback)
        except ProcessingError:
            raise error from None  # unreadable to both: the first engine's reason is the one to show
