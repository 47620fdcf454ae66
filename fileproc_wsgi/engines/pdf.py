"""The PDF engine: one page of a PDF document, rendered by PDFium through pypdfium2.

PDFium (Apache/BSD, the renderer of Chromium) runs inside the process that decodes: no
subprocess and no PostScript interpreter, and a page renders at thumbnail size in a few
milliseconds.

A page's *natural size* is its size in points at one pixel per point (72 dpi): the page
box as PDFium reports it, which is the crop box (else the media box) turned by the page's
``/Rotate``. That is the size the registrar predicts from, the size ``fit 400x`` scales
from and the unit of ``crop`` coordinates. Reading it opens the document and the page
tree but renders nothing; the file is read through its handle, so only the parts PDFium
asks for are read, however large the file. No header parser of ours could promise
PDFium's answer (it rebuilds a damaged cross-reference table, decrypts, reads object
streams), so PDFium reads it, in a worker (:func:`probe_native`, which the registrar runs
there as for a camera raw file): pypdfium2 is imported only where pages are read, never
by a web process that registers them.

The page is rendered straight at the size the operations need (:mod:`.vector`), never at
print resolution and then shrunk, nor small and then enlarged (``upscale | fit 2000x``
draws it 2000 pixels wide); without a resizing step it is rendered at its natural size,
because that is the size the representation promised. Pages are rendered opaque on
white, with anti-aliasing, annotations and form fields: documents are made for paper,
and a transparent page background would show the web page through it.

A page beyond the last, an encrypted document and a file PDFium cannot read are refused
when the instructions are registered (their header says so), and again when processing,
in case the file was replaced in between.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO

from PIL import Image

from ..errors import ProcessingError
from .native import NativeLibrary
from .vector import natural_size, render_size

FORMATS = frozenset({"PDF"})

# PDFium is not thread-safe, not even for different documents: two threads inside it at
# once corrupt or crash the process (pypdfium2's documentation, "Incompatibility with
# Threading"). The middleware processes in threads, so every PDFium call made here,
# closing included, happens under this lock; PDF pages are rendered one at a time per
# process, and the other threads still decode, resize and encode meanwhile.
_LOCK = threading.Lock()
_WHITE = (255, 255, 255, 255)


# pypdfium2, with the modules used here beside its high-level API.
_PDFIUM = NativeLibrary("pypdfium2", "internal", "raw")


def available() -> dict[str, bool]:
    return {"pdf": _PDFIUM.installed()}


def load() -> None:
    _PDFIUM.load()


def _pdfium() -> Any:
    return _PDFIUM.get()


def probe(handle: BinaryIO, found: str, reference: str, instructions=None, config=None) -> None:
    """None: only PDFium reads the page box as PDFium will (:func:`probe_native`, run in a worker)."""
    return None


def probe_native(
    handle: BinaryIO, found: str, reference: str, instructions=None, config=None
) -> tuple[int, int, bool]:
    """The natural size of the page asked for (page 1 by default); never transparent."""
    pdfium = _pdfium()
    number = _page_number(instructions)
    with _LOCK, _document(handle, reference) as document:
        index = _page_index(document, number, reference)
        try:
            width, height = document.get_page_size(index)
        except pdfium.PdfiumError as error:
            raise ProcessingError(f"page {number} of {reference!r} is not readable ({error})") from None
    return (*natural_size(width, height), False)


def check_text(width: int, height: int, reference: str, instructions, config) -> None:
    """Refuse a page whose result, or the size it is drawn at for these steps, is over
    the limits (see :func:`~fileproc_wsgi.engines.check_text`)."""
    config.check_plan(instructions.plan(width, height))
    render_size(instructions, (width, height), f"page {_page_number(instructions)} of {reference!r}", config)


def decode(handle: BinaryIO, found: str, reference: str, instructions, config):
    """The page rendered as an RGB image, at the size the operations need."""
    pdfium = _pdfium()
    number = _page_number(instructions)
    with _LOCK, _document(handle, reference) as document:
        _init_forms(document)
        index = _page_index(document, number, reference)
        try:
            page = document.get_page(index)
        except pdfium.PdfiumError as error:
            raise ProcessingError(f"page {number} of {reference!r} is not readable ({error})") from None
        natural = natural_size(*page.get_size())
        config.check_plan(instructions.plan(*natural))
        width, height = render_size(instructions, natural, f"page {number} of {reference!r}", config)
        return _render(page, width, height), None, natural


def _page_number(instructions) -> int:
    return (instructions.page if instructions is not None else None) or 1


@contextlib.contextmanager
def _document(handle: BinaryIO, reference: str) -> Iterator:
    """The open document, closed on leaving (with its pages); the caller holds _LOCK.

    Everything is closed explicitly: pypdfium2 would otherwise close it from a garbage
    collector's finalizer, on whatever thread happens to run it, outside the lock.
    """
    pdfium = _pdfium()
    try:
        # The handle, not its bytes: PDFium reads the cross-reference table and the
        # objects it needs, not the whole file (0.3 ms instead of 36 ms for 60 MB).
        document = pdfium.PdfDocument(handle)
    except pdfium.PdfiumError as error:
        raise _unreadable(error, reference) from None
    try:
        yield document
    finally:
        document.close()


def _unreadable(error, reference: str) -> ProcessingError:
    pdfium = _pdfium()
    code = getattr(error, "err_code", None)
    if code == pdfium.raw.FPDF_ERR_PASSWORD:
        return ProcessingError(f"source {reference!r} is an encrypted PDF that needs a password")
    if code == pdfium.raw.FPDF_ERR_SECURITY:
        return ProcessingError(f"source {reference!r} is encrypted in a way PDFium does not support")
    # PDFium reports some damaged files with no error code ("PDFium: Success").
    reason = pdfium.internal.ErrorToStr.get(code) if code else None
    return ProcessingError(
        f"source {reference!r} is a PDF file that PDFium cannot read "
        f"({reason.lower().rstrip('.') if reason else 'it is damaged or incomplete'})"
    )


def _page_index(document, number: int, reference: str) -> int:
    pages = len(document)
    if number > pages:
        raise ProcessingError(f"page {number}: {reference!r} has only {pages} page(s)")
    return number - 1


def _init_forms(document) -> None:
    # Must come before any page is loaded, or form fields are not drawn. pypdfium2's own
    # wheels are built without V8; a build with it is not given forms, so that no
    # document's JavaScript ever runs here.
    pdfium = _pdfium()
    if "V8" in pdfium.PDFIUM_INFO.flags:
        return
    with contextlib.suppress(pdfium.PdfiumError):  # a broken form still leaves a page to show
        document.init_forms()


def _render(page, width: int, height: int) -> Image.Image:
    pdfium = _pdfium()
    pdfium_c = pdfium.raw
    bitmap = pdfium.PdfBitmap.new_native(width, height, pdfium_c.FPDFBitmap_BGR)
    try:
        bitmap.fill_rect(_WHITE, 0, 0, width, height)
        # The raw call rather than PdfPage.render(scale=...): it maps the page onto exactly
        # width x height pixels, where render() rounds the scaled page size up, which can
        # be a pixel off the size the registrar predicted. Anti-aliasing is on by default.
        arguments = (bitmap, page, 0, 0, width, height, 0, pdfium_c.FPDF_ANNOT)
        pdfium_c.FPDF_RenderPageBitmap(*arguments)
        if page.formenv:
            pdfium_c.FPDF_FFLDraw(page.formenv, *arguments)
        # BGR is not a mode Pillow can share a buffer in, so this is a copy that outlives
        # the bitmap.
        return bitmap.to_pil()
    finally:
        bitmap.close()
