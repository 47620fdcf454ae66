"""The demo: sample images and a page of thumbnails made from them.

``fileproc demo`` writes a few sources (a photo-like landscape, a phone picture stored
sideways with an EXIF orientation, a transparent logo, an animated GIF, an SVG drawing,
a TIFF scan, a three-page PDF, a Word document and a short video), then serves a page
whose every thumbnail is registered while the page renders and made by the middleware
when the browser asks for it. The watermark entry shows the example plugin
(``examples/fileproc-watermark``; ``bin/dev demo`` installs it for the demo) and fails
softly, naming the step, where it is not installed.
"""

from __future__ import annotations

import html
import logging
import math
import os
import random

from PIL import Image, ImageDraw, ImageFilter

from . import samples
from .config import Config
from .errors import FileProcError
from .middleware import FileProcessor
from .registrar import Registrar

log = logging.getLogger(__name__)

EXAMPLES = (
    ("Fit in a box", "landscape.jpg | fit 400x300"),
    ("Fill a square, keep the top", "landscape.jpg | fill 300x300 gravity=north | format webp quality=80"),
    ("Fill around a focus point, AVIF", "landscape.jpg | fill 300x200 focus=0.8,0.3 | format avif"),
    ("EXIF orientation applied", "phone.jpg | fit 300x300"),
    ("Pad with a colour", "logo.png | pad 300x300 color=#e2e8f0"),
    ("Transparency kept, lossless WebP", "logo.png | fit 300x | format webp lossless"),
    ("Transparency flattened for JPEG", "logo.png | fit 300x | background #1e293b | format jpeg"),
    (
        "Crop in percent, resize, grayscale",
        "landscape.jpg | crop 10%,10%,50%,50% | resize 300x200 | grayscale",
    ),
    ("Rotate 15°, PNG", "landscape.jpg | fit 300x300 | rotate 15 color=#ffffff | format png"),
    ("Blur", "landscape.jpg | fit 300x | blur 4"),
    (
        "Sharpen and mirror, progressive JPEG",
        "landscape.jpg | fit 300x | sharpen 2 | flip horizontal | format jpeg quality=80 progressive",
    ),
    ("An animated GIF stays animated, as WebP", "animated.gif | fit 200x200 | format webp"),
    ("One frame of the animation", "animated.gif | page 2 | fit 200x200 | format png"),
    ("SVG drawn at the size asked", "badge.svg | fit 300x"),
    ("Second page of a TIFF", "scan.tiff | page 2 | fit 300x300"),
    ("First page of a PDF", "report.pdf | fit 300x300"),
    ("Landscape page 2 of the PDF, WebP", "report.pdf | page 2 | fit 300x300 | format webp"),
    ("Video frame at 2 s", "clip.mp4 | frame 2 | fit 300x"),
    ("Video frame at 75%, filled square", "clip.mp4 | frame 75% | fill 200x200"),
    ("First page of a Word document (LibreOffice)", "letter.docx | fit 300x300"),
    (
        "A step from a plugin: watermark",
        "landscape.jpg | fit 400x300 | watermark logo.png position=south-east scale=0.25",
    ),
    ("A missing source fails softly", "missing.jpg | fit 300x300"),
)


def make_samples(directory: str) -> None:
    """Write the demo's source images into ``directory`` (kept if already there)."""
    os.makedirs(directory, exist_ok=True)
    makers = {
        "landscape.jpg": _landscape,
        "phone.jpg": _phone,
        "logo.png": _logo,
        "animated.gif": _animation,
        "badge.svg": samples.write_drawing,
        "scan.tiff": _scan,
        "report.pdf": samples.write_document,
        "letter.docx": samples.write_letter,
        "clip.mp4": samples.write_clip,
    }
    for name, maker in makers.items():
        path = os.path.join(directory, name)
        if os.path.exists(path):
            continue
        try:
            maker(path)
        except ImportError as error:  # the video extra (PyAV) is not installed
            log.warning("fileproc demo: %s not written (%s); its thumbnails will fail softly", name, error)


def _scene(width: int, height: int, seed: int) -> Image.Image:
    rng = random.Random(seed)
    sky = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    sky = Image.merge(
        "RGB",
        [
            band.point(lambda v, k=k: 90 + v * k)
            for band, k in zip(sky.split(), (0.3, 0.45, 0.6), strict=True)
        ],
    )
    draw = ImageDraw.Draw(sky)
    draw.ellipse(
        [width * 0.7, height * 0.12, width * 0.82, height * 0.12 + width * 0.12], fill=(255, 214, 120)
    )
    for layer in range(4):
        base = height * (0.5 + 0.12 * layer)
        points: list[tuple[float, float]] = [(0, height)]
        for step in range(0, width + 40, 40):
            wave = math.sin(step / width * math.pi * (2 + layer) + rng.random()) * height * 0.06
            points.append((step, base + wave + rng.uniform(-8, 8)))
        points.append((width, height))
        shade = 40 + layer * 12
        draw.polygon(points, fill=(shade, 90 + layer * 25, 50 + layer * 10))
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    return Image.blend(sky, noise, 0.08).filter(ImageFilter.GaussianBlur(0.6))


def _landscape(path: str) -> None:
    _scene(2400, 1600, seed=1).save(path, quality=90)


def _phone(path: str) -> None:
    # A portrait picture stored the way phones do: pixels turned on their side, plus
    # EXIF orientation 6 ("turn 90° clockwise to display").
    upright = _scene(1200, 1600, seed=2)
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(path, quality=88, exif=exif)


def _logo(path: str) -> None:
    image = Image.new("RGBA", (800, 600), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([100, 100, 700, 500], radius=80, fill=(37, 99, 235, 255))
    draw.ellipse([260, 180, 540, 460], fill=(250, 204, 21, 230))
    image.save(path)


def _animation(path: str) -> None:
    frames = []
    for index, colour in enumerate(((220, 38, 38), (22, 163, 74), (37, 99, 235))):
        frame = Image.new("RGB", (400, 400), (248, 250, 252))
        ImageDraw.Draw(frame).ellipse([50 + index * 60, 100, 250 + index * 60, 300], fill=colour)
        frames.append(frame)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=300, loop=0)


def _scan(path: str) -> None:
    pages = []
    for number in (1, 2):
        page = Image.new("L", (1200, 1600), 250)
        draw = ImageDraw.Draw(page)
        for line in range(30):
            draw.rectangle([120, 150 + line * 44, 1080 - (line * 37 % 300), 170 + line * 44], fill=60)
        draw.rectangle([80, 80, 1120, 1520], outline=0, width=6 * number)
        pages.append(page)
    pages[0].save(path, save_all=True, append_images=pages[1:], compression="tiff_lzw")


def page_app(registrar: Registrar):
    """A bare WSGI app that renders the gallery, registering every thumbnail as it goes."""

    def application(environ, start_response):
        if environ.get("PATH_INFO", "/") != "/":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        cards = []
        for title, text in EXAMPLES:
            picture: str
            try:
                picture = registrar.register(text).render(alt=title)
            except FileProcError as error:
                picture = f'<p class="error">{html.escape(str(error))}</p>'
            cards.append(
                f"<figure>{picture}<figcaption><b>{html.escape(title)}</b>"
                f"<code>{html.escape(text)}</code></figcaption></figure>"
            )
        body = _PAGE.format(cards="\n".join(cards)).encode()
        start_response(
            "200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return application


def build(directory: str) -> FileProcessor:
    """The demo site: sample sources in ``directory``, everything else the embedded default."""
    media = os.path.join(directory, "media")
    make_samples(media)
    config = Config(source_roots={"default": media})
    registrar = Registrar(config)
    return FileProcessor(page_app(registrar), config, registrar=registrar)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fileproc_wsgi demo</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 2rem; background: #f8fafc; color: #0f172a; }}
main {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 1.5rem; }}
figure {{ margin: 0; padding: 1rem; background: white; border-radius: 12px;
         box-shadow: 0 1px 3px rgb(0 0 0 / .1); }}
img {{ max-width: 100%; height: auto; display: block; margin: 0 auto .75rem;
       background: repeating-conic-gradient(#e2e8f0 0 25%, #fff 0 50%) 0 0 / 16px 16px; }}
code {{ display: block; margin-top: .25rem; font-size: 13px; color: #334155; white-space: pre-wrap; }}
.error {{ color: #b91c1c; }}
</style></head>
<body><h1>fileproc_wsgi demo</h1>
<p>Every picture below was registered while this page rendered (no pixel touched). Its job
started in the background once the page was written, or on the browser's first request for
it; once made, this page links to the file itself (reload to see: no redirect).</p>
<main>
{cards}
</main></body></html>
"""
