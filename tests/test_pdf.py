"""The PDF engine through the real pipeline: sizes predicted from the page box, pages
rendered at the size the operations need, and every refusal with its reason.

The PDFs are written here, a few lines of PDF syntax each, so that every page box,
``/Rotate``, ``/CropBox`` and ``/Encrypt`` is exactly what the test says it is.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import hashlib
import io

import pypdfium2.raw
import pytest
from PIL import Image

from fileproc_wsgi import engines
from fileproc_wsgi.engines import pdf as pdf_engine
from fileproc_wsgi.errors import FileProcError, LimitError, ProcessingError, UnsupportedSourceError
from support import BLUE, GREEN, RED, close_to, colour_at, halves, register_in_a_fresh_process

WHITE = (255, 255, 255)
A4 = (595.276, 841.89)  # points: 210 x 297 mm


@dataclasses.dataclass(frozen=True)
class Page:
    width: float
    height: float
    content: str = ""
    extra: str = ""  # more page dictionary entries: /Rotate, /CropBox


def fill(colour: tuple[int, int, int], x: float, y: float, width: float, height: float) -> str:
    """A filled rectangle in PDF user space (origin at the bottom left)."""
    red, green, blue = (value / 255 for value in colour)
    return f"{red:g} {green:g} {blue:g} rg {x:g} {y:g} {width:g} {height:g} re f\n"


def pdf_bytes(pages: list[Page], *, trailer: str = "", encrypt=None) -> bytes:
    """A PDF file with one content stream per page and a correct cross-reference table.

    ``encrypt(number, data)`` encrypts the stream of object ``number`` (see
    :func:`standard_security`); ``trailer`` adds entries to the trailer dictionary.
    """
    objects: dict[int, bytes] = {}
    kids = []
    for position, page in enumerate(pages):
        page_number, content_number = 3 + 2 * position, 4 + 2 * position
        kids.append(f"{page_number} 0 R")
        objects[page_number] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {page.width:g} {page.height:g}] "
            f"/Contents {content_number} 0 R {page.extra} >>"
        ).encode()
        data = page.content.encode()
        if encrypt is not None:
            data = encrypt(content_number, data)
        objects[content_number] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(data), data)
    objects[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>".encode()
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for number in sorted(objects):
        offsets[number] = out.tell()
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, objects[number]))
    start = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for number in sorted(objects):
        out.write(b"%010d 00000 n \n" % offsets[number])
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R {trailer} >>\n".encode())
    out.write(f"startxref\n{start}\n%%EOF\n".encode())
    return out.getvalue()


_PASSWORD_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")
_FILE_ID = b"fileproc-test-id"


def _rc4(key: bytes, data: bytes) -> bytes:
    state, j = list(range(256)), 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out, i, j = bytearray(), 0, 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def standard_security(user: str, owner: str):
    """``(trailer entries, stream encrypter)`` for PDF's standard security handler,
    revision 2 (40-bit RC4; ISO 32000-1 §7.6.3, algorithms 1 to 4): the smallest real
    encryption there is. With an empty user password anyone may open the file."""
    pad = lambda password: (password.encode() + _PASSWORD_PAD)[:32]  # noqa: E731
    owner_entry = _rc4(hashlib.md5(pad(owner)).digest()[:5], pad(user))
    permissions = -4
    key = hashlib.md5(
        pad(user) + owner_entry + permissions.to_bytes(4, "little", signed=True) + _FILE_ID
    ).digest()[:5]
    trailer = (
        f"/Encrypt << /Filter /Standard /V 1 /R 2 /O <{owner_entry.hex()}> "
        f"/U <{_rc4(key, _PASSWORD_PAD).hex()}> /P {permissions} >> "
        f"/ID [<{_FILE_ID.hex()}> <{_FILE_ID.hex()}>]"
    )

    def encrypt(number: int, data: bytes) -> bytes:
        object_key = hashlib.md5(key + number.to_bytes(3, "little") + b"\0\0").digest()[:10]
        return _rc4(object_key, data)

    return trailer, encrypt


# Five pages, each a different shape, each with a colour where a test can find it.
DOCUMENT = [
    # A4 portrait, in its real (fractional) size: left half red, right half blue.
    Page(*A4, fill(RED, 0, 0, A4[0] / 2, A4[1]) + fill(BLUE, A4[0] / 2, 0, A4[0] / 2, A4[1])),
    # A4 landscape: top half green (PDF's y axis points up).
    Page(842, 595, fill(GREEN, 0, 297.5, 842, 297.5)),
    # Square: top-left quarter red.
    Page(500, 500, fill(RED, 0, 250, 250, 250)),
    # 400x200 turned a quarter clockwise: its left half, blue, becomes the top half.
    Page(400, 200, fill(BLUE, 0, 0, 200, 200), "/Rotate 90"),
    # Only the middle 200x200 is shown; its bottom-left quarter is red.
    Page(400, 400, fill(RED, 100, 100, 100, 100), "/CropBox [100 100 300 300]"),
]


@pytest.fixture
def document(site):
    (site.media / "doc.pdf").write_bytes(pdf_bytes(DOCUMENT))
    return site


@pytest.fixture
def renders(monkeypatch):
    """The pixel sizes PDFium was asked to render pages at, in order."""
    sizes = []
    render = pypdfium2.raw.FPDF_RenderPageBitmap

    def spy(bitmap, page, left, top, width, height, rotate, flags):
        sizes.append((width, height))
        return render(bitmap, page, left, top, width, height, rotate, flags)

    monkeypatch.setattr(pypdfium2.raw, "FPDF_RenderPageBitmap", spy)
    return sizes


def test_the_engine_is_available():
    # Installed with the test extra: a missing PDFium must fail here, not skip.
    assert engines.available()["pdf"] is True


@pytest.mark.parametrize(
    ("steps", "size", "colours"),
    [
        pytest.param("", (595, 842), [((0.25, 0.5), RED), ((0.75, 0.5), BLUE)], id="page-1-natural-size"),
        pytest.param(
            "page 1 | fit 300x", (300, 425), [((0.25, 0.5), RED), ((0.75, 0.5), BLUE)], id="a4-fit-width"
        ),
        pytest.param(
            "page 2 | fit 300x", (300, 212), [((0.5, 0.25), GREEN), ((0.5, 0.75), WHITE)], id="landscape"
        ),
        pytest.param(
            "page 3 | fill 100x100", (100, 100), [((0.25, 0.25), RED), ((0.75, 0.75), WHITE)], id="square"
        ),
        pytest.param(
            "page 4 | fit x200", (100, 200), [((0.5, 0.25), BLUE), ((0.5, 0.75), WHITE)], id="rotate-90-key"
        ),
        pytest.param("page 4", (200, 400), [((0.5, 0.25), BLUE), ((0.5, 0.75), WHITE)], id="rotated-natural"),
        pytest.param("page 5", (200, 200), [((0.25, 0.75), RED), ((0.75, 0.25), WHITE)], id="crop-box"),
        pytest.param(
            "page 2 | rotate 90 | fit 100x",
            (100, 142),
            [((0.75, 0.5), GREEN), ((0.25, 0.5), WHITE)],
            id="rotate-step-then-fit",
        ),
        pytest.param("page 1 | crop 0,0,100,100", (100, 100), [((0.5, 0.5), RED)], id="crop-in-points"),
        pytest.param(
            "page 1 | resize 100x50", (100, 50), [((0.25, 0.5), RED), ((0.75, 0.5), BLUE)], id="resize"
        ),
        pytest.param(
            "page 1 | pad 200x200 color=#00ff00",
            (200, 200),
            [((0.02, 0.5), GREEN), ((0.3, 0.5), RED), ((0.7, 0.5), BLUE)],
            id="pad",
        ),
        pytest.param(
            "page 2 | fill 90x160 | grayscale",
            (90, 160),
            [((0.5, 0.25), (150, 150, 150)), ((0.5, 0.75), WHITE)],
            id="fill-portrait-box-on-landscape",
        ),
    ],
)
def test_pages_come_out_at_the_predicted_size(document, steps, size, colours):
    representation, image = document.make(f"doc.pdf | {steps}" if steps else "doc.pdf")
    # Predicted at registration from the page box, and what the result really is.
    assert (representation.width, representation.height) == size
    assert image.size == size
    assert representation.content_type == "image/jpeg"
    for (x, y), colour in colours:
        assert close_to(colour_at(image, x, y), colour), (x, y, colour_at(image, x, y))


def test_page_1_is_the_default(document):
    _, default = document.make("doc.pdf | fit 100x")
    _, first = document.make("doc.pdf | page 1 | fit 100x")
    _, second = document.make("doc.pdf | page 2 | fit 100x")
    assert default.fp_bytes == first.fp_bytes
    assert default.size == (100, 142) and second.size == (100, 71)


@pytest.mark.in_process
@pytest.mark.parametrize(
    ("steps", "rendered"),
    [
        pytest.param("fit 300x", (300, 425), id="fit"),
        pytest.param("fit 100x100", (71, 100), id="fit-box"),
        pytest.param("page 2 | fill 100x100", (142, 100), id="fill-covers-the-box"),
        pytest.param("page 4 | rotate 90 | fit 100x", (50, 100), id="rotate-before-fit"),
        pytest.param("fit 40x | crop 0,0,20,20", (40, 57), id="fit-then-crop"),
        pytest.param("fit 40x | crop 0,0,40,57", (40, 57), id="fit-then-crop-to-the-edge"),
        pytest.param("", (595, 842), id="no-resize-natural"),
        pytest.param("crop 0,0,300,300 | fit 50x", (595, 842), id="crop-first-needs-points"),
        pytest.param("fit 2000x", (595, 842), id="no-enlargement"),
        pytest.param("upscale | fit 1190x", (1190, 1684), id="upscale-drawn-at-the-target"),
        pytest.param("resize 1000x1000", (1001, 1416), id="resize-drawn-to-cover-it"),
    ],
)
def test_pages_are_rendered_at_the_size_the_steps_need(document, renders, steps, rendered):
    representation, image = document.make(f"doc.pdf | {steps}" if steps else "doc.pdf")
    assert renders == [rendered]
    assert image.size == (representation.width, representation.height)


@pytest.mark.in_process
@pytest.mark.parametrize(
    ("width", "height", "steps"),
    [
        # Fractional page sizes and boxes whose other side lands on .5 or just below:
        # rounding the render up would be a pixel off the predicted size.
        pytest.param(*A4, "fit 123x", id="a4-123"),
        pytest.param(611.9, 792.4, "fit 307x", id="letter-ish"),
        pytest.param(1000, 3, "fit 333x", id="thin-strip"),
        pytest.param(300.5, 700.3, "fit x101", id="fit-height"),
        pytest.param(700, 433, "fit 99x99", id="box"),
        pytest.param(433, 700, "upscale | fit 99x99", id="box-with-upscale"),
        pytest.param(640.7, 480.2, "fill 77x33", id="fill"),
    ],
)
def test_predicted_size_holds_for_awkward_pages(site, renders, width, height, steps):
    (site.media / "odd.pdf").write_bytes(pdf_bytes([Page(width, height, fill(RED, 0, 0, width, height))]))
    representation, image = site.make(f"odd.pdf | {steps}")
    assert image.size == (representation.width, representation.height)
    (render,) = renders
    assert max(render) < max(round(width), round(height))  # rendered small, not shrunk
    assert close_to(colour_at(image, 0.5, 0.5), RED)


def test_an_upscaled_page_is_drawn_sharp_not_resampled(site):
    # A 40x30 pt label: red left half, blue right half; enlarged 15 times.
    label = pdf_bytes([Page(40, 30, fill(RED, 0, 0, 20, 30) + fill(BLUE, 20, 0, 20, 30))])
    (site.media / "label.pdf").write_bytes(label)
    representation, image = site.make("label.pdf | upscale | fit 600x")
    assert image.size == (representation.width, representation.height) == (600, 450)

    def smeared(picture: Image.Image) -> int:
        row = [colour_at(picture, (x + 0.5) / picture.width, 0.5) for x in range(picture.width)]
        return sum(1 for pixel in row if not (close_to(pixel, RED) or close_to(pixel, BLUE)))

    # The halves meet within a pixel or two, as PDFium draws the edge; the page drawn at
    # 40x30 and enlarged by Lanczos (what was done before) smears it over several.
    assert smeared(image) <= 2
    with pypdfium2.PdfDocument(label) as pdf:
        small = pdf[0].render(scale=1).to_pil()
    assert smeared(small.resize((600, 450), Image.Resampling.LANCZOS)) >= 8


def _encrypted() -> bytes:
    trailer, _ = standard_security(user="secret", owner="owner")
    return pdf_bytes([Page(100, 100)], trailer=trailer)


def _unsupported_encryption() -> bytes:
    return pdf_bytes([Page(100, 100)], trailer="/Encrypt << /Filter /SomeoneElsesHandler /V 1 /R 2 >>")


REFUSALS = [
    pytest.param(
        "doc.pdf",
        lambda: pdf_bytes(DOCUMENT[:3]),
        "page 7",
        ProcessingError,
        "page 7: 'doc.pdf' has only 3 page(s)",
        id="page-beyond-last",
    ),
    pytest.param(
        "secret.pdf",
        _encrypted,
        "",
        ProcessingError,
        "source 'secret.pdf' is an encrypted PDF that needs a password",
        id="encrypted",
    ),
    pytest.param(
        "odd.pdf",
        _unsupported_encryption,
        "",
        ProcessingError,
        "source 'odd.pdf' is encrypted in a way PDFium does not support",
        id="unknown-encryption",
    ),
    pytest.param(
        "cut.pdf",
        lambda: pdf_bytes(DOCUMENT)[:700],
        "",
        ProcessingError,
        "source 'cut.pdf' is a PDF file that PDFium cannot read (data format error)",
        id="truncated",
    ),
    pytest.param(
        "junk.pdf",
        lambda: b"%PDF-1.7\nthis is not a PDF after all\n",
        "",
        ProcessingError,
        "source 'junk.pdf' is a PDF file that PDFium cannot read (data format error)",
        id="header-only",
    ),
    pytest.param(
        "empty.pdf",
        lambda: pdf_bytes([]),
        "",
        ProcessingError,
        "source 'empty.pdf' is a PDF file that PDFium cannot read",
        id="no-pages",
    ),
    pytest.param(
        "script.pdf",
        lambda: b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n",
        "",
        UnsupportedSourceError,
        "source 'script.pdf' is a PostScript file",
        id="postscript-named-pdf",
    ),
    pytest.param(
        "figure.pdf",
        lambda: b"\xc5\xd0\xd3\xc6" + bytes(28) + b"%!PS-Adobe-3.0 EPSF-3.0\n",
        "",
        UnsupportedSourceError,
        "source 'figure.pdf' is an EPS file",
        id="eps-named-pdf",
    ),
]


@pytest.mark.parametrize(("name", "content", "steps", "error", "message"), REFUSALS)
def test_registration_refuses_what_the_header_shows(site, name, content, steps, error, message):
    # What a cheap look at the document reveals is an error while the template renders,
    # like a missing source: the page gets no <img> that could only ever fail.
    (site.media / name).write_bytes(content())
    with pytest.raises(error) as raised:
        site.registrar.register(f"{name} | {steps}" if steps else name)
    assert message in str(raised.value)
    assert "Traceback" not in str(raised.value)
    assert site.store.count_by_state() == {}


@pytest.mark.parametrize(("name", "content", "steps", "error", "message"), REFUSALS)
def test_processing_refuses_a_file_replaced_after_registration(site, name, content, steps, error, message):
    path = site.media / name
    path.write_bytes(pdf_bytes(DOCUMENT * 2))  # ten good pages when registered
    url = site.registrar.register(f"{name} | {steps} | fit 50x" if steps else f"{name} | fit 50x").url
    path.write_bytes(content())
    response = site.get(url)
    assert response.status_int == error.status == 422
    assert message in response.text
    assert "Traceback" not in response.text
    again = site.get(url)  # recorded: the same answer, without trying again
    assert (again.status_int, again.text) == (response.status_int, response.text)


# In a fresh web process: register each text (jobs isolated, as by default) and print its
# size or refusal, and whether PDFium was loaded.
def test_registration_reads_pages_in_a_worker_never_loading_pdfium(tmp_path):
    # A hostile PDF can crash PDFium: the web process that renders a template never loads
    # it. Sizes and refusals come from PDFium all the same, in a worker.
    (tmp_path / "doc.pdf").write_bytes(pdf_bytes(DOCUMENT))
    (tmp_path / "secret.pdf").write_bytes(_encrypted())
    expected = {
        "doc.pdf": [595, 842],
        "doc.pdf | page 4": [200, 400],  # /Rotate 90
        "doc.pdf | page 5 | fit 100x": [100, 100],  # the crop box
        "doc.pdf | page 9": "ProcessingError: page 9: 'doc.pdf' has only 5 page(s)",
        "secret.pdf": "ProcessingError: source 'secret.pdf' is an encrypted PDF that needs a password",
    }
    assert register_in_a_fresh_process(tmp_path, expected) == (expected, [])


def test_a_page_read_in_a_worker_is_checked_against_each_text_that_names_it(tmp_path):
    # The worker's read of a page is kept for every text naming that page; what each text
    # would draw it at is still that text's own verdict, in whichever order they come.
    (tmp_path / "big.pdf").write_bytes(pdf_bytes([Page(14400, 14400, fill(RED, 0, 0, 14400, 14400))]))
    over = "would render at 14400x14400 = 207360000 pixels, more than max_source_pixels=50000000"
    expected = {
        "big.pdf | fit 400x": [400, 400],
        "big.pdf": f"LimitError: page 1 of 'big.pdf' {over}",
        "big.pdf | fit 200x": [200, 200],
        "big.pdf | page 1 | fill 100x100": [100, 100],
    }
    settings = {"max_output_pixels": 10**9, "max_output_side": 16384}
    assert register_in_a_fresh_process(tmp_path, expected, **settings) == (expected, [])


def test_frame_is_refused_on_a_pdf(document):
    with pytest.raises(ProcessingError, match="frame applies to video sources; 'doc.pdf' is a PDF document"):
        document.registrar.register("doc.pdf | frame 2 | fit 50x")  # the format alone decides


@pytest.mark.in_process
@pytest.mark.parametrize(
    ("settings", "page", "steps", "status", "message", "size"),
    [
        pytest.param(
            {"max_source_pixels": 10_000},
            (200, 100),
            "",
            "registration",
            "page 1 of 'big.pdf' would render at 200x100 = 20000 pixels, more than max_source_pixels=10000",
            None,
            id="render-over-source-limit",
        ),
        pytest.param(
            {"max_source_pixels": 10_000}, (200, 100), "fit 50x", 200, "", (50, 25), id="small-render-is-fine"
        ),
        pytest.param(
            {},
            (14400, 14400),  # 200 inches square, the largest page PDF allows
            "",
            "registration",
            "the result would have 14400x14400 pixels, more than max_output_pixels=25000000",
            None,
            id="huge-page",
        ),
        pytest.param(
            {"max_output_pixels": 10**9, "max_output_side": 16384},
            (14400, 14400),
            "",
            "registration",
            "would render at 14400x14400 = 207360000 pixels, more than max_source_pixels=50000000",
            None,
            id="huge-page-source-limit",
        ),
        pytest.param({}, (14400, 14400), "fit 400x", 200, "", (400, 400), id="huge-page-thumbnail"),
        pytest.param(
            {"max_output_pixels": 5_000},
            (200, 100),
            "upscale | fit 1000x",
            "registration",
            "the result would have 1000x500 pixels, more than max_output_pixels=5000",
            None,
            id="output-over-limit",
        ),
    ],
)
def test_pixel_limits_apply_to_what_is_rendered(
    make_site, renders, settings, page, steps, status, message, size
):
    site = make_site(**settings)
    width, height = page
    (site.media / "big.pdf").write_bytes(pdf_bytes([Page(width, height, fill(RED, 0, 0, width, height))]))
    text = f"big.pdf | {steps}" if steps else "big.pdf"
    if status == "registration":  # the sizes are known from the page box: refused at once
        with pytest.raises(LimitError) as refused:
            site.registrar.register(text)
        assert message in str(refused.value)
        assert renders == []
        return
    response = site.request(text)
    assert response.status_int == status
    if size:
        assert Image.open(io.BytesIO(response.body)).size == size
    else:
        assert message in response.text
        assert renders == []  # refused before PDFium drew a pixel


def test_encrypted_pdf_without_a_user_password_is_rendered(site):
    # Encrypted so that only the owner may edit it: anyone may open it, and the page
    # content is decrypted on the way.
    trailer, encrypt = standard_security(user="", owner="owner")
    page = Page(200, 100, fill(RED, 0, 0, 100, 100) + fill(BLUE, 100, 0, 100, 100))
    (site.media / "locked.pdf").write_bytes(pdf_bytes([page], trailer=trailer, encrypt=encrypt))
    representation, image = site.make("locked.pdf | fit 100x")
    assert image.size == (representation.width, representation.height) == (100, 50)
    assert close_to(colour_at(image, 0.25, 0.5), RED) and close_to(colour_at(image, 0.75, 0.5), BLUE)


def test_a_file_cut_before_its_cross_reference_table_is_repaired(site):
    # PDFium rebuilds a lost cross-reference table by scanning the objects, as viewers
    # do; only a file that has lost the objects themselves is unreadable.
    data = pdf_bytes(DOCUMENT[:2])
    (site.media / "cut.pdf").write_bytes(data[: data.rindex(b"xref")])
    representation, image = site.make("cut.pdf | page 2 | fit 100x")
    assert image.size == (representation.width, representation.height) == (100, 71)
    assert close_to(colour_at(image, 0.5, 0.25), GREEN)


def test_pdf_written_by_pillow(site):
    # Scanned documents are images on pages: this one has two, in JPEG, 72 dpi.
    first, second = halves(600, 400), halves(300, 500, left=GREEN, right=RED)
    first.save(site.media / "scan.pdf", "PDF", resolution=72.0, save_all=True, append_images=[second])
    representation, image = site.make("scan.pdf | page 2 | fit 150x")
    assert (representation.width, representation.height) == image.size == (150, 250)
    assert close_to(colour_at(image, 0.25, 0.5), GREEN) and close_to(colour_at(image, 0.75, 0.5), RED)


def test_a_pdf_is_known_by_its_bytes_not_its_name(site):
    (site.media / "report.jpg").write_bytes(pdf_bytes(DOCUMENT[:1]))
    representation, image = site.make("report.jpg | fit 100x")
    assert image.size == (representation.width, representation.height) == (100, 142)
    assert close_to(colour_at(image, 0.25, 0.5), RED)


def _pdfium_functions():
    return {
        name: value
        for name, value in vars(pypdfium2.raw).items()
        if isinstance(value, ctypes._CFuncPtr) and not name.startswith("FPDF_InitLibrary")
    }


@pytest.mark.in_process
def test_every_pdfium_call_holds_the_lock(document, monkeypatch):
    # PDFium is not thread-safe: a call outside the lock (a page or bitmap left to a
    # garbage collector's finalizer included) could meet another thread inside PDFium.
    calls, outside = [], []

    def guarded(name, function):
        def call(*args):
            calls.append(name)
            if not pdf_engine._LOCK.locked():
                outside.append(name)
            return function(*args)

        return call

    for name, function in _pdfium_functions().items():
        monkeypatch.setattr(pypdfium2.raw, name, guarded(name, function))
    (document.media / "secret.pdf").write_bytes(_encrypted())
    document.make("doc.pdf | page 4 | fit 50x")
    document.make("doc.pdf | page 2")
    with pytest.raises(FileProcError):
        document.registrar.register("secret.pdf")
    with pytest.raises(FileProcError):
        document.registrar.register("doc.pdf | page 9")
    assert {
        "FPDF_LoadCustomDocument",
        "FPDF_RenderPageBitmap",
        "FPDF_ClosePage",
        "FPDF_CloseDocument",
    } <= set(calls)
    assert outside == []


def test_pages_render_from_many_threads_at_once(document):
    # The middleware processes in threads (waitress runs 8): each result is right.
    texts = [f"doc.pdf | page {1 + n % 5} | fit {40 + n}x" for n in range(24)]
    representations = [document.registrar.register(text) for text in texts]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(document.request, texts))
    for representation, response in zip(representations, responses, strict=True):
        assert response.status_int == 200, response.text
        image = Image.open(io.BytesIO(response.body))
        assert image.size == (representation.width, representation.height)
