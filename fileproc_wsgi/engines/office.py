"""The office engine: a page of a DOCX, XLSX, PPTX, ODT, ODS, ODP, RTF, DOC, XLS or PPT.

What a document is comes from its content, never its name: a ZIP package whose
``[Content_Types].xml`` names a WordprocessingML, SpreadsheetML or PresentationML main
part (macro-enabled ones included), an OpenDocument whose ``mimetype`` says text,
spreadsheet or presentation, an OLE2 compound file with a ``WordDocument``,
``Workbook``/``Book`` or ``PowerPoint Document`` stream, or RTF. LibreOffice is then told
that kind (its import filter is pinned), so a file that only claims to be a document never
reaches another of its many importers. Any other ZIP is refused by name.

``page N`` (page 1 by default) is rendered by the PDF engine from the PDF LibreOffice
makes of the whole document (:mod:`.soffice`: an isolated, time-limited process, its PDF
kept per source content so that the next page converts nothing).

Registration runs no LibreOffice: the page size is read from the document where it says
so cheaply (the first section's ``w:pgSz`` of a DOCX, a PPTX's ``p:sldSz``, the first
sheet's ``pageSetup`` of an XLSX, an OpenDocument's page layout, an RTF's ``\\paperw``),
with a safe XML parser (no DTD, no entities) over at most :data:`MEMBER_BYTES` of any
member, so a ZIP bomb is refused quickly. Where it does not (DOC, XLS, PPT, a document
stating no size) the size promised is the page LibreOffice itself gives a document that
states none: A4 for spreadsheets and OpenDocument text (in the C locale every conversion
runs in), Letter for Word and RTF (their formats' default), 10 x 7.5 inches for slides.
Every page is then rendered into the size promised: a page of another size (a DOC on A4,
a landscape section) is fitted inside it, centred on white, so the ``<img>`` the template
printed always gets exactly the picture it announced.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import time
import zipfile
from typing import BinaryIO

from PIL import Image

from .. import formats
from ..errors import LimitError, MissingLibraryError, ProcessingError, UnsupportedSourceError
from . import safexml, soffice
from .vector import natural_size, render_size

FORMATS = frozenset({"ZIP", "ODT", "ODS", "ODP", "OLE2", "RTF"})
# The most of one archive member read to find a page size: a DOCX's whole text may have to
# be read (its first section can end at its last paragraph), and more than this is a bomb.
MEMBER_BYTES = 64 * 1024 * 1024
_ENTRIES = 20_000  # members of an archive looked at; an office package has dozens
_DEPTH = 1000
_RTF_HEAD = 64 * 1024
# How much of a DOCX's main part is read for its page size: the first section's w:pgSz is
# in the first paragraph that ends a section, or at the end of the body; a document whose
# first 2 MiB of XML state none is promised the default page, and a page of another size
# is framed into it (0.42 s of CPU to read 57 MB of XML otherwise, for every template).
_PAGE_BYTES = 2 * 1024 * 1024
# The largest page, in points, that LibreOffice's PDF export keeps as stated: 200 inches,
# PDF's own limit. Larger pages come out scaled down (a 14401 pt page of Writer is a
# 7200 pt one in the PDF), so a document stating one is promised its kind's default page.
_LARGEST_PAGE = 14400.0
_SMALLEST_PAGE = 1.0
# Time kept back from max_processing_seconds for rendering the page once converted, so
# that the conversion's own limit, with its clear reason, comes before the pool's kill.
_RENDER_SECONDS = 1.0

_A4 = (595.3, 841.9)
_LETTER = (612.0, 792.0)
_SLIDE = (720.0, 540.0)
# SpreadsheetML paperSize codes (ECMA-376 part 1, 18.3.1.63) of the common papers.
_PAPER = {
    1: _LETTER,
    5: (612.0, 1008.0),  # Legal
    8: (841.9, 1190.6),  # A3
    9: _A4,
    11: (419.5, 595.3),  # A5
}

_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_S = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_P = "http://schemas.openxmlformats.org/presentationml/2006/main"
_R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PACKAGE_R = "http://schemas.openxmlformats.org/package/2006/relationships"
_TYPES = "http://schemas.openxmlformats.org/package/2006/content-types"
_STYLE = "urn:oasis:names:tc:opendocument:xmlns:style:1.0"
_FO = "urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0"


@dataclasses.dataclass(frozen=True)
class Kind:
    """A document kind: its name, LibreOffice's import filter for it (never a VBA one,
    so macros are not even loaded), and the page it gets when it states none."""

    name: str
    filter: str
    default_page: tuple[float, float]


KINDS = {
    kind.name: kind
    for kind in (
        Kind("DOCX", "MS Word 2007 XML", _LETTER),
        Kind("XLSX", "Calc MS Excel 2007 XML", _A4),
        Kind("PPTX", "Impress MS PowerPoint 2007 XML", _SLIDE),
        Kind("ODT", "writer8", _A4),
        Kind("ODS", "calc8", _A4),
        Kind("ODP", "impress8", (792.0, 612.0)),
        Kind("RTF", "Rich Text Format", _LETTER),
        Kind("DOC", "MS Word 97", _LETTER),
        Kind("XLS", "MS Excel 97", _A4),
        Kind("PPT", "MS PowerPoint 97", _SLIDE),
    )
}
# Words in an OOXML main part's content type, and the kind they make.
_MAIN_PARTS = (
    ("wordprocessingml", "DOCX"),
    ("ms-word", "DOCX"),
    ("spreadsheetml", "XLSX"),
    ("ms-excel", "XLSX"),
    ("presentationml", "PPTX"),
    ("ms-powerpoint", "PPTX"),
)
_OLE_STREAMS = {"WordDocument": "DOC", "Workbook": "XLS", "Book": "XLS", "PowerPoint Document": "PPT"}


@dataclasses.dataclass(frozen=True)
class Document:
    """What the content says: the kind, and the first page's size in points."""

    kind: Kind
    page: tuple[float, float]


def available() -> dict[str, bool]:
    """LibreOffice, and whether its conversions run without network (reported only where
    LibreOffice is installed: without it nothing is converted at all)."""
    installed = soffice.find() is not None
    return {"libreoffice": installed, "libreoffice:network": not installed or soffice.network_isolated()}


def probe(
    handle: BinaryIO, found: str, reference: str, instructions=None, config=None
) -> tuple[int, int, bool]:
    """The size of a page, in points, from the document itself; never transparent."""
    document = identify(handle, found, reference)
    natural = natural_size(*document.page)
    if config is not None and instructions is not None:
        config.check_plan(instructions.plan(*natural))
        # The page is drawn at the size the steps need: held to max_source_pixels here,
        # at registration, as a PDF page is.
        render_size(instructions, natural, _page_subject(instructions, reference, document.kind), config)
    return (*natural, False)


def decode(
    handle: BinaryIO, found: str, reference: str, instructions, config, *, deadline: float | None = None
):
    """The page asked for, through a PDF of the document, at exactly the promised size.
    ``deadline`` is the job's (a :func:`time.monotonic` time): the conversion stops a
    little before it, so that rendering the page still fits."""
    document = identify(handle, found, reference)
    promised = natural_size(*document.page)
    subject = _page_subject(instructions, reference, document.kind)
    target = render_size(instructions, promised, subject, config)
    from . import pdf  # PDFium, only where a page is rendered: never at registration

    if not pdf.available()["pdf"]:
        from . import advice

        raise MissingLibraryError(f"office documents are rendered through PDF: {advice('pdf')}")
    if deadline is None:
        deadline = time.monotonic() + config.max_processing_seconds
    kind = document.kind
    with soffice.pdf_of(
        handle,
        kind.name,
        kind.filter,
        f"{reference!r}, {_a(kind)}",
        config.document_cache,
        deadline - _RENDER_SECONDS,
        limit=config.document_cache_bytes,
        stale_seconds=max(60.0, 2 * config.max_processing_seconds),
    ) as made:
        image, _, natural = pdf.decode(made, "PDF", reference, instructions, config)
    if natural != promised:
        image = _framed(image, target)
    return image, None, promised


def _a(kind: Kind) -> str:
    """``'a DOCX document'``, ``'an ODT document'``."""
    return formats.a(kind.name, "document")


def _page_subject(instructions, reference: str, kind: Kind) -> str:
    number = getattr(instructions, "page", None) or 1
    return f"page {number} of {reference!r}, {_a(kind)},"


def identify(handle: BinaryIO, found: str, reference: str) -> Document:
    """The document's kind and first page size, from bounded reads; refuses what is not
    an office document."""
    handle.seek(0)
    try:
        if found == "RTF":
            return Document(KINDS["RTF"], _rtf_page(handle.read(_RTF_HEAD)))
        if found == "OLE2":
            kind = KINDS[_ole_kind(handle, reference)]
            return Document(kind, kind.default_page)
        return _package(handle, found, reference)
    finally:
        handle.seek(0)


def _framed(image: Image.Image, canvas: tuple[int, int]) -> Image.Image:
    """``image`` (a page of another size than promised) fitted inside a white page of
    ``canvas`` pixels: the promised page at the size the steps need, which
    :func:`render_size` has held to ``max_source_pixels``."""
    fit = min(canvas[0] / image.width, canvas[1] / image.height)
    size = (max(1, round(image.width * fit)), max(1, round(image.height * fit)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    page = Image.new(image.mode, canvas, "white")
    page.paste(image, ((canvas[0] - size[0]) // 2, (canvas[1] - size[1]) // 2))
    return page


# ---- ZIP packages: OOXML and OpenDocument ---------------------------------------------


def _package(handle: BinaryIO, found: str, reference: str) -> Document:
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise ProcessingError(f"source {reference!r} is a damaged ZIP archive ({error})") from None
    with archive:
        if len(archive.infolist()) > _ENTRIES:
            raise LimitError(f"source {reference!r} is a ZIP archive of more than {_ENTRIES} members")
        names = set(archive.namelist())
        if found in ("ODT", "ODS", "ODP"):
            return _opendocument(archive, KINDS[found], names, reference)
        if "[Content_Types].xml" in names:
            main = _ooxml_main(_read(archive, "[Content_Types].xml", reference), reference)
            if main is not None:
                kind, part = main
                return Document(KINDS[kind], _ooxml_page(archive, kind, part, names, reference))
        raise UnsupportedSourceError(f"source {reference!r} is a ZIP archive, not an office document")


def _ooxml_main(data: bytes, reference: str) -> tuple[str, str] | None:
    """``(kind, part name)`` of the package's main document part, from its content types."""
    for element, attributes in _elements(data, reference, "[Content_Types].xml"):
        if element != f"{_TYPES} Override":
            continue
        content_type = attributes.get("ContentType", "")
        if not content_type.endswith(".main+xml"):
            continue
        for word, kind in _MAIN_PARTS:
            if word in content_type:
                return kind, attributes.get("PartName", "").lstrip("/")
    return None


def _ooxml_page(archive, kind: str, part: str, names: set[str], reference: str) -> tuple[float, float]:
    default = KINDS[kind].default_page
    if part not in names:
        return default
    if kind == "DOCX":
        try:
            for element, attributes in _elements(
                _bounded(_stream(archive, part, reference)), reference, part
            ):
                if element == f"{_W} pgSz":
                    return _sized(attributes.get(f"{_W} w"), attributes.get(f"{_W} h"), 1 / 20, default)
        except _Enough:
            pass
        return default
    if kind == "PPTX":
        for element, attributes in _elements(_read(archive, part, reference), reference, part):
            if element == f"{_P} sldSz":
                return _sized(attributes.get("cx"), attributes.get("cy"), 1 / 12700, default)
        return default
    sheet = _first_sheet(archive, part, names, reference)
    if sheet is None:
        return default
    for element, attributes in _elements(_stream(archive, sheet, reference), reference, sheet):
        if element == f"{_S} pageSetup":
            try:
                paper = _PAPER.get(int(attributes.get("paperSize", "1")), default)
            except ValueError:
                paper = default
            landscape = attributes.get("orientation") == "landscape"
            return (paper[1], paper[0]) if landscape else paper
    return default


def _first_sheet(archive, workbook: str, names: set[str], reference: str) -> str | None:
    """The part name of a workbook's first sheet, through the workbook's relationships."""
    relation = None
    for element, attributes in _elements(_read(archive, workbook, reference), reference, workbook):
        if element == f"{_S} sheet":
            relation = attributes.get(f"{_R} id")
            break
    folder, _, name = workbook.rpartition("/")
    rels = f"{folder}/_rels/{name}.rels" if folder else f"_rels/{name}.rels"
    if relation is None or rels not in names:
        return None
    for element, attributes in _elements(_read(archive, rels, reference), reference, rels):
        if element == f"{_PACKAGE_R} Relationship" and attributes.get("Id") == relation:
            target = attributes.get("Target", "")
            return target.lstrip("/") if target.startswith("/") else f"{folder}/{target}".lstrip("/")
    return None


def _opendocument(archive, kind: Kind, names: set[str], reference: str) -> Document:
    """The page layout of the document's first master page (``Standard`` for text,
    ``Default`` for a spreadsheet, the first one otherwise), from ``styles.xml``."""
    if "styles.xml" not in names:
        return Document(kind, kind.default_page)
    layouts: dict[str, tuple[float, float]] = {}
    masters: dict[str, str] = {}
    layout = None
    for element, attributes in _elements(_stream(archive, "styles.xml", reference), reference, "styles.xml"):
        if element == f"{_STYLE} page-layout":
            layout = attributes.get(f"{_STYLE} name")
        elif element == f"{_STYLE} page-layout-properties" and layout is not None:
            width = safexml.length(attributes.get(f"{_FO} page-width"), unit="pt")
            height = safexml.length(attributes.get(f"{_FO} page-height"), unit="pt")
            if (
                width
                and height
                and _SMALLEST_PAGE <= min(width, height)
                and max(width, height) <= _LARGEST_PAGE
            ):
                layouts[layout] = (width, height)
        elif element == f"{_STYLE} master-page":
            masters.setdefault(
                attributes.get(f"{_STYLE} name", ""), attributes.get(f"{_STYLE} page-layout-name", "")
            )
    preferred = [name for name in ("Standard", "Default") if name in masters] + list(masters)
    for name in preferred:
        if masters[name] in layouts:
            return Document(kind, layouts[masters[name]])
    return Document(kind, kind.default_page)


class _Enough(Exception):
    """:data:`_PAGE_BYTES` read without finding a page size."""


def _bounded(blocks):
    """``blocks`` until :data:`_PAGE_BYTES` have been read, then :class:`_Enough` (raised
    from the reading itself, so text without elements cannot keep it going)."""
    read = 0
    for block in blocks:
        if read >= _PAGE_BYTES:
            raise _Enough
        read += len(block)
        yield block


def _sized(width, height, points: float, default: tuple[float, float]) -> tuple[float, float]:
    """A stated page in points, or ``default`` for one LibreOffice would not draw as stated
    (below 1 pt, above :data:`_LARGEST_PAGE`) or that does not parse."""
    try:
        size = (int(width) * points, int(height) * points)
    except (TypeError, ValueError):
        return default
    return size if _SMALLEST_PAGE <= min(size) and max(size) <= _LARGEST_PAGE else default


def _read(archive, name: str, reference: str) -> bytes:
    return b"".join(_stream(archive, name, reference))


def _stream(archive, name: str, reference: str):
    """A member's bytes in pieces, refused past :data:`MEMBER_BYTES` whatever its header
    claims (a bomb's does not tell the truth)."""
    try:
        with archive.open(name) as member:
            read = 0
            while block := member.read(1 << 20):
                read += len(block)
                if read > MEMBER_BYTES:
                    raise LimitError(
                        f"source {reference!r} has a member {name!r} that inflates to more than "
                        f"{MEMBER_BYTES // (1024 * 1024)} MiB"
                    )
                yield block
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as error:
        raise ProcessingError(f"source {reference!r} has a damaged member {name!r} ({error})") from None


def _elements(data, reference: str, name: str):
    """``(namespace + ' ' + local name, attributes)`` of each element, as the XML streams
    in (``data`` is bytes or an iterable of them), under :mod:`.safexml`'s rules; an
    office part never has a DOCTYPE, so any is refused."""
    subject = f"source {reference!r} has a {name} that"
    # Only read here, never rendered by us: the depth bound is for a bomb, not a renderer,
    # and is set well above the nesting of real documents (nested tables included).
    elements = safexml.elements(
        data, subject, namespaces=True, max_depth=_DEPTH, max_bytes=MEMBER_BYTES, doctype=False
    )
    for element, attributes, _ in elements:
        yield element, attributes


# ---- RTF and OLE2 -----------------------------------------------------------------------


def _rtf_page(head: bytes) -> tuple[float, float]:
    """``\\paperw``/``\\paperh`` (twips) from an RTF's document header; Letter without."""
    width = re.search(rb"\\paperw(\d{1,6})(?![0-9])", head)
    height = re.search(rb"\\paperh(\d{1,6})(?![0-9])", head)
    if width is None or height is None:
        return KINDS["RTF"].default_page
    return _sized(width.group(1), height.group(1), 1 / 20, KINDS["RTF"].default_page)


_FREE = 0xFFFFFFFF
_END = 0xFFFFFFFE
_DIRECTORY_SECTORS = 256  # 1024 entries at least: an office file has a few dozen


def _ole_kind(handle: BinaryIO, reference: str) -> str:
    """DOC, XLS or PPT, from the names in an OLE2 compound file's root storage."""
    for name in _ole_names(handle, reference):
        kind = _OLE_STREAMS.get(name)
        if kind is not None:
            return kind
    raise UnsupportedSourceError(
        f"source {reference!r} is an OLE2 compound file without a Word, Excel or PowerPoint stream"
    )


def _ole_names(handle: BinaryIO, reference: str) -> list[str]:
    """The stream and storage names of the directory (MS-CFB 2.6), following at most
    :data:`_DIRECTORY_SECTORS` sectors of its chain."""
    header = handle.read(512)
    damaged = ProcessingError(f"source {reference!r} is a damaged OLE2 compound file")
    if len(header) < 512:
        raise damaged
    shift = struct.unpack_from("<H", header, 30)[0]
    if shift not in (9, 12):
        raise damaged
    size = 1 << shift
    first_directory = struct.unpack_from("<I", header, 48)[0]
    fat_sectors = [n for n in struct.unpack_from("<109I", header, 76) if n != _FREE]
    per_sector = size // 4
    fat_cache: dict[int, tuple[int, ...]] = {}

    def sector(number: int) -> bytes:
        handle.seek((number + 1) * size)
        data = handle.read(size)
        if len(data) < size:
            raise damaged
        return data

    def following(number: int) -> int:
        index = number // per_sector
        if index >= len(fat_sectors):  # past the header's 109 FAT sectors: a file over 7 MB
            return _END  # with its directory at the end; the names read so far decide
        if index not in fat_cache:
            fat_cache[index] = struct.unpack(f"<{per_sector}I", sector(fat_sectors[index]))
        return fat_cache[index][number % per_sector]

    names = []
    current = first_directory
    for _ in range(_DIRECTORY_SECTORS):
        if current >= 0xFFFFFFFA:
            break
        data = sector(current)
        for offset in range(0, size, 128):
            length = struct.unpack_from("<H", data, offset + 64)[0]
            if 2 <= length <= 64 and data[offset + 66] in (1, 2):  # a storage or a stream
                names.append(data[offset : offset + length - 2].decode("utf-16-le", "replace"))
        current = following(current)
    return names
