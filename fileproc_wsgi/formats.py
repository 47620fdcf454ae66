"""What a file is, from its first bytes, and how to name it in a sentence; and the formats
results are written in, with their extensions and content types (no imaging library here:
the storage and the web side read this table too).

:func:`sniff` looks only at content, never at a file name: the engine chosen for a source,
and the coder or demuxer that engine pins, follow from what :func:`sniff` returns. The
rules follow the formats' own specifications rather than the common case:

- TIFF includes BigTIFF (``II+``/``MM\\0+``), which Pillow reads.
- Camera raw files: ORF, RW2 and RAF by their own magic, CR3 by its ``crx`` brand, and the
  TIFF-based kinds from the first directory, read within the head and no further: CR2 by
  the ``CR`` marker after the header, DNG by its DNGVersion tag, NEF, ARW and PEF by the
  camera's maker. A TIFF whose directory lies beyond the head stays ``TIFF``.
- A PDF may have up to 1024 bytes before ``%PDF-`` (PDF 1.7, annex H: readers accept it,
  and mail gateways and web frameworks have been known to put them there).
- An ISO base media file (``ftyp`` box) is an image when any of its brands, major or
  compatible, is an image brand (AVIF, or the HEIF family: ``mif1``..``mif3``, ``msf1``,
  ``heic``, ``avci``, ``j2ki`` ...), so a HEIF written by a camera that lists an unusual
  major brand is never handed to the video engine.
- SVG is XML whose first element is ``<svg>``, after an optional byte order mark, XML
  declaration, comments and DOCTYPE; another XML document that declares itself is
  ``XML``, refused by name; gzip whose first bytes unpack to an SVG is ``SVGZ``, refused
  by name too (one more decompressor, and its bomb, for a format sites rarely upload).
- MPEG transport streams are recognised by their sync bytes at packet boundaries
  (188-byte packets, or 192 for the M2TS variant cameras write).
"""

from __future__ import annotations

import re
import struct
import zlib

# Enough for every rule below: the PDF header may start as late as byte 1023, and an MPEG
# transport stream shows its third sync byte at 384.
HEAD_BYTES = 1024

_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset(
    {
        b"mif1", b"mif2", b"mif3", b"msf1", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx",
        b"heif", b"avci", b"avcs", b"j2ki", b"j2is", b"jpeg", b"jpgs", b"vvic", b"1pic",
    }
)  # fmt: skip
# Letters whose spoken name starts with a vowel: "an MP4", "an SVG", "an HLS playlist".
_VOWEL_SOUND = ("A", "E", "F", "H", "I", "L", "M", "N", "O", "R", "S", "X")
# What may come before an XML document's root element: the declaration and other
# processing instructions, comments, and a DOCTYPE with or without an internal subset.
_PROLOG = re.compile(rb"\s*(?:<\?.*?\?>|<!--.*?-->|<!DOCTYPE(?:[^\[>]|\[.*?\])*>)", re.DOTALL)
_ROOT = re.compile(rb"<([A-Za-z_][\w.:-]*)")
_SPOKEN_AS_WORDS = {"HEIF", "MOV", "WEBP", "RAW"}  # "a HEIF", "a MOV", "a WebP"
_DISPLAY = {"WEBP": "WebP", "TS": "MPEG-TS", "JXL": "JPEG XL"}


def sniff(head: bytes) -> str | None:
    """The format named by a file's first bytes (``'JPEG'``, ``'PDF'``, ``'MP4'`` ...), or None.

    ``head`` should be the first :data:`HEAD_BYTES` bytes (fewer for a shorter file).
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith((b"IIRO", b"IIRS", b"MMOR")):
        return "ORF"  # Olympus: a TIFF with its own magic number
    if head.startswith(b"IIU\x00"):
        return "RW2"  # Panasonic
    if head.startswith(b"FUJIFILMCCD-RAW"):
        return "RAF"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return _tiff_kind(head)
    if head.startswith(b"BM"):
        return "BMP"
    if head.startswith(b"\x00\x00\x01\x00") and len(head) >= 6 and 0 < head[4] + 256 * head[5] <= 256:
        return "ICO"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JXL"  # a bare codestream, or the ISO BMFF-style container (18181-2)
    if head.startswith(b"8BPS"):
        return "PSD"
    if head.startswith(b"%!PS"):
        return "PostScript"
    if head.startswith(b"\xc5\xd0\xd3\xc6"):
        return "EPS"
    if head.startswith(b"#EXTM3U"):
        return "HLS playlist"
    if head.startswith(b"PK\x03\x04"):
        return _zip(head)
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "OLE2"  # Word, Excel and PowerPoint 97-2003; which one its directory says
    if head.startswith(b"{\\rtf"):
        return "RTF"
    if head[4:8] == b"ftyp":
        return _iso_media(head)
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return "MOV"  # QuickTime files older than the ftyp box
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "MKV"  # Matroska, and WebM, which is Matroska
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "AVI"
    if _transport_stream(head):
        return "TS"
    if b"%PDF-" in head:
        return "PDF"
    if head.startswith(b"\x1f\x8b"):
        return _gzip(head)
    return _markup(head)


def _markup(head: bytes) -> str | None:
    """SVG when the first element is ``<svg>`` (``<prefix:svg>`` too), after a byte order
    mark, the XML declaration, comments and a DOCTYPE; XML for a document that declares
    itself XML and has another root; None otherwise (HTML, text)."""
    text = head.removeprefix(b"\xef\xbb\xbf")
    position = 0
    while (match := _PROLOG.match(text, position)) is not None:
        position = match.end()
    rest = text[position:].lstrip()
    declared = text.lstrip().startswith(b"<?xml")
    root = _ROOT.match(rest)
    if root is not None:
        if root.group(1).rpartition(b":")[2] == b"svg":
            return "SVG"
        return "XML" if declared else None
    if rest.startswith((b"<?", b"<!--", b"<!DOCTYPE")) and (declared or rest.startswith(b"<!DOCTYPE svg")):
        # A prolog longer than the head (a long comment, a DOCTYPE with many entities):
        # the SVG engine finds the root element, and refuses one that is not <svg>.
        return "SVG"
    return None


def _gzip(head: bytes) -> str | None:
    """SVGZ for a gzip stream whose first bytes are an SVG; None for any other gzip."""
    try:
        inner = zlib.decompressobj(wbits=31).decompress(head, HEAD_BYTES)
    except zlib.error:
        return None
    return "SVGZ" if _markup(inner) == "SVG" else None


# TIFF-based camera raw files told apart by the Make tag of their first directory.
_RAW_MAKERS = ((b"NIKON", "NEF"), (b"SONY", "ARW"), (b"PENTAX", "PEF"))
_DNG_VERSION, _MAKE, _ASCII = 0xC612, 0x010F, 2


def _tiff_kind(head: bytes) -> str:
    """TIFF, or the camera raw format a TIFF-structured file is, from the head alone."""
    if head[8:11] == b"CR\x02":
        return "CR2"
    if head[2:4] not in (b"*\x00", b"\x00*"):
        return "TIFF"  # BigTIFF: no camera writes raw files in it
    order = "<" if head.startswith(b"II") else ">"
    (offset,) = struct.unpack(order + "I", head[4:8])
    if offset + 2 > len(head):
        return "TIFF"
    (count,) = struct.unpack(order + "H", head[offset : offset + 2])
    make = b""
    for index in range(min(count, (len(head) - offset - 2) // 12)):
        at = offset + 2 + 12 * index
        tag, kind, length, value = struct.unpack(order + "HHI4s", head[at : at + 12])
        if tag == _DNG_VERSION:
            return "DNG"
        if tag == _MAKE and kind == _ASCII:
            if length <= 4:
                make = value[:length]
            else:
                (start,) = struct.unpack(order + "I", value)
                make = head[start : start + min(length, 32)]
    for maker, kind in _RAW_MAKERS:
        if make.upper().startswith(maker):
            return kind
    return "TIFF"


def _iso_media(head: bytes) -> str:
    """AVIF, HEIF, MOV or MP4, from the ``ftyp`` box's major and compatible brands."""
    if head[8:12] == b"crx ":
        return "CR3"  # Canon's raw files are ISO media too
    (size,) = struct.unpack(">I", head[:4])
    end = min(size, len(head)) if size >= 16 else 16
    brands = {head[8:12]} | {head[offset : offset + 4] for offset in range(16, end - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "AVIF"
    if brands & _HEIF_BRANDS:
        return "HEIF"
    return "MOV" if head[8:12] == b"qt  " else "MP4"


# An OpenDocument file's first entry is "mimetype", stored uncompressed (ODF 1.2, part 3,
# 3.3), so its kind shows in the head; an OOXML package's shows only in its
# [Content_Types].xml, compressed anywhere in the archive: that one stays "ZIP" here and
# the office engine reads the archive's directory.
_ODF_KINDS = {
    b"application/vnd.oasis.opendocument.text": "ODT",
    b"application/vnd.oasis.opendocument.spreadsheet": "ODS",
    b"application/vnd.oasis.opendocument.presentation": "ODP",
}


def _zip(head: bytes) -> str:
    """ODT, ODS or ODP from an OpenDocument's leading ``mimetype`` entry, else ZIP."""
    if len(head) < 30:
        return "ZIP"
    method, size, name_length, extra_length = struct.unpack("<H8xI4xHH", head[8:30])
    start = 30 + name_length + extra_length
    if method == 0 and head[30 : 30 + name_length] == b"mimetype":
        return _ODF_KINDS.get(head[start : start + size], "ZIP")
    return "ZIP"


def _transport_stream(head: bytes) -> bool:
    for packet, offset in ((188, 0), (192, 4)):
        if len(head) >= offset + 2 * packet + 1 and all(
            head[offset + packet * index] == 0x47 for index in range(3)
        ):
            return True
    return False


def display_name(found: str) -> str:
    """The format as people write it: ``'WebP'``, ``'MPEG-TS'``, ``'JPEG'``."""
    return _DISPLAY.get(found, found)


def a(found: str, noun: str = "file") -> str:
    """``'an EPS file'``, ``'a PDF file'``, ``'an MP4 video'``: the format with its article."""
    name = display_name(found)
    first = name[:1].upper()
    if name.split()[0].upper() in _SPOKEN_AS_WORDS:
        article = "an" if first in "AEIOU" else "a"
    else:  # read letter by letter: "an M-P-4", "a P-D-F"
        article = "an" if first in _VOWEL_SOUND else "a"
    return f"{article} {name} {noun}".rstrip()


# The formats results are written in: the word in ``format <name>``, the file extension,
# the content type, whether an animated source stays animated in it, and the sniffed name
# of a source already in it (which every current browser shows, so it is kept as the
# output when the instructions name none).
_OUTPUTS = (
    ("jpeg", "jpg", "image/jpeg", False, "JPEG"),
    ("png", "png", "image/png", False, "PNG"),
    ("webp", "webp", "image/webp", True, "WEBP"),
    ("avif", "avif", "image/avif", False, "AVIF"),
    ("gif", "gif", "image/gif", True, "GIF"),
)
OUTPUT_FORMATS = tuple(name for name, *_ in _OUTPUTS)
EXTENSIONS = {name: extension for name, extension, *_ in _OUTPUTS}
CONTENT_TYPES = {name: content_type for name, _, content_type, *_ in _OUTPUTS}
FORMAT_OF_EXTENSION = {extension: name for name, extension in EXTENSIONS.items()}
ANIMATED_FORMATS = frozenset(name for name, _, _, animated, _ in _OUTPUTS if animated)
"""Output formats that keep an animated source animated; the others take its first frame."""
_KEPT_AS_OUTPUT = {found: name for name, *_, found in _OUTPUTS}


def choose_format(source_format: str, has_transparency: bool, requested: str | None) -> str:
    """The output format: the ``requested`` one, else the source's if browsers show it,
    else JPEG, or PNG when there is transparency to keep."""
    return requested or _KEPT_AS_OUTPUT.get(source_format) or ("png" if has_transparency else "jpeg")
