"""Office documents through the real middleware and a real LibreOffice: each kind to its
first page at the size promised when registering, pages from the kept PDF, content over
names, and the conversion held in its box (no macro, no network, a time limit).

The documents are made here: with python-docx, openpyxl and python-pptx, or zipped by
hand where the test needs exact XML (OpenDocument, a hostile package). LibreOffice must
be installed (``bin/dev`` does it); without it these tests fail, they never skip.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import docx
import openpyxl
import pptx
import pytest
from docx.opc.constants import RELATIONSHIP_TYPE
from docx.oxml.ns import qn
from docx.shared import Mm
from PIL import Image, ImageChops

from fileproc_wsgi import engines
from fileproc_wsgi.config import Config
from fileproc_wsgi.engines import office, soffice
from fileproc_wsgi.errors import (
    ConfigError,
    LimitError,
    ProcessingError,
    TimeLimitError,
    UnsupportedSourceError,
)
from support import Site

pytestmark = pytest.mark.integration  # LibreOffice, in processes of its own

_MIMETYPE = "application/vnd.oasis.opendocument.text"
_ODF = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
    'xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0" '
    'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
    'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" '
    'xmlns:xlink="http://www.w3.org/1999/xlink" '
    'xmlns:script="urn:oasis:names:tc:opendocument:xmlns:script:1.0" office:version="1.2"'
)


def test_libreoffice_is_installed():
    assert soffice.find() is not None, "install LibreOffice (bin/dev does): the office tests need it"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One document cache for the tests that do not count conversions: the profile
    template is made once."""
    return tmp_path_factory.mktemp("documents")


@pytest.fixture
def site(tmp_path, cache):
    made = Site(tmp_path, document_cache=str(cache))
    yield made
    made.close()


# ---- documents ----------------------------------------------------------------------------


def make_docx(path: Path, pages: int = 1, width_mm: float | None = None, height_mm: float | None = None):
    document = docx.Document()
    if width_mm:
        section = document.sections[0]
        section.page_width, section.page_height = Mm(width_mm), Mm(height_mm)
    for number in range(1, pages + 1):
        document.add_heading(f"Page {number} of the document", 0)
        document.add_paragraph("Some text in black on white. " * 20)
        if number < pages:
            document.add_page_break()
    document.save(path)


def make_xlsx(path: Path):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in range(1, 30):
        sheet.cell(row=row, column=1, value=f"Row {row}")
        sheet.cell(row=row, column=2, value=row * 1.5)
    sheet.page_setup.paperSize = sheet.PAPERSIZE_A5
    sheet.page_setup.orientation = "landscape"
    workbook.save(path)


def make_pptx(path: Path):
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[0])
    slide.shapes.title.text = "A slide title"
    slide.placeholders[1].text = "With a subtitle"
    deck.save(path)


def make_odt(path: Path, body: str = "<text:p>An OpenDocument text</text:p>", scripts: str = "", extra=()):
    """An ODT zipped by hand: mimetype first and stored, content, styles, manifest; its
    page is A5 landscape (21 x 14.8 cm)."""
    styles = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-styles {_ODF}>'
        '<office:automatic-styles><style:page-layout style:name="pm1">'
        '<style:page-layout-properties fo:page-width="21cm" fo:page-height="14.8cm" '
        'style:print-orientation="landscape"/></style:page-layout></office:automatic-styles>'
        '<office:master-styles><style:master-page style:name="Standard" style:page-layout-name="pm1"/>'
        "</office:master-styles></office:document-styles>"
    )
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {_ODF}>{scripts}'
        f"<office:body><office:text>{body}</office:text></office:body></office:document-content>"
    )
    entries = ["content.xml", "styles.xml", *(name for name, _ in extra)]
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
        'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
        f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{_MIMETYPE}"/>'
        + "".join(
            f'<manifest:file-entry manifest:full-path="{n}" manifest:media-type="text/xml"/>' for n in entries
        )
        + "</manifest:manifest>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), _MIMETYPE)  # stored, first
        archive.writestr("content.xml", content)
        archive.writestr("styles.xml", styles)
        for name, data in extra:
            archive.writestr(name, data)
        archive.writestr("META-INF/manifest.xml", manifest)


def make_rtf(path: Path):
    # A5 portrait: 148 x 210 mm = 8391 x 11906 twips.
    path.write_text(r"{\rtf1\ansi\paperw8391\paperh11906{\fonttbl\f0 DejaVu Sans;}\f0\fs48 Rich text\par}")


def dark_share(image: Image.Image) -> float:
    """The share of pixels that are dark: text was drawn (grey where a thumbnail shrank it)."""
    grey = image.convert("L")
    histogram = grey.histogram()
    return sum(histogram[:160]) / (grey.width * grey.height)


# ---- each kind to its first page -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make", "size"),
    [
        pytest.param("letter.docx", make_docx, (612, 792), id="docx-letter"),
        pytest.param("a5.xlsx", make_xlsx, (595, 420), id="xlsx-a5-landscape"),
        pytest.param("deck.pptx", make_pptx, (720, 540), id="pptx-4-3"),
        pytest.param("a5.odt", make_odt, (595, 420), id="odt-a5-landscape"),
        pytest.param("a5.rtf", make_rtf, (420, 595), id="rtf-a5"),
    ],
)
def test_each_kind_renders_its_first_page_at_the_promised_size(site, name, make, size):
    make(site.media / name)
    representation, image = site.make(name)
    assert (representation.width, representation.height) == size
    assert image.size == size
    assert dark_share(image) > 0.0002, "no text on the page"
    assert dark_share(image) < 0.5, "not a page of text on white"


def test_a_page_size_is_read_from_the_document_and_scaled_results_keep_it(site):
    make_docx(site.media / "a4.docx", width_mm=210, height_mm=297)
    representation, image = site.make("a4.docx | fit 300x")
    assert (representation.width, representation.height) == image.size == (300, 425)


def test_page_two_comes_from_the_kept_pdf_without_converting_again(tmp_path):
    site = Site(tmp_path, document_cache=str(tmp_path / "documents"))
    try:
        make_docx(site.media / "two.docx", pages=2)
        _, first = site.make("two.docx | fit 200x")
        pdfs = list((tmp_path / "documents").glob("*.pdf"))
        assert len(pdfs) == 1
        inode = pdfs[0].stat().st_ino
        started = time.monotonic()
        _, second = site.make("two.docx | page 2 | fit 200x")
        assert time.monotonic() - started < 1.0, "page 2 took as long as a conversion"
        assert [p.stat().st_ino for p in (tmp_path / "documents").glob("*.pdf")] == [inode]
        assert second.size == first.size == (200, 259)
        assert first.tobytes() != second.tobytes()
        assert dark_share(second) > 0.0002
        response = site.request("two.docx | page 3")
        assert response.status_int == 422
        assert "page 3: 'two.docx' has only 2 page(s)" in response.text
    finally:
        site.close()


def test_a_doc_from_libreoffice_is_recognised_by_its_ole2_streams(site, tmp_path):
    make_docx(tmp_path / "made.docx")
    out = tmp_path / "out"
    _convert_directly(tmp_path / "made.docx", out, "doc")
    shutil.copy(out / "made.doc", site.media / "old.doc")
    with open(site.media / "old.doc", "rb") as file:
        assert office.identify(file, "OLE2", "old.doc").kind.name == "DOC"
    representation, image = site.make("old.doc | fit 306x")
    assert (representation.width, representation.height) == image.size == (306, 396)
    assert dark_share(image) > 0.0002


# ---- content, not names ---------------------------------------------------------------


def test_a_docx_named_jpg_and_a_jpeg_named_docx_go_by_their_content(site):
    make_docx(site.media / "document.jpg")
    Image.new("RGB", (64, 48), "red").save(site.media / "photo.docx", "JPEG")
    _, page = site.make("document.jpg | fit 100x")
    assert page.size == (100, 129) and dark_share(page) > 0.0002
    _, photo = site.make("photo.docx")
    assert photo.size == (64, 48)
    assert photo.convert("RGB").getpixel((32, 24))[0] > 200


def test_a_zip_that_is_no_office_document_is_refused_by_name(site):
    with zipfile.ZipFile(site.media / "files.docx", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(UnsupportedSourceError, match="'files.docx' is a ZIP archive, not an office document"):
        site.registrar.register("files.docx")


def _docx_main_part(path: Path, document: bytes, chunks: int = 0, tail: bytes = b"</w:document>"):
    """A DOCX of one main part: ``document`` then ``chunks`` MiB of blanks then ``tail``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.wordprocessingml.document.main+xml"/></Types>',
        )
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(document)
            block = b" " * (1 << 20)
            for _ in range(chunks):
                member.write(block)
            member.write(tail)


_W_DOCUMENT = b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'


def test_a_docx_main_part_is_read_for_its_page_size_only_to_2_mib(site):
    # 80 MiB of XML before the section that states A5: registration reads 2 MiB of it and
    # promises the default page (a page of another size is framed into it when rendered).
    tail = b'<w:body><w:sectPr><w:pgSz w:w="8391" w:h="11906"/></w:sectPr></w:body></w:document>'
    _docx_main_part(site.media / "bomb.docx", _W_DOCUMENT, chunks=80, tail=tail)
    assert os.path.getsize(site.media / "bomb.docx") < 1 << 20
    with open(site.media / "bomb.docx", "rb") as file:
        started = time.process_time()
        document = office.identify(file, "ZIP", "bomb.docx")
        spent = time.process_time() - started
    assert document.page == (612.0, 792.0)
    assert spent < 0.05, f"reading the page size took {spent:.3f} s of CPU"
    representation = site.registrar.register("bomb.docx")
    assert (representation.width, representation.height) == (612, 792)
    # The same section early in the part is read.
    _docx_main_part(site.media / "a5.docx", _W_DOCUMENT + tail[: -len(b"</w:document>")], chunks=80)
    representation = site.registrar.register("a5.docx")
    assert (representation.width, representation.height) == (420, 595)


def test_a_zip_bomb_member_is_refused_quickly(site):
    styles = b'<office:document-styles xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0">'
    with zipfile.ZipFile(site.media / "bomb.odt", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), _MIMETYPE)
        with archive.open("styles.xml", "w", force_zip64=True) as member:
            member.write(styles)
            block = b" " * (1 << 20)
            for _ in range(80):
                member.write(block)
    assert os.path.getsize(site.media / "bomb.odt") < 1 << 20
    started = time.monotonic()
    with pytest.raises(LimitError, match="'styles.xml' that inflates to more than 64 MiB"):
        site.registrar.register("bomb.odt")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("section", "size"),
    [
        pytest.param('w:w="400000000" w:h="15840"', (612, 792), id="too-wide-is-letter"),
        pytest.param('w:w="288001" w:h="288001"', (612, 792), id="over-14400-pt-is-letter"),
        pytest.param('w:w="19" w:h="15840"', (612, 792), id="under-1-pt-is-letter"),
        pytest.param('w:w="-11906" w:h="16838"', (612, 792), id="negative-is-letter"),
        pytest.param('w:w="11906" w:h="16838"', (595, 842), id="a4-as-stated"),
    ],
)
def test_a_stated_page_is_kept_only_within_what_libreoffice_draws(site, section, size):
    body = f"<w:body><w:p/><w:sectPr><w:pgSz {section}/></w:sectPr></w:body></w:document>"
    _docx_main_part(site.media / "page.docx", _W_DOCUMENT + body.encode(), tail=b"")
    representation = site.registrar.register("page.docx")
    assert (representation.width, representation.height) == size


def test_an_odt_page_over_200_inches_is_promised_a4_and_rendered_framed(site):
    make_odt(site.media / "huge.odt")
    with zipfile.ZipFile(site.media / "huge.odt") as source:
        parts = {name: source.read(name) for name in source.namelist()}
    parts["styles.xml"] = parts["styles.xml"].replace(b'fo:page-width="21cm"', b'fo:page-width="5000in"')
    with zipfile.ZipFile(site.media / "huge.odt", "w", zipfile.ZIP_DEFLATED) as target:
        target.writestr(zipfile.ZipInfo("mimetype"), _MIMETYPE)
        for name, data in parts.items():
            if name != "mimetype":
                target.writestr(name, data)
    representation, image = site.make("huge.odt | fit 300x")
    assert (representation.width, representation.height) == image.size == (300, 425)


def test_a_page_of_200_inches_is_refused_at_registration_unless_shrunk(site):
    body = '<w:body><w:p/><w:sectPr><w:pgSz w:w="288000" w:h="288000"/></w:sectPr></w:body></w:document>'
    _docx_main_part(site.media / "poster.docx", _W_DOCUMENT + body.encode(), tail=b"")
    with pytest.raises(LimitError, match="14400x14400 pixels, more than max_output_pixels"):
        site.registrar.register("poster.docx")
    representation = site.registrar.register("poster.docx | fit 100x100")
    assert (representation.width, representation.height) == (100, 100)


_TYPES = '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">{}</Types>'
_DECLARES = "declares entities or attribute defaults in its DOCTYPE, which are never read here"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(
            '<!DOCTYPE t [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>' + _TYPES.format("&b;"),
            _DECLARES,
            id="entities",
        ),
        pytest.param(
            '<!DOCTYPE Types [<!ATTLIST Types x CDATA "1">]>' + _TYPES.format(""), _DECLARES, id="attlist"
        ),
        pytest.param(
            '<!DOCTYPE Types SYSTEM "http://127.0.0.1:9/t.dtd">' + _TYPES.format(""),
            "has a DOCTYPE, which this format never has",
            id="external-dtd",
        ),
        pytest.param(
            _TYPES.format("<a>" * 1001 + "</a>" * 1001),
            "nests its elements deeper than 1000 levels",
            id="deep",
        ),
    ],
)
def test_xml_with_a_dtd_is_refused(site, content, reason):
    with zipfile.ZipFile(site.media / "entities.docx", "w") as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?>' + content)
    with pytest.raises(ProcessingError) as refused:
        site.registrar.register("entities.docx")
    assert str(refused.value) == f"source 'entities.docx' has a [Content_Types].xml that {reason}"


def test_without_libreoffice_documents_are_refused_naming_the_packages(site, monkeypatch):
    make_docx(site.media / "a.docx")
    monkeypatch.setattr(soffice, "find", lambda: None)
    with pytest.raises(UnsupportedSourceError) as refused:
        site.registrar.register("a.docx")
    assert "Office documents need LibreOffice" in str(refused.value)
    assert "apt-get install --no-install-recommends libreoffice-writer-nogui" in str(refused.value)


# ---- the conversion in its box -----------------------------------------------------------


def test_a_macro_enabled_word_document_is_rendered(site):
    make_docx(site.media / "plain.docx")
    with zipfile.ZipFile(site.media / "plain.docx") as source:
        parts = {name: source.read(name) for name in source.namelist()}
    parts["[Content_Types].xml"] = parts["[Content_Types].xml"].replace(
        b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
        b"application/vnd.ms-word.document.macroEnabled.main+xml",
    )
    parts["word/vbaProject.bin"] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 504
    with zipfile.ZipFile(site.media / "macros.docm", "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in parts.items():
            target.writestr(name, data)
    _, image = site.make("macros.docm | fit 200x")
    assert image.size == (200, 259) and dark_share(image) > 0.0002


def test_a_basic_macro_bound_to_opening_the_document_does_not_run(site, tmp_path):
    marker = tmp_path / "macro-ran"
    module = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<script:module xmlns:script="http://openoffice.org/2000/script" '
        'script:name="Module1" script:language="StarBasic">Sub Main\n'
        f"  Open &quot;{marker}&quot; For Output As #1\n  Print #1, &quot;ran&quot;\n  Close #1\nEnd Sub\n"
        "</script:module>"
    )
    library = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<library:library xmlns:library="http://openoffice.org/2000/library" '
        'library:name="Standard" library:readonly="false" library:passwordprotected="false">'
        '<library:element library:name="Module1"/></library:library>'
    )
    libraries = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<library:libraries xmlns:library="http://openoffice.org/2000/library" '
        'xmlns:xlink="http://www.w3.org/1999/xlink">'
        '<library:library library:name="Standard" library:link="false"/>'
        "</library:libraries>"
    )
    scripts = (
        '<office:scripts><office:event-listeners><script:event-listener script:language="ooo:script" '
        'script:event-name="dom:load" xlink:href="vnd.sun.star.script:Standard.Module1.Main?language=Basic'
        '&amp;location=document"/></office:event-listeners></office:scripts>'
    )
    extra = [
        ("Basic/script-lc.xml", libraries),
        ("Basic/Standard/script-lb.xml", library),
        ("Basic/Standard/Module1.xml", module),
    ]
    make_odt(site.media / "macro.odt", scripts=scripts, extra=extra)
    _, image = site.make("macro.odt")
    assert image.size == (595, 420) and dark_share(image) > 0.0002
    assert not marker.exists()


class Listener:
    """A TCP listener on 127.0.0.1 that records every connection made to it."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close()


def test_linked_images_are_never_fetched(site):
    listener = Listener()
    try:
        url = f"http://127.0.0.1:{listener.port}/picture.png"
        document = docx.Document()
        document.add_paragraph("A linked picture follows")
        picture = io.BytesIO()
        Image.new("RGB", (20, 20), "red").save(picture, "PNG")
        document.add_picture(picture)
        relation = document.part.relate_to(url, RELATIONSHIP_TYPE.IMAGE, is_external=True)
        blip = document.element.body.findall(".//" + qn("a:blip"))[0]
        del blip.attrib[qn("r:embed")]
        blip.set(qn("r:link"), relation)
        document.save(site.media / "linked.docx")
        image_link = (
            '<text:p>A linked picture<draw:frame svg:width="2cm" svg:height="2cm" text:anchor-type="as-char">'
            f'<draw:image xlink:href="{url}" xlink:type="simple" xlink:show="embed" xlink:actuate="onLoad"/>'
            "</draw:frame></text:p>"
        )
        make_odt(site.media / "linked.odt", body=image_link)
        for name in ("linked.docx", "linked.odt"):
            _, image = site.make(name)
            assert dark_share(image) > 0.0002
        time.sleep(0.3)
        assert listener.connections == 0
    finally:
        listener.close()


def test_a_slow_conversion_is_killed_at_the_time_limit_while_other_requests_are_served(tmp_path, monkeypatch):
    # Each worker's temporary directory is under tmp_path, so a LibreOffice left behind
    # would show this test's path in its command line.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    site = Site(tmp_path, document_cache=str(tmp_path / "documents"), max_processing_seconds=4.0)
    try:
        document = docx.Document()
        for number in range(6000):  # about 6.5 s of LibreOffice here; its limit is 3 s
            document.add_paragraph(f"Paragraph {number} " + "lorem ipsum dolor sit amet " * 8)
        document.save(site.media / "long.docx")
        Image.new("RGB", (300, 200), "blue").save(site.media / "photo.jpg")
        photo = site.registrar.register("photo.jpg | fit 30x")
        long = site.registrar.register("long.docx | fit 100x")
        answers = {}

        def ask_for_the_document():
            answers["long"] = site.get(long.url)
            answers["long at"] = time.monotonic()

        thread = threading.Thread(target=ask_for_the_document)
        started = time.monotonic()
        thread.start()
        time.sleep(0.5)
        response = site.get(photo.url)
        served = time.monotonic()
        time.sleep(max(0.0, started + 1.5 - time.monotonic()))
        converting = _processes_mentioning(str(tmp_path))  # the check below can see one
        thread.join(timeout=30)
        assert converting, "no LibreOffice seen converting the document"
        assert response.status_int in (301, 302), response.text
        assert served < answers["long at"], "the photo waited for the document"
        assert answers["long"].status_int == 503
        assert "LibreOffice did not finish converting 'long.docx'" in answers["long"].text
        # 3 s of LibreOffice, after a worker start and the profile template (first use).
        assert 2.5 < answers["long at"] - started < 8, "not stopped at its time limit"
        assert _processes_mentioning(str(tmp_path)) == []
        assert list((tmp_path / "documents").glob("*.pdf")) == []
        assert list((tmp_path / "documents").glob("*.lock")) == [], "a failed conversion's lock was left"
        assert list((tmp_path / "documents" / "work").iterdir()) == []
        assert list(scratch.iterdir()) == []
    finally:
        site.close()


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                command = file.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in command and "soffice" in command:
            found.append(command)
    return found


def _convert_directly(source: Path, out: Path, to: str) -> None:
    """LibreOffice run plainly, as a user would, to make a fixture of an older format."""
    profile = out.parent / "profile"
    command = [
        soffice.find(),
        "--headless",
        "--norestore",
        f"-env:UserInstallation=file://{profile}",
        "--convert-to",
        to,
        "--outdir",
        str(out),
        str(source),
    ]
    environment = {"PATH": os.environ["PATH"], "HOME": str(out.parent), "LC_ALL": "C.UTF-8"}
    for _ in range(2):  # a new profile's first start asks for a restart (status 81)
        done = subprocess.run(command, env=environment, capture_output=True, timeout=60, check=False)
        if done.returncode == 0:
            return
    raise AssertionError(done.stderr.decode())


# ---- the cache directory, faults and leftovers ----------------------------------------------


def test_a_document_cache_under_a_directory_named_with_url_characters(tmp_path):
    cache = tmp_path / "a b#%41" / "documents"
    site = Site(tmp_path, document_cache=str(cache))
    try:
        make_docx(site.media / "a.docx")
        _, image = site.make("a.docx | fit 100x")
        assert image.size == (100, 129) and dark_share(image) > 0.0002
        assert len(list(cache.glob("profile-*"))) == 1, "the profile was not made where it was asked"
        assert not (tmp_path / "a bA").exists()
        assert list((cache / "work").iterdir()) == []
    finally:
        site.close()


def test_a_worker_killed_mid_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    documents = tmp_path / "documents"
    site = Site(tmp_path, document_cache=str(documents), max_processing_seconds=20.0)
    try:
        _long_docx(site.media / "long.docx", 6000)
        make_docx(site.media / "short.docx")
        long = site.registrar.register("long.docx | fit 100x")
        answers = {}
        thread = threading.Thread(target=lambda: answers.update(long=site.get(long.url)))
        thread.start()
        converting = []
        for _ in range(200):  # 20 s at most for the worker to start LibreOffice
            converting = _soffice_processes(str(documents / "work"))
            if converting:
                break
            time.sleep(0.1)
        assert converting, "no LibreOffice seen converting the document"
        worker = _parent(converting[0])
        os.kill(worker, signal.SIGKILL)
        thread.join(timeout=30)
        assert answers["long"].status_int == 503
        for _ in range(50):  # LibreOffice dies with its parent (pdeathsig)
            if not _soffice_processes(str(tmp_path)):
                break
            time.sleep(0.1)
        assert _soffice_processes(str(tmp_path)) == []
        assert list((documents / "work").iterdir()) != [], "the killed worker's directory is expected"
        # The next conversion sweeps what the killed one left.
        _, image = site.make("short.docx | fit 100x")
        assert image.size == (100, 129)
        left = sorted(path.name for path in documents.iterdir() if not path.name.startswith("profile-"))
        assert [Path(name).suffix for name in left] == [".lock", ".pdf", ""], left
        assert list((documents / "work").iterdir()) == []
        assert list(scratch.iterdir()) == []
    finally:
        site.close()


def _long_docx(path: Path, paragraphs: int) -> None:
    document = docx.Document()
    for number in range(paragraphs):  # 6000: about 6.5 s of LibreOffice here
        document.add_paragraph(f"Paragraph {number} " + "lorem ipsum dolor sit amet " * 8)
    document.save(path)


def _soffice_processes(text: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                command = file.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in command and "soffice" in command:
            found.append(int(pid))
    return found


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as file:
        return int(file.read().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize(
    "isolate_jobs", [pytest.param(True, id="worker"), pytest.param(False, id="in-process")]
)
def test_an_unwritable_document_cache_is_a_503_retried_not_a_refusal(tmp_path, isolate_jobs):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache's parent should be")
    site = Site(tmp_path, document_cache=str(blocker / "documents"), isolate_jobs=isolate_jobs)
    try:
        make_docx(site.media / "a.docx")
        representation = site.registrar.register("a.docx")
        response = site.get(representation.url)
        assert response.status_int == 503
        assert "the server's document cache is not writable" in response.text
        assert str(tmp_path) not in response.text
        job = site.store.get(representation.checksum)
        assert job.state == "failed" and job.retry_at is not None
    finally:
        site.close()


def test_libreoffice_that_cannot_start_is_a_503(tmp_path, monkeypatch):
    program = tmp_path / "soffice.bin"
    program.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 1\n")
    program.chmod(0o755)
    monkeypatch.setattr(soffice, "find", lambda: str(program))
    site = Site(tmp_path, document_cache=str(tmp_path / "documents"), isolate_jobs=False)
    try:
        make_docx(site.media / "a.docx")
        representation = site.registrar.register("a.docx")
        response = site.get(representation.url)
        assert response.status_int == 503
        assert "LibreOffice could not start" in response.text
        assert "cannot open display" not in response.text
        assert site.store.get(representation.checksum).retry_at is not None
    finally:
        site.close()


def test_a_profile_that_is_not_ready_by_the_deadline_says_so(tmp_path):
    program = tmp_path / "soffice.bin"
    program.write_text("#!/bin/sh\nsleep 30\n")
    program.chmod(0o755)
    with pytest.raises(TimeLimitError, match="LibreOffice did not finish setting up a new profile"):
        (tmp_path / "documents" / "work").mkdir(parents=True)
        soffice._template(str(program), str(tmp_path / "documents"), time.monotonic() + 0.5)


def test_the_profile_template_changes_with_its_settings(monkeypatch):
    before = soffice.template_name("/usr/lib/libreoffice/program/soffice.bin")
    monkeypatch.setattr(soffice, "_SETTINGS", (*soffice._SETTINGS, ("/a", "b", "c")))
    assert soffice.template_name("/usr/lib/libreoffice/program/soffice.bin") != before


def test_document_cache_bytes_bounds_the_kept_pdfs(tmp_path):
    with pytest.raises(ConfigError, match="document_cache_bytes: expected a positive whole number"):
        Config(document_cache_bytes=0)
    site = Site(tmp_path, document_cache=str(tmp_path / "documents"), document_cache_bytes=1)
    try:
        make_docx(site.media / "a.docx")
        _, image = site.make("a.docx | fit 100x")
        assert image.size == (100, 129) and dark_share(image) > 0.0002
        assert list((tmp_path / "documents").glob("*.pdf")) == []
    finally:
        site.close()


# ---- what refusals call a document -----------------------------------------------------------


def test_refusals_name_the_document_kind(site, monkeypatch):
    make_docx(site.media / "a.docx")
    with pytest.raises(
        ProcessingError, match="frame applies to video sources; 'a.docx' is an office document$"
    ):
        site.registrar.register("a.docx | frame 1")
    make_odt(site.media / "a.odt")
    with pytest.raises(ProcessingError, match="'a.odt' is an ODT document$"):
        site.registrar.register("a.odt | frame 1")
    monkeypatch.setattr(soffice, "find", lambda: None)
    with pytest.raises(UnsupportedSourceError, match="'a.docx' is an office document, and this server lacks"):
        site.registrar.register("a.docx | fit 10x")


# ---- network isolation ---------------------------------------------------------------------


def test_network_isolation_is_found_with_a_minimal_path_and_reported(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    soffice._sandbox.cache_clear()
    try:
        assert soffice.network_isolated(), "unshare -rn not found outside PATH"
        assert office.available()["libreoffice:network"] is True
        monkeypatch.setattr(soffice, "_works", lambda command: "unshare" not in command[0])
        soffice._sandbox.cache_clear()
        assert not soffice.network_isolated()
        assert office.available()["libreoffice:network"] is False
        reported = {found.engine: found.why for found in engines.missing()}
        assert "user namespaces" in reported["libreoffice:network"]
        assert "links from untrusted places blocked" in reported["libreoffice:network"]
    finally:
        soffice._sandbox.cache_clear()


# ---- local files a document links to -------------------------------------------------------


_MAGENTA = (255, 0, 255)


def _magenta_pixels(image: Image.Image) -> int:
    red, green, blue = image.convert("RGB").split()
    near = [
        Image.eval(red, lambda v: 255 if v > 200 else 0),
        Image.eval(green, lambda v: 255 if v < 80 else 0),
        Image.eval(blue, lambda v: 255 if v > 200 else 0),
    ]
    both = ImageChops.multiply(ImageChops.multiply(near[0], near[1]), near[2])
    return both.histogram()[255]


def test_local_files_a_document_links_to_are_never_drawn(site, tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (200, 200), _MAGENTA).save(secret)
    url = secret.as_uri()
    document = docx.Document()
    document.add_paragraph("A linked local picture follows")
    picture = io.BytesIO()
    Image.new("RGB", (20, 20), "white").save(picture, "PNG")
    document.add_picture(picture)
    relation = document.part.relate_to(url, RELATIONSHIP_TYPE.IMAGE, is_external=True)
    blip = document.element.body.findall(".//" + qn("a:blip"))[0]
    del blip.attrib[qn("r:embed")]
    blip.set(qn("r:link"), relation)
    document.save(site.media / "local.docx")
    make_odt(
        site.media / "local.odt",
        body=(
            '<text:p>A linked local picture<draw:frame svg:width="5cm" svg:height="5cm" '
            'text:anchor-type="as-char">'
            f'<draw:image xlink:href="{url}" xlink:type="simple" xlink:show="embed" xlink:actuate="onLoad"/>'
            "</draw:frame></text:p>"
        ),
    )
    (site.media / "local.rtf").write_text(
        r"{\rtf1\ansi{\fonttbl\f0 DejaVu Sans;}\f0\fs48 A picture:\par"
        r"{\field{\*\fldinst INCLUDEPICTURE \"" + str(secret) + r"\" \\d}{\fldrslt }}\par}"
    )
    for name in ("local.docx", "local.odt", "local.rtf"):
        _, image = site.make(name)
        assert dark_share(image) > 0.0002, name
        assert _magenta_pixels(image) == 0, f"{name} drew the linked local file"
