"""Engines turn a source file into an upright Pillow image, and nothing more.

The engine is chosen from the file's first bytes (never its name) against an allow-list,
and the library is told that format explicitly, so a PostScript file called ``.pdf``
cannot reach a PostScript interpreter and an HLS playlist called ``.mp4`` cannot make
FFmpeg open a URL. An engine module is imported the first time a source needs it, and
imports its native library (PDFium, FFmpeg, ImageMagick, LibRaw, libheif ...) only to
decode, or to read a header its own code cannot: a web process whose jobs run in workers
registers every kind of source without loading one (a hostile file cannot crash it while
a template renders, nor does it spend the third of a second ImageMagick, PDFium and FFmpeg
take to load). A source whose engine lacks its library is refused with
what to install (the pip extra, or the system package), found without loading it;
:func:`missing` lists them all at once, for ``manage.py check`` and the like, rather than
every process warning at start-up.

An engine is a module with:

- ``FORMATS``: the names :func:`sniff` gives that it decodes;
- ``available()``: ``{"name": bool}`` for its libraries (``"name:FORMAT"`` for a part
  only that format needs), found without loading a native library;
- ``load()``, optional: load those libraries now (a worker, before its first job);
- ``probe(handle, found, reference, instructions, config) -> (width, height, has_alpha)``:
  the upright size of what ``decode`` will give (the page, the frame), from headers only,
  refusing what the header already shows to be over a limit; an engine that reads
  animations adds a fourth item, the :attr:`SourceInfo.frames` a result that animates holds.
  It returns None when only its native library can read the header: then
- ``probe_native(...)``, same arguments and answer, asks that library; :func:`probe` runs it
  only where a native crash is contained (a worker, or a host that chose no isolation);
  a registrar keeps its answer per source version and page;
- ``check_text(width, height, reference, instructions, config)``, optional: the limits a
  text sets on what it makes of that size beyond its plan of sizes (a PDF page's render
  size), checked for each text against the kept answer;
- ``decode(handle, found, reference, instructions, config) -> (image, icc_profile, size)``:
  an upright image in L, LA, RGB or RGBA, decoded no larger than the operations need, and
  ``size``, the upright size ``probe`` gives, worked out by the same code; an animated
  source adds a fourth item, its :class:`Animation` (the first frame is ``image``).
  An engine whose ``decode`` takes a keyword ``deadline`` is given the job's (a
  :func:`time.monotonic` time), to stop a program it runs (LibreOffice) in time.

They raise :class:`UnsupportedSourceError`, :class:`ProcessingError` or
:class:`LimitError`, all naming the source. Whatever else a library raises (a decoder
meets far more broken files than its authors did) is caught at one boundary here,
:func:`.boundary.failure`, and becomes a :class:`ProcessingError` that names the format and the
stage, or a :class:`LimitError` when memory ran out: a source that breaks a decoder is a
fact about the source, refused for good, never an error page or a retry.

Pillow (:mod:`.raster`) comes first; PDF pages (:mod:`.pdf`), SVG drawings (:mod:`.svg`),
video frames (:mod:`.video`), phone photos (:mod:`.heif`), camera raw files (:mod:`.raw`),
JPEG XL images (:mod:`.jxl`)
and what only ImageMagick reads (:mod:`.magick`, also the fallback for TIFFs Pillow cannot
decode) follow.

Installed packages add engines through the ``fileproc_wsgi.engines`` entry point group
(:mod:`fileproc_wsgi.plugins`, ``docs/plugins.md``): an engine plugin has the contract
above plus ``sniff(head) -> format | None``, asked only about a file no built-in engine
decodes, and runs inside the same boundary. Its ``available()`` keys and a plugin that
could not be loaded are reported by :func:`missing` as ``plugin:<name>...``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

from PIL import Image

from .. import formats, plugins
from ..errors import MissingLibraryError, ProcessingError, UnsupportedSourceError
from .boundary import failure, reason

log = logging.getLogger(__name__)

ENGINE_NAMES = ("raster", "pdf", "video", "magick", "svg", "office", "heif", "raw", "jxl")
# Which engine module decodes each name formats.sniff gives (each module's FORMATS, known
# here without importing it; a test compares the two).
ENGINE_OF = {
    **dict.fromkeys(("JPEG", "PNG", "GIF", "WEBP", "AVIF", "TIFF", "BMP", "ICO"), "raster"),
    "PDF": "pdf",
    "SVG": "svg",
    **dict.fromkeys(("MP4", "MOV", "MKV", "AVI", "TS"), "video"),
    "PSD": "magick",
    "HEIF": "heif",
    "JXL": "jxl",
    **dict.fromkeys(("DNG", "CR2", "CR3", "NEF", "ARW", "RAF", "ORF", "RW2", "PEF"), "raw"),
    **dict.fromkeys(("ZIP", "ODT", "ODS", "ODP", "OLE2", "RTF"), "office"),
}
# Sources a first engine failed on that ImageMagick may still read: TIFF layouts Pillow
# does not decode, and AVIFs its libavif build refuses (alpha in some layouts, 10-bit HDR).
_FALLBACKS = {"TIFF": "magick", "AVIF": "magick"}
HEAD_BYTES = formats.HEAD_BYTES


class Missing(NamedTuple):
    """A library this installation lacks: the :func:`available` key it is reported
    under, the pip extra of fileproc-wsgi that provides it (None when only a system
    package does), and one sentence saying what needs it and what to install."""

    engine: str
    extra: str | None
    why: str


_EXTRA_HINT = "pip install 'fileproc-wsgi[{}]'"
# available() key: (the extra that brings it, what needs it). An extra of None is a
# library inside a system package (or inside Pillow's build): its sentence names it.
_NEEDED_BY = {
    "pdf": ("pdf", "PDF sources need pypdfium2"),
    "svg": ("svg", "SVG sources need pillow-lunasvg"),
    "video": ("video", "video sources (MP4, MOV, Matroska, AVI, MPEG-TS) need PyAV"),
    "imagemagick": ("wand", "PSD sources, and TIFFs and AVIFs Pillow cannot read, need Wand"),
    "heif": ("heif", "HEIF sources (HEIC phone photos) need pillow-heif"),
    "raw": ("raw", "camera raw sources (DNG, CR2, CR3, NEF, ARW, RAF, ORF, RW2, PEF) need rawpy"),
    "jxl": ("jxl", "JPEG XL sources need pillow-jxl-plugin"),
    "jpeg": (
        None,
        "JPEG sources and results need Pillow built with libjpeg (Pillow's wheels from PyPI have it)",
    ),
    "webp": (
        None,
        "WebP sources and results need Pillow built with libwebp (Pillow's wheels from PyPI have it)",
    ),
    "avif": (
        None,
        "AVIF results need Pillow 11.3 or later built with libavif (its wheels from PyPI have it)",
    ),
    "littlecms": (None, "CMYK sources need Pillow built with littlecms (Pillow's wheels from PyPI have it)"),
    "libreoffice": (
        None,
        "Office documents need LibreOffice (Debian/Ubuntu: apt-get install --no-install-recommends "
        "libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui; "
        "macOS: brew install --cask libreoffice)",
    ),
    "libreoffice:network": (
        None,
        "Office documents are converted without a network namespace of their own: `unshare -rn` "
        "(util-linux) is missing or this kernel blocks user namespaces (kernel.unprivileged_userns_clone, "
        "user.max_user_namespaces), so only LibreOffice's profile settings (links from untrusted "
        "places blocked, links never updated) keep a document from fetching what it links to; "
        "allow user namespaces for the server's user, or convert only documents you trust",
    ),
}
_NO_MAGICKWAND = (
    "Wand is installed but cannot load ImageMagick's MagickWand library: install it "
    "(Debian/Ubuntu: apt-get install libmagickwand-6.q16-6; macOS: brew install imagemagick), "
    "or point MAGICK_HOME at it"
)
# What a source of each format needs beyond its engine's own library.
_FORMAT_NEEDS = {"JPEG": "jpeg", "WEBP": "webp"}
_LIBRARY_OF = {
    "raster": None,
    "pdf": "pdf",
    "video": "video",
    "magick": "imagemagick",
    "svg": "svg",
    "office": "libreoffice",
    "heif": "heif",
    "raw": "raw",
    "jxl": "jxl",
}


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What a header says about a source: its format and upright size."""

    format: str
    width: int
    height: int
    has_alpha: bool
    # The frames a result in a format that animates would hold: 1 for a still (and for
    # one page of an animation), the count an animated WebP or APNG header states, None
    # for an animated GIF (its header does not say, and counting walks the whole file).
    frames: int | None = 1
    # The distribution and version of the engine plugin that read it ('' for a built-in
    # engine): part of the checksum, so upgrading the plugin gives new URLs.
    engine: str = ""


@dataclasses.dataclass
class Animation:
    """The frames after the first of an animated source, for a result that animates.

    ``frames()`` yields ``(image, milliseconds on screen)`` for the second frame on, each
    composited as a browser shows it (disposal and blending resolved), upright, in one of
    L, LA, RGB or RGBA and of the first frame's size. Each is decoded only when asked for,
    within ``max_source_frames`` and ``max_animation_pixels``, from the source's open
    file: walk it before that closes. ``duration`` is the first frame's time on screen,
    ``plays`` how many times the whole plays (0: for ever).
    """

    duration: int
    plays: int
    frames: Callable[[], Iterator[tuple[Image.Image, int]]]


@dataclasses.dataclass
class Decoded:
    """A decoded, upright, mode-normalised image and the colour profile it carries.

    ``size`` is the upright size of the source (the page, the frame) as :func:`probe`
    reports it, which the predicted result size was computed from; ``image`` may be
    smaller when the engine decoded at a reduced scale. ``animation`` is the rest of an
    animated source (None for a still, or when a page is picked).
    """

    image: Image.Image
    icc_profile: bytes | None
    size: tuple[int, int]
    animation: Animation | None = None


def sniff(head: bytes) -> str | None:
    """The format named by a file's magic bytes: ``'JPEG'``, ``'PDF'``, ``'MP4'`` ... or None."""
    return formats.sniff(head)


def engine_for(head: bytes, reference: str):
    """``(format, engine)`` for a file, by its first bytes; refuses everything else, and
    a format whose library this installation lacks, naming what to install
    (:class:`MissingLibraryError`: processing retries it, as the host may get it)."""
    found = sniff(head)
    if found is None or found not in ENGINE_OF:
        claimed = _plugin_engine(head, reference)
        if claimed is not None:
            return claimed
    if found is None:
        raise UnsupportedSourceError(
            f"source {reference!r} is not in a format this server reads "
            "(images, SVG, PDF, office documents, video)"
        )
    name = ENGINE_OF.get(found)
    if name is None:
        raise UnsupportedSourceError(
            f"source {reference!r} is {formats.a(found)}, which this server does not decode"
        )
    engine = _load(name)
    lacking = _lacking(name, engine, found)
    if lacking is not None:
        raise MissingLibraryError(
            f"source {reference!r} is {_a(found)}, and this server lacks the library to read it: "
            + advice(lacking)
        )
    return found, engine


class NativeProbeNeeded(Exception):
    """Raised by :func:`probe` with ``native=False`` when only the format's native library
    can say what the header means (LibRaw's crop tables for a camera raw file; a HEIF
    layout this package's own box reader does not decide). Not an error: the caller runs
    the probe where a crash costs nothing but a worker (:meth:`.pool.IsolatedJobs.probe`)."""

    def __init__(self, format: str) -> None:
        super().__init__(f"reading {formats.a(format)} header needs its native library")
        self.format = format


def probe(
    handle: BinaryIO,
    reference: str,
    instructions=None,
    config=None,
    *,
    native: bool = True,
    whole_text: bool = True,
) -> SourceInfo:
    """Read only the header: format, upright size (of the page or frame asked for) and
    transparency. With ``config``, refuse what the header shows to be over its limits, and
    (unless not ``whole_text``) what the instructions would make of it (:func:`check_text`).

    An engine's ``probe`` may return None when its own header reading cannot decide; its
    ``probe_native`` then asks the library. ``native=False`` (the web process, whose jobs
    run in workers) raises :class:`NativeProbeNeeded` instead of loading that library."""
    found, engine = _engine(handle, reference, instructions)

    def header(e):
        read = e.probe(handle, found, reference, instructions, config)
        if read is None and native:
            handle.seek(0)
            read = e.probe_native(handle, found, reference, instructions, config)
        return read

    read = _with_fallback(found, engine, "read", reference, handle, header)
    if read is None:
        raise NativeProbeNeeded(found)
    width, height, alpha, *more = read
    if width < 1 or height < 1:  # a fuzzed header can say 0x0 and still parse
        raise ProcessingError(
            f"source {reference!r} is {formats.a(found)} whose header gives no picture size"
        )
    frames = more[0] if more else 1  # an engine that reads no animation gives three items
    info = SourceInfo(found, width, height, alpha, frames, engine=_plugin_identity(engine))
    if whole_text and config is not None and instructions is not None:
        check_text(info, reference, instructions, config)
    return info


def check_text(info: SourceInfo, reference: str, instructions, config) -> None:
    """Refuse what the instructions would make of a header read over the limits, where
    the engine decides more than the plan of sizes shows: a PDF page's render size.

    Kept apart from the reading because a header read by a native library in a worker is
    kept for the source's version and page, for every text that names them; each text is
    checked here against that one read."""
    name = ENGINE_OF.get(info.format)
    check = getattr(_load(name), "check_text", None) if name is not None else None
    if check is not None:
        check(info.width, info.height, reference, instructions, config)


def decode(
    handle: BinaryIO, reference: str, instructions, config, *, deadline: float | None = None
) -> Decoded:
    """Decode the image the instructions ask for, within the configured limits (and by
    ``deadline``, for an engine that takes it)."""
    found, engine = _engine(handle, reference, instructions)

    def call(e):
        if deadline is not None and "deadline" in inspect.signature(e.decode).parameters:
            return e.decode(handle, found, reference, instructions, config, deadline=deadline)
        return e.decode(handle, found, reference, instructions, config)

    image, icc_profile, size, *animation = _with_fallback(found, engine, "decoded", reference, handle, call)
    return Decoded(image, icc_profile, size, *animation)


def available() -> dict[str, bool]:
    """Which engines and output encoders this installation can use (imports every engine
    module, none of their native libraries)."""
    found: dict[str, bool] = {}
    for name in ENGINE_NAMES:
        found.update(_load(name).available())
    for plugin in plugins.engines():
        found.update(_plugin_available(plugin))
    return found


def load_libraries() -> None:
    """Import every engine and the native libraries it decodes with: for a worker process
    before its first job, whose time and memory limits they would otherwise count against."""
    for name in ENGINE_NAMES:
        engine = _load(name)
        if hasattr(engine, "load"):
            engine.load()


def missing(*, load: bool = False) -> list[Missing]:
    """Every library this installation lacks, each with the extra or package to install;
    empty when all are present. Imports every engine: for a check run once (``manage.py
    check``), not for a request. With ``load``, the native libraries are imported too, so
    one that is installed but does not import (a broken or shadowed package, a missing
    shared library) counts as missing; otherwise they are only looked for."""
    if load:
        load_libraries()
    lacking = [key for key, present in available().items() if not present]
    broken = [Missing(f"plugin:{problem.name}", None, str(problem)) for problem in plugins.problems()]
    return [_missing(key) for key in lacking] + broken


def _missing(key: str) -> Missing:
    if key.startswith("plugin:"):
        _, name, library = key.split(":", 2)
        return Missing(key, None, f"the engine plugin {name!r} reports {library!r} is not available")
    extra, why = _NEEDED_BY.get(key, (None, f"{key} is not available"))
    if key == "imagemagick" and _load("magick").wand_installed():
        return Missing(key, None, _NO_MAGICKWAND)
    return Missing(key, extra, why)


def advice(key: str) -> str:
    """The sentence a refusal ends with: what needs the library and how to install it."""
    found = _missing(key)
    return found.why if found.extra is None else f"{found.why}: {_EXTRA_HINT.format(found.extra)}"


def _a(found: str) -> str:
    """The format with its article, an office format as a document: ``'an ODT document'``;
    a ZIP or OLE2 file the office engine reads is ``'an office document'`` (which kind
    only its directory says, not the head this is told from)."""
    if ENGINE_OF.get(found) == "office":
        return "an office document" if found in ("ZIP", "OLE2") else formats.a(found, "document")
    return formats.a(found)


def _load(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def _plugin_engine(head: bytes, reference: str):
    """``(format, engine)`` from the engine plugins, for a file no built-in engine
    decodes; None when none claims it. A plugin lacking a library refuses by name."""
    claimed = plugins.sniff(head)
    if claimed is None:
        return None
    found, plugin = claimed
    lacking = [key for key, present in _plugin_available(plugin).items() if not present]
    if lacking:
        raise MissingLibraryError(
            f"source {reference!r} is {formats.a(found)}, and this server lacks the library to read it: "
            + _missing(lacking[0]).why
        )
    return found, plugin.target


def _plugin_identity(engine) -> str:
    """``'fileproc-ppm 1.0'`` for an engine plugin's module, '' for a built-in engine."""
    if getattr(engine, "__name__", "").startswith(f"{__name__}."):
        return ""
    return next((plugin.identity for plugin in plugins.engines() if plugin.target is engine), "")


def _plugin_available(plugin) -> dict[str, bool]:
    """An engine plugin's ``available()``, its keys prefixed ``plugin:<name>:``; a plugin
    whose ``available()`` raises reports itself unavailable rather than breaking a check."""
    try:
        libraries = dict(plugin.target.available())
    except Exception as error:
        # One line, as for a plugin that fails to load; the traceback is for its author.
        log.warning("fileproc_wsgi: engine plugin %r raised in available(): %s", plugin.name, reason(error))
        log.debug("fileproc_wsgi: engine plugin %r in available()", plugin.name, exc_info=True)
        libraries = {"available()": False}
    return {f"plugin:{plugin.name}:{key}": bool(present) for key, present in libraries.items()}


def _lacking(name: str, engine, found: str) -> str | None:
    """The available() key of what ``engine`` lacks for ``found``, or None. Only the
    library the engine itself needs and the one part that format needs are looked at, so
    a JPEG never loads the WebP or AVIF modules to find out whether they are there."""
    library = _LIBRARY_OF[name]
    if library is not None and not engine.available()[library]:
        return library
    part = _FORMAT_NEEDS.get(found)
    if part is not None and not engine.has_feature(part):
        return part
    return None


def _usable(name: str) -> bool:
    """Whether the engine module ``name`` has its own library."""
    library = _LIBRARY_OF[name]
    return library is None or _load(name).available()[library]


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
    video = ENGINE_OF.get(found) == "video"
    if instructions.frame is not None and not video:
        if found == "PDF":
            what = "a PDF document"
        else:
            what = _a(found) if ENGINE_OF.get(found) == "office" else formats.a(found, "image")
        raise ProcessingError(f"frame applies to video sources; {reference!r} is {what}")
    if instructions.page is not None and video:
        raise ProcessingError(
            f"page applies to PDFs and other documents; {reference!r} is {formats.a(found, 'video')}"
        )


def _with_fallback(found: str, engine, stage: str, reference: str, handle: BinaryIO, call):
    message = f"source {reference!r} is {_a(found)} that could not be {stage}"
    try:
        with failure(message, handle):
            return call(engine)
    except ProcessingError as error:
        name = _FALLBACKS.get(found)
        if name is None or not _usable(name) or _load(name) is engine:
            raise
        fallback = _load(name)
        handle.seek(0)
        try:
            with failure(message, handle):
                return call(fallback)
        except ProcessingError:
            raise error from None  # unreadable to both: the first engine's reason is the one to show
