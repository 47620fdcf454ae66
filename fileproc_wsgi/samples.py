"""Sample documents and videos made from nothing, for the demo and the benchmarks.

``write_document`` writes a small vector PDF by hand (text in a standard font, filled
shapes, pages of different sizes), which is what thumbnails of real documents meet;
``write_clip`` encodes a short H.264 video whose picture changes every frame, through
PyAV; ``scribbled_pdf`` is a page that is slow to render. None needs a file from outside.
"""

from __future__ import annotations

import math
import random
import zlib

from PIL import Image, ImageDraw

# Pages as (width, height) in points: A4 portrait, a landscape slide, a square.
PAGES = ((595, 842), (842, 595), (500, 500))


def write_document(path: str, pages: tuple[tuple[int, int], ...] = PAGES) -> None:
    """A PDF with one page per size: a heading, a bar chart and lines of text."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in once the page objects are known
    page_list = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    kids = []
    for number, (width, height) in enumerate(pages, 1):
        stream = _page_content(number, width, height)
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] /Contents %d 0 R "
                b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (page_list, width, height, content, font)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % page_list
    objects[page_list - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % kid for kid in kids),
        len(kids),
    )

    with open(path, "wb") as file:
        file.write(_pdf(objects, root=catalog))


def scribbled_pdf(lines: int = 10_000, *, seed: int = 7) -> bytes:
    """One 600x800 pt page stroked as a single path of ``lines`` random lines: a few KB
    that PDFium rasterises in one native call, longer the more lines (300,000 take it
    about six seconds on 2 cores). For measuring renders and for a job that hangs."""
    rng = random.Random(seed)
    block = "\n".join(
        f"{rng.randint(0, 600)} {rng.randint(0, 800)} m {rng.randint(0, 600)} {rng.randint(0, 800)} l"
        for _ in range(1000)
    )
    content = zlib.compress(("1 w\n" + "\n".join([block] * max(1, lines // 1000)) + "\nS").encode())
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 600 800] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content) + content + b"\nendstream",
    ]
    return _pdf(objects, root=1)


def _pdf(objects: list[bytes], *, root: int) -> bytes:
    """A PDF file of numbered ``objects`` (1-based), with its cross-reference table."""
    data = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(data))
        data += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(data)
    data += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    data += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    data += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, root, xref)
    return bytes(data)


def _page_content(number: int, width: int, height: int) -> bytes:
    margin = 40
    lines = [
        b"0.12 0.16 0.23 rg",
        b"BT /F1 28 Tf %d %d Td (Page %d of the sample document) Tj ET" % (margin, height - 70, number),
    ]
    # A bar chart in four colours, as wide as the page allows.
    colours = (b"0.15 0.39 0.92", b"0.92 0.35 0.05", b"0.09 0.64 0.29", b"0.86 0.15 0.15")
    chart_width = width - 2 * margin
    bar = chart_width // 8
    for index in range(4):
        bar_height = (index + 2) * (height // 16)
        x = margin + index * 2 * bar
        lines.append(colours[index] + b" rg %d %d %d %d re f" % (x, margin + 60, bar, bar_height))
    lines.append(b"0.2 0.2 0.2 rg")
    text = b"BT /F1 11 Tf %d %d Td (Line %d: thumbnails of documents need no office suite.) Tj ET"
    for row in range(6):
        lines.append(text % (margin, height - 120 - row * 18, row + 1))
    return b"\n".join(lines)


def write_clip(path: str, *, width: int = 640, height: int = 360, seconds: float = 4.0, fps: int = 24):
    """An H.264 MP4 of a ball crossing a sky whose colour turns with time."""
    import av  # the video extra; only the demo and the benchmarks call this

    with av.open(path, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        total = int(seconds * fps)
        for index in range(total):
            frame = av.VideoFrame.from_image(_clip_picture(index / total, width, height))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _clip_picture(progress: float, width: int, height: int) -> Image.Image:
    hue = int(200 + 120 * progress) % 360
    picture = Image.new("RGB", (width, height), f"hsl({hue}, 60%, 55%)")
    draw = ImageDraw.Draw(picture)
    draw.rectangle((0, height * 3 // 4, width, height), fill="#2f6f3e")
    radius = height // 8
    x = int(radius + progress * (width - 2 * radius))
    y = int(height / 2 - math.sin(progress * math.pi) * height / 4)
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill="#facc15")
    draw.text((12, 12), f"t = {progress * 100:.0f}%", fill="white")
    return picture


def write_drawing(path: str) -> None:
    """An SVG badge: a gradient, a rounded frame and a star, sized by its width, height
    and viewBox as a designer's export is."""
    corners = [(index * math.pi / 5, radius) for index, radius in zip(range(10), [70, 28] * 5, strict=True)]
    points = " ".join(f"{160 + r * math.sin(a):.1f},{120 - r * math.cos(a):.1f}" for a, r in corners)
    svg = f"""<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="320" height="240" viewBox="0 0 320 240">
  <defs>
    <linearGradient id="sky" x1="0" y1="0" x2="1" y2="1">
      <stop offset="0" stop-color="#0ea5e9"/><stop offset="1" stop-color="#6366f1"/>
    </linearGradient>
  </defs>
  <rect x="8" y="8" width="304" height="224" rx="36" fill="url(#sky)"/>
  <rect x="8" y="8" width="304" height="224" rx="36" fill="none" stroke="#0f172a" stroke-width="6"/>
  <polygon points="{points}" fill="#facc15" stroke="#0f172a" stroke-width="4" stroke-linejoin="round"/>
  <circle cx="60" cy="190" r="18" fill="#f8fafc" opacity="0.8"/>
  <circle cx="260" cy="190" r="18" fill="#f8fafc" opacity="0.8"/>
</svg>
"""
    with open(path, "w", encoding="utf-8") as file:
        file.write(svg)


_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_DOCX_PARTS = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/word/document.xml" ContentType="application/'
        'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>'
    ),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
        'relationships/officeDocument" Target="word/document.xml"/></Relationships>'
    ),
}


def write_letter(path: str) -> None:
    """A one-page A4 Word document (DOCX) written as zipped XML: a coloured heading and
    paragraphs of text, what an office document's thumbnail usually shows."""
    import zipfile

    def run(text: str, *, size: int = 22, color: str = "1E293B", bold: bool = False) -> str:
        weight = "<w:b/>" if bold else ""
        return (
            f'<w:r><w:rPr>{weight}<w:color w:val="{color}"/><w:sz w:val="{size}"/></w:rPr>'
            f'<w:t xml:space="preserve">{text}</w:t></w:r>'
        )

    paragraphs = [run("Quarterly letter", size=56, color="2563EB", bold=True)]
    paragraphs += [run("Thumbnails of office documents, made from the first page.", size=28, color="EA580C")]
    sentence = "Every line of this page was typeset by LibreOffice and rendered by the PDF engine. "
    paragraphs += [run(f"{number}. " + sentence * 3) for number in range(1, 13)]
    body = "".join(f"<w:p>{content}</w:p>" for content in paragraphs)
    document = (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="{_W}"><w:body>'
        f'{body}<w:sectPr><w:pgSz w:w="11906" w:h="16838"/>'
        '<w:pgMar w:top="1440" w:right="1440" w:bottom="1440" w:left="1440"/></w:sectPr>'
        "</w:body></w:document>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in {**_DOCX_PARTS, "word/document.xml": document}.items():
            archive.writestr(name, content)
