"""What a file is taken to be from its first bytes, and how formats are named in reasons."""

from __future__ import annotations

import gzip
import struct

import pytest

from fileproc_wsgi.formats import HEAD_BYTES, a, sniff


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\0\0\0\x08mdat"


def _stored_first(name: bytes, data: bytes) -> bytes:
    """A ZIP local file header for a stored (uncompressed) first entry, and its data."""
    header = struct.pack("<4s5H3I2H", b"PK\x03\x04", 10, 0, 0, 0, 0, 0, len(data), len(data), len(name), 0)
    return header + name + data


def _packets(size: int, prefix: int) -> bytes:
    packet = b"\0" * prefix + b"\x47" + b"\xff" * (size - prefix - 1)
    return packet * 4


_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n'
_ILLUSTRATOR = (
    _DECLARATION
    + b"<!-- Generator: Adobe Illustrator 24.0.0, SVG Export Plug-In . SVG Version: 6.00 -->\n"
    + b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
)
# SVG is known by its root element, wherever the prolog puts it; other XML by name.
_MARKUP = [
    ("svg-bare", _SVG, "SVG"),
    ("svg-after-byte-order-mark", b"\xef\xbb\xbf" + _SVG, "SVG"),
    ("svg-after-whitespace", b" \r\n\t" + _SVG, "SVG"),
    ("svg-after-declaration-comment-doctype", _ILLUSTRATOR + _SVG, "SVG"),
    ("svg-after-internal-subset", _DECLARATION + b'<!DOCTYPE svg [<!ENTITY x "y">]>' + _SVG, "SVG"),
    ("svg-with-a-prefix", b'<svg:svg xmlns:svg="http://www.w3.org/2000/svg"/>', "SVG"),
    ("svg-prolog-longer-than-the-head", _DECLARATION + b"<!--" + b"x" * HEAD_BYTES, "SVG"),
    ("xml-another-root", _DECLARATION + b'<image><read filename="/etc/passwd"/></image>', "XML"),
    ("xml-xhtml", _DECLARATION + b'<html xmlns="http://www.w3.org/1999/xhtml"/>', "XML"),
    ("html-is-not-xml", b"<!DOCTYPE html><html><body></body></html>", None),
    ("an-element-starting-with-svg", b"<svgfont/>", None),
    ("svgz", gzip.compress(_ILLUSTRATOR + _SVG), "SVGZ"),
    ("gzip-of-text", gzip.compress(b"hello"), None),
    ("gzip-broken", b"\x1f\x8b\x08\x00garbage", None),
]


@pytest.mark.parametrize(
    ("head", "found"),
    [
        pytest.param(b"II*\x00" + b"\0" * 12, "TIFF", id="tiff-little-endian"),
        pytest.param(b"II+\x00\x08\x00\x00\x00", "TIFF", id="bigtiff-little-endian"),
        pytest.param(b"MM\x00+\x00\x08\x00\x00", "TIFF", id="bigtiff-big-endian"),
        pytest.param(b"\xff\x0a\xfa\x1f", "JXL", id="jxl-codestream"),
        pytest.param(b"\x00\x00\x00\x0cJXL \r\n\x87\n\x00\x00\x00\x14ftypjxl ", "JXL", id="jxl-container"),
        pytest.param(b"%PDF-1.7\n", "PDF", id="pdf"),
        pytest.param(b"\r\n" * 500 + b"%PDF-1.4\n", "PDF", id="pdf-after-1000-junk-bytes"),
        pytest.param(b"x" * HEAD_BYTES + b"%PDF-1.4\n", None, id="pdf-header-too-late"),
        pytest.param(_ftyp(b"heic", b"mif1", b"heic"), "HEIF", id="heic-phone"),
        pytest.param(_ftyp(b"mif3", b"miaf"), "HEIF", id="heif-major-mif3"),
        pytest.param(_ftyp(b"msf1", b"iso8", b"heic"), "HEIF", id="heif-sequence-compatible-heic"),
        pytest.param(_ftyp(b"avci", b"mif1"), "HEIF", id="heif-avc-coded"),
        pytest.param(_ftyp(b"j2ki", b"mif1"), "HEIF", id="heif-jpeg2000"),
        pytest.param(_ftyp(b"avif", b"mif1", b"miaf"), "AVIF", id="avif"),
        pytest.param(_ftyp(b"mif1", b"avif"), "AVIF", id="avif-as-compatible-brand"),
        pytest.param(_ftyp(b"isom", b"iso2", b"avc1", b"mp41"), "MP4", id="mp4"),
        pytest.param(_ftyp(b"qt  "), "MOV", id="quicktime"),
        pytest.param(_packets(188, 0), "TS", id="mpeg-ts"),
        pytest.param(_packets(192, 4), "TS", id="m2ts"),
        pytest.param(b"\x47" + b"\0" * 300, None, id="one-sync-byte-is-not-a-stream"),
        pytest.param(b"\x00\x00\x01\x00\x02\x00" + b"\0" * 10, "ICO", id="ico"),
        pytest.param(b"\x00\x00\x01\x00\x00\x00" + b"\0" * 10, None, id="ico-with-no-images"),
        pytest.param(b"\xc5\xd0\xd3\xc6", "EPS", id="eps"),
        pytest.param(b"#EXTM3U\n", "HLS playlist", id="hls"),
        pytest.param(_stored_first(b"mimetype", b"application/vnd.oasis.opendocument.text"), "ODT", id="odt"),
        pytest.param(
            _stored_first(b"mimetype", b"application/vnd.oasis.opendocument.spreadsheet"), "ODS", id="ods"
        ),
        pytest.param(
            _stored_first(b"mimetype", b"application/vnd.oasis.opendocument.presentation"), "ODP", id="odp"
        ),
        pytest.param(_stored_first(b"mimetype", b"application/epub+zip"), "ZIP", id="epub-is-a-zip"),
        pytest.param(_stored_first(b"[Content_Types].xml", b"<Types/>"), "ZIP", id="ooxml-is-a-zip-here"),
        pytest.param(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504, "OLE2", id="ole2"),
        pytest.param(b"{\\rtf1\\ansi hello}", "RTF", id="rtf"),
        pytest.param(b"", None, id="empty"),
        *(pytest.param(head, found, id=name) for name, head, found in _MARKUP),
    ],
)
def test_sniff(head, found):
    assert sniff(head[:HEAD_BYTES]) == found


@pytest.mark.parametrize(
    ("found", "noun", "text"),
    [
        ("EPS", "file", "an EPS file"),
        ("MP4", "video", "an MP4 video"),
        ("SVG", "file", "an SVG file"),
        ("SVGZ", "file", "an SVGZ file"),
        ("XML", "file", "an XML file"),
        ("HLS playlist", "", "an HLS playlist"),
        ("HEIF", "file", "a HEIF file"),
        ("WEBP", "image", "a WebP image"),
        ("PDF", "file", "a PDF file"),
        ("AVIF", "image", "an AVIF image"),
        ("TS", "file", "an MPEG-TS file"),
    ],
)
def test_formats_are_named_with_their_article(found, noun, text):
    assert a(found, noun) == text
