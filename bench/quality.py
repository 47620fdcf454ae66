"""Bytes at equal quality: this project's JPEG, WebP and AVIF thumbnails against pyvips' defaults.

What it measures
    Six 2400x1800 sources are made in a temporary directory. Three are photo-like JPEGs
    (quality 92): "scene" (bench/images.py's ``make_photo``: gradients, smooth random
    fields, hard-edged texture, strokes, grain), "portrait" (smooth gradients and coarse
    fields, a soft subject, light grain) and "foliage" (fine texture everywhere, strokes,
    heavy grain). Three are screenshot-like PNGs: "document" (DejaVu text on white,
    headings, links, rules), "dashboard" (flat panels, cards, buttons, a bar and a line
    chart, labels) and "code" (coloured monospace text on a dark editor, a gutter, a
    status bar). Each becomes a ``fit 400x300`` thumbnail, 400x300:

    ours     ``produce(parse("NAME | fit 400x300 | format F"), ...)``, the whole pipeline
             at the defaults of fileproc_wsgi/encode.py.
    pyvips   ``pyvips.Image.thumbnail(path, 400, height=300).write_to_buffer(".jpg")``,
             ``".webp"`` or ``".avif"``: libvips' defaults (JPEG Q 75, WebP Q 75,
             AVIF Q 50).

    Both are scored against one reference: Pillow's Lanczos resize of the whole decoded
    source to 400x300 (no draft). Metrics: SSIMULACRA2 (the ``ssimulacra2`` package, a
    Python port of libjxl's metric; 100 is identical, about 90 visually lossless, 70
    high quality, 50 medium) and SSIM (scikit-image, on RGB). Each pipeline's lossless
    thumbnail is scored too ("ceiling"): what the two resizes differ by, apart from the
    encoders. "As shipped" compares produce()'s output at the defaults with pyvips'.

    Equal quality: our lossless thumbnail (the same pipeline, ``format png``) is encoded
    with each setting below at qualities found by bisection over 1..100 (JPEG 1..95),
    plus the four just under the crossing (a metric is not monotonic in Q); the smallest file
    scoring at least pyvips' default output on both metrics is kept. A class's ratio is
    the sum of its three sources' bytes over pyvips' sum. Settings: the encoder of
    encode.py itself (``encode()``, marked ``*``), then Pillow with JPEG 4:2:0 / 4:4:4,
    optimised Huffman tables or not, progressive or not; WebP method 4 / 6; AVIF speed
    5 / 6 / 8, 4:2:0 / 4:4:4. Rows marked ``[own ref]`` do the same for encode.py with
    each pipeline scored against its own lossless thumbnail: the encoders alone.

    Encode time: the median of ``--runs`` encodes of each 400x300 thumbnail at the
    default quality, per setting, averaged over the sources (Pillow's AVIF encoder uses
    every CPU by default); libvips' AVIF encode of the same pixels beside it.

Targets
    with encode.py's settings, bytes at equal quality <= pyvips' bytes (ratio <= 1.00)
    for JPEG, WebP and AVIF, photo-like and screenshot-like sources alike
    AVIF encode time per 400x300 thumbnail: stated (no target)

Usage: ``python bench/quality.py [--runs N] [--quick]`` (about nine minutes on two cores;
``--quick`` takes one source of each class)
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this working tree, installed or not

SIZE = (2400, 1800)
BOX = (400, 300)
FORMATS = ("jpeg", "webp", "avif")
KINDS = ("photo", "screen")
PYVIPS_SUFFIX = {"jpeg": ".jpg", "webp": ".webp", "avif": ".avif"}
CHOSEN = "encode.py"


# -- sources -----------------------------------------------------------------------------------


def _font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A DejaVu face from the system's fonts, else Pillow's own default font at ``size``."""
    try:
        return ImageFont.truetype(name, size)
    except OSError:
        return ImageFont.load_default(size)


def _photo_module():
    import images  # bench/images.py, beside this script

    # Its generators draw at its module's SIZE (24 megapixels); a few are enough here.
    images.SIZE = SIZE
    return images


def make_scene(path: Path) -> None:
    _photo_module().make_photo(path, seed=1301)
    with Image.open(path) as image:  # make_photo saves at quality 90; all photos here at 92
        image.load()
    image.save(path, "JPEG", quality=92)


def make_portrait(path: Path) -> None:
    images = _photo_module()
    rng = random.Random(1302)
    image = Image.blend(images._gradients(), images._value_noise(rng, octaves=4), 0.45)
    subject = Image.new("L", SIZE, 0)
    ImageDraw.Draw(subject).ellipse((700, 250, 1700, 1900), fill=255)
    skin = Image.new("RGB", SIZE, (214, 160, 130))
    image = Image.composite(skin, image, subject.filter(ImageFilter.GaussianBlur(40)))
    image = image.filter(ImageFilter.GaussianBlur(3))  # shallow depth of field
    image = Image.blend(image, images._random_rgb(rng, SIZE), 0.04)
    image.save(path, "JPEG", quality=92)


def make_foliage(path: Path) -> None:
    images = _photo_module()
    rng = random.Random(1303)
    texture = images._value_noise(rng).filter(ImageFilter.UnsharpMask(radius=3, percent=400, threshold=0))
    image = Image.blend(texture, images._gradients(), 0.3)
    images._draw_lines(image, rng)
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    image = Image.blend(image, images._random_rgb(rng, SIZE), 0.12)  # high-ISO grain
    image.save(path, "JPEG", quality=92)


WORDS = (
    "the quick thumbnail pipeline decodes at reduced scale then resamples with a lanczos filter "
    "before encoding bytes for every visitor who opens the page on a slow network connection"
).split()


def _sentence(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count)).capitalize()


def make_document(path: Path) -> None:
    rng = random.Random(1304)
    image = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(image)
    body, bold, title = (
        _font("DejaVuSans.ttf", 28),
        _font("DejaVuSans-Bold.ttf", 34),
        _font("DejaVuSans-Bold.ttf", 64),
    )
    draw.rectangle((0, 0, SIZE[0], 110), fill=(36, 41, 47))
    draw.text((60, 28), "fileproc / docs", font=bold, fill="white")
    draw.rectangle((1780, 170, 2340, 1740), fill=(246, 248, 250), outline=(208, 215, 222), width=2)
    for row in range(24):
        draw.text((1810, 200 + row * 60), _sentence(rng, 3), font=body, fill=(9, 105, 218))
    draw.text((120, 170), "Bytes at equal quality", font=title, fill=(31, 35, 40))
    y = 280
    while y < 1700:
        if rng.random() < 0.15:
            draw.text((120, y + 20), _sentence(rng, 4), font=bold, fill=(31, 35, 40))
            draw.line((120, y + 75, 1700, y + 75), fill=(208, 215, 222), width=2)
            y += 100
            continue
        x = 120
        for word in _sentence(rng, 14).split():
            colour = (9, 105, 218) if rng.random() < 0.06 else (31, 35, 40)
            draw.text((x, y), word, font=body, fill=colour)
            x += draw.textlength(word + " ", font=body)
        y += 44
    image.save(path, "PNG")


def make_dashboard(path: Path) -> None:
    rng = random.Random(1305)
    image = Image.new("RGB", SIZE, (243, 244, 246))
    draw = ImageDraw.Draw(image)
    label, number, heading = (
        _font("DejaVuSans.ttf", 30),
        _font("DejaVuSans-Bold.ttf", 72),
        _font("DejaVuSans-Bold.ttf", 40),
    )
    draw.rectangle((0, 0, 360, SIZE[1]), fill=(17, 24, 39))
    for row, item in enumerate(("Overview", "Jobs", "Sources", "Storage", "Settings", "Logs")):
        if row == 1:
            draw.rectangle((0, 180 + row * 80 - 15, 360, 180 + row * 80 + 55), fill=(55, 65, 81))
        draw.ellipse((40, 180 + row * 80, 80, 220 + row * 80), fill=(99, 102, 241))
        draw.text((110, 180 + row * 80), item, font=label, fill=(229, 231, 235))
    draw.rectangle((360, 0, SIZE[0], 120), fill="white")
    draw.line((360, 120, SIZE[0], 120), fill=(229, 231, 235), width=3)
    draw.text((420, 38), "Thumbnails this week", font=heading, fill=(17, 24, 39))
    draw.rounded_rectangle((2040, 30, 2340, 95), 14, fill=(37, 99, 235))
    draw.text((2085, 44), "Export CSV", font=label, fill="white")
    colours = ((37, 99, 235), (16, 185, 129), (245, 158, 11), (239, 68, 68))
    for column, colour in enumerate(colours):
        left = 420 + column * 490
        draw.rounded_rectangle(
            (left, 180, left + 450, 440), 18, fill="white", outline=(229, 231, 235), width=3
        )
        draw.text(
            (left + 40, 210),
            ("Made", "Cached", "Pending", "Failed")[column],
            font=label,
            fill=(107, 114, 128),
        )
        draw.text((left + 40, 280), f"{rng.randrange(100, 99999):,}", font=number, fill=(17, 24, 39))
        draw.rectangle((left + 40, 390, left + 40 + rng.randrange(60, 370), 405), fill=colour)
    draw.rounded_rectangle((420, 500, 1840, 1740), 18, fill="white", outline=(229, 231, 235), width=3)
    for bar in range(14):
        height = rng.randrange(150, 950)
        draw.rectangle((500 + bar * 95, 1640 - height, 560 + bar * 95, 1640), fill=colours[bar % 2])
        draw.text((505 + bar * 95, 1660), f"{bar + 1:02}", font=label, fill=(107, 114, 128))
    draw.line(
        [(500 + step * 95, 1100 - rng.randrange(0, 450)) for step in range(14)], fill=(239, 68, 68), width=6
    )
    draw.rounded_rectangle((1900, 500, 2340, 1740), 18, fill="white", outline=(229, 231, 235), width=3)
    for row in range(14):
        y = 540 + row * 84
        draw.ellipse((1930, y, 1990, y + 60), fill=colours[row % 4])
        draw.text((2010, y + 12), _sentence(rng, 2)[:16], font=label, fill=(55, 65, 81))
    image.save(path, "PNG")


def make_code(path: Path) -> None:
    rng = random.Random(1306)
    image = Image.new("RGB", SIZE, (30, 30, 30))
    draw = ImageDraw.Draw(image)
    mono = _font("DejaVuSansMono.ttf", 28)
    draw.rectangle((0, 0, SIZE[0], 70), fill=(37, 37, 38))
    draw.rectangle((0, 0, 420, 70), fill=(30, 30, 30))
    draw.text((30, 18), "quality.py", font=mono, fill=(255, 255, 255))
    draw.rectangle((0, SIZE[1] - 50, SIZE[0], SIZE[1]), fill=(0, 122, 204))
    draw.text((30, SIZE[1] - 44), "main  Python 3.11  UTF-8  Ln 42, Col 7", font=mono, fill="white")
    palette = {
        "keyword": (86, 156, 214),
        "name": (220, 220, 170),
        "string": (206, 145, 120),
        "number": (181, 206, 168),
        "plain": (212, 212, 212),
        "comment": (106, 153, 85),
    }
    for line in range(43):
        y = 90 + line * 38
        draw.text((20, y), f"{line + 1:>4}", font=mono, fill=(133, 133, 133))
        x = 160 + 68 * rng.randrange(0, 4)
        if rng.random() < 0.12:
            draw.text((x, y), "# " + _sentence(rng, 6).lower(), font=mono, fill=palette["comment"])
            continue
        for _ in range(rng.randrange(2, 9)):
            kind = rng.choice(("keyword", "name", "string", "number", "plain", "plain"))
            token = {"string": f'"{rng.choice(WORDS)}"', "number": str(rng.randrange(1000))}.get(
                kind, rng.choice(WORDS)
            )
            draw.text((x, y), token, font=mono, fill=palette[kind])
            x += draw.textlength(token + " ", font=mono)
    image.save(path, "PNG")


@dataclass(frozen=True)
class Source:
    name: str  # the file's name
    kind: str  # "photo" or "screen"
    make: Callable[[Path], None]


SOURCES = (
    Source("scene.jpg", "photo", make_scene),
    Source("portrait.jpg", "photo", make_portrait),
    Source("foliage.jpg", "photo", make_foliage),
    Source("document.png", "screen", make_document),
    Source("dashboard.png", "screen", make_dashboard),
    Source("code.png", "screen", make_code),
)


# -- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One way of encoding an RGB image at quality Q: Pillow's parameters, or encode.py's
    own ``encode()`` when ``params`` is None."""

    format: str
    label: str
    params: dict | None = None

    def encode(self, image: Image.Image, quality: int) -> bytes:
        if self.params is None:
            from fileproc_wsgi.encode import encode
            from fileproc_wsgi.operations import Format

            return encode(image, self.format, Format(self.format, quality), None)
        buffer = io.BytesIO()
        image.save(buffer, self.format.upper(), quality=quality, **self.params)
        return buffer.getvalue()


SETTINGS = (
    Setting("jpeg", CHOSEN),
    Setting("jpeg", "4:2:0", {"subsampling": "4:2:0"}),
    Setting("jpeg", "4:2:0 optimize", {"subsampling": "4:2:0", "optimize": True}),
    Setting(
        "jpeg", "4:2:0 optimize progressive", {"subsampling": "4:2:0", "optimize": True, "progressive": True}
    ),
    Setting("jpeg", "4:4:4 optimize", {"subsampling": "4:4:4", "optimize": True}),
    Setting(
        "jpeg", "4:4:4 optimize progressive", {"subsampling": "4:4:4", "optimize": True, "progressive": True}
    ),
    Setting("webp", CHOSEN),
    Setting("webp", "method 4", {"method": 4}),
    Setting("webp", "method 6", {"method": 6}),
    Setting("avif", CHOSEN),
    Setting("avif", "speed 5", {"speed": 5}),
    Setting("avif", "speed 6", {"speed": 6}),
    Setting("avif", "speed 8", {"speed": 8}),
    Setting("avif", "speed 6 4:4:4", {"speed": 6, "subsampling": "4:4:4"}),
)


def chosen_settings() -> str:
    """encode.py's defaults, as stated there."""
    from fileproc_wsgi import encode

    quality = ", ".join(f"{name} {value}" for name, value in encode.DEFAULT_QUALITY.items())
    options = ", ".join(
        f"{name}: {' '.join(f'{key}={value}' for key, value in params.items())}"
        for name, params in encode.ENCODER_OPTIONS.items()
    )
    return f"quality {quality}; {options}"


# -- measuring ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    ssimulacra2: float
    ssim: float

    def at_least(self, other: Scores) -> bool:
        return self.ssimulacra2 >= other.ssimulacra2 and self.ssim >= other.ssim


@dataclass(frozen=True)
class Point:
    quality: int
    data: bytes
    scores: Scores


class Reference:
    """An RGB image that results are scored against."""

    def __init__(self, image: Image.Image) -> None:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        self.png = buffer.getvalue()
        self.pixels = np.asarray(image)

    @classmethod
    def of_source(cls, path: Path) -> Reference:
        """The 400x300 Lanczos resize of the whole decoded source."""
        with Image.open(path) as image:
            return cls(image.convert("RGB").resize(BOX, Image.Resampling.LANCZOS))

    @classmethod
    def of_result(cls, data: bytes) -> Reference:
        with Image.open(io.BytesIO(data)) as image:
            return cls(image.convert("RGB"))

    def score(self, data: bytes) -> Scores:
        from skimage.metrics import structural_similarity
        from ssimulacra2 import compute_ssimulacra2

        with Image.open(io.BytesIO(data)) as image:
            pixels = np.asarray(image.convert("RGB"))
        if pixels.shape != self.pixels.shape:
            raise ValueError(f"a {pixels.shape} result against a {self.pixels.shape} reference")
        ssim = structural_similarity(self.pixels, pixels, channel_axis=2, data_range=255)
        return Scores(float(compute_ssimulacra2(io.BytesIO(self.png), io.BytesIO(data))), float(ssim))


def equal_quality(setting: Setting, image: Image.Image, reference: Reference, target: Scores) -> Point | None:
    """The smallest encoding of ``image`` with ``setting`` that scores at least ``target``,
    None if even the highest quality tried does not."""
    points: dict[int, Point | None] = {}

    def good(quality: int) -> bool:
        if quality not in points:
            try:
                data = setting.encode(image, quality)
            except OSError:  # Pillow's optimised JPEG buffer is w*h bytes (2*w*h from Q 95)
                points[quality] = None
            else:
                points[quality] = Point(quality, data, reference.score(data))
        point = points[quality]
        return point is not None and point.scores.at_least(target)

    # Above JPEG Q 95 libjpeg only grows files (its own advice); AVIF and WebP go to 100.
    top = 95 if setting.format == "jpeg" else 100
    if not good(top):
        return None
    low, high = 0, top  # good(high); quality 0 stands for "not good"
    while high - low > 1:
        middle = (low + high) // 2
        if good(middle):
            high = middle
        else:
            low = middle
    for quality in range(max(1, high - 4), high):
        good(quality)
    passing = [point for point in points.values() if point and point.scores.at_least(target)]
    return min(passing, key=lambda point: len(point.data))


@dataclass
class Thumbnails:
    """One source's thumbnails: ours (lossless and per format) and pyvips' (the same)."""

    source: Source
    reference: Reference
    ours_image: Image.Image
    ours_lossless: bytes
    ours: dict[str, bytes]
    pyvips_lossless: bytes
    pyvips: dict[str, bytes]

    targets: dict[tuple[str, bool], tuple[Reference, Scores]] = field(default_factory=dict)

    def target(self, name: str, own: bool) -> tuple[Reference, Scores]:
        """What our ``name`` results are scored against, and pyvips' default ``name``
        result's scores to reach: against the one reference, or with ``own`` each against
        its own pipeline's lossless thumbnail (the encoders alone)."""
        if (name, own) not in self.targets:
            ours, theirs = self.reference, self.reference
            if own:
                ours, theirs = Reference(self.ours_image), Reference.of_result(self.pyvips_lossless)
            self.targets[name, own] = ours, theirs.score(self.pyvips[name])
        return self.targets[name, own]


def make_thumbnails(source: Source, directory: Path) -> Thumbnails:
    import pyvips

    from fileproc_wsgi.config import Config
    from fileproc_wsgi.instructions import parse
    from fileproc_wsgi.processing import produce
    from fileproc_wsgi.sources import Sources

    config = Config(
        source_roots={"default": str(directory)},
        database_url=f"sqlite:///{directory / 'unused.db'}",
        storage=str(directory / "results"),
    )
    sources = Sources.for_config(config)

    def ours(name: str) -> bytes:
        instructions = parse(f"{source.name} | fit {BOX[0]}x{BOX[1]} | format {name}")
        return produce(instructions, sources.resolve(instructions.source), name, config).data

    path = directory / source.name
    # Held in memory: a thumbnail read from a file streams once, and is written four times.
    vips = pyvips.Image.thumbnail(str(path), BOX[0], height=BOX[1]).copy_memory()
    lossless = ours("png")
    with Image.open(io.BytesIO(lossless)) as image:
        ours_image = image.convert("RGB")
    return Thumbnails(
        source=source,
        reference=Reference.of_source(path),
        ours_image=ours_image,
        ours_lossless=lossless,
        ours={name: ours(name) for name in FORMATS},
        pyvips_lossless=vips.write_to_buffer(".png"),
        pyvips={name: vips.write_to_buffer(PYVIPS_SUFFIX[name]) for name in FORMATS},
    )


def pyvips_avif_ms(image: Image.Image, runs: int) -> float:
    import pyvips
    from images import median_ms

    pixels = np.asarray(image)
    vips = pyvips.Image.new_from_memory(pixels.tobytes(), image.width, image.height, 3, "uchar")
    return median_ms(lambda: vips.write_to_buffer(".avif"), runs)


# -- report ------------------------------------------------------------------------------------


@dataclass
class Row:
    setting: Setting
    kind: str
    own: bool  # each scored against its own lossless thumbnail
    ours: int = 0
    pyvips: int = 0
    qualities: list[int] = field(default_factory=list)
    ours_scores: list[Scores] = field(default_factory=list)
    pyvips_scores: list[Scores] = field(default_factory=list)
    missing: int = 0
    encode_ms: float = 0.0

    @property
    def ratio(self) -> float:
        return self.ours / self.pyvips


def _mean(scores: list[Scores]) -> tuple[float, float]:
    if not scores:
        return float("nan"), float("nan")
    return statistics.fmean(s.ssimulacra2 for s in scores), statistics.fmean(s.ssim for s in scores)


ROW_HEADER = (
    f"{'format':<6} {'setting':<28} {'class':<6} {'ours B':>7} {'pyvips B':>8} {'ratio':>6} "
    f"{'Q':>7} {'s2 ours':>7} {'s2 vips':>7} {'ssim ours':>9} {'ssim vips':>9} {'enc ms':>7}"
)


def print_row(row: Row) -> None:
    s2_ours, ssim_ours = _mean(row.ours_scores)
    s2_vips, ssim_vips = _mean(row.pyvips_scores)
    span = f"{min(row.qualities)}-{max(row.qualities)}" if row.qualities else "-"
    ratio = f"{row.ratio:.2f}" if not row.missing else f"{row.missing} n/r"
    label = (
        ("* " if row.setting.label == CHOSEN else "") + row.setting.label + (" [own ref]" if row.own else "")
    )
    print(
        f"{row.setting.format:<6} {label:<28} {row.kind:<6} {row.ours:>7} {row.pyvips:>8} {ratio:>6} "
        f"{span:>7} {s2_ours:>7.2f} {s2_vips:>7.2f} {ssim_ours:>9.4f} {ssim_vips:>9.4f} {row.encode_ms:>7.1f}"
    )


def print_ceilings(thumbnails: list[Thumbnails]) -> None:
    print("Ceiling: each pipeline's lossless 400x300 thumbnail against the reference (SSIMULACRA2 / SSIM)")
    for thumbs in thumbnails:
        ours = thumbs.reference.score(thumbs.ours_lossless)
        vips = thumbs.reference.score(thumbs.pyvips_lossless)
        print(
            f"  {thumbs.source.name:<14} ours {ours.ssimulacra2:6.2f} / {ours.ssim:.4f}   "
            f"pyvips {vips.ssimulacra2:6.2f} / {vips.ssim:.4f}"
        )


def print_shipped(thumbnails: list[Thumbnails]) -> None:
    print("As shipped: produce() at encode.py's defaults against pyvips' defaults, summed per class")
    header = (
        f"{'format':<6} {'class':<6} {'ours B':>7} {'pyvips B':>8} {'ratio':>6} "
        f"{'s2 ours':>7} {'s2 vips':>7} {'ssim ours':>9} {'ssim vips':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in FORMATS:
        for kind in KINDS:
            group = [thumbs for thumbs in thumbnails if thumbs.source.kind == kind]
            if not group:
                continue
            ours = sum(len(thumbs.ours[name]) for thumbs in group)
            vips = sum(len(thumbs.pyvips[name]) for thumbs in group)
            s2_ours, ssim_ours = _mean([thumbs.reference.score(thumbs.ours[name]) for thumbs in group])
            s2_vips, ssim_vips = _mean([thumbs.target(name, False)[1] for thumbs in group])
            print(
                f"{name:<6} {kind:<6} {ours:>7} {vips:>8} {ours / vips:>6.2f} {s2_ours:>7.2f} "
                f"{s2_vips:>7.2f} {ssim_ours:>9.4f} {ssim_vips:>9.4f}"
            )


def equal_quality_row(setting: Setting, group: list[Thumbnails], runs: int, *, own: bool = False) -> Row:
    """``setting`` at equal quality on one class of sources, and its encode time at the
    default quality (not timed again with ``own``)."""
    from images import median_ms

    from fileproc_wsgi.encode import DEFAULT_QUALITY

    quality = DEFAULT_QUALITY[setting.format]
    row = Row(setting, group[0].source.kind, own)
    times = []
    for thumbs in group:
        image = thumbs.ours_image
        if not own:
            times.append(median_ms(lambda image=image: setting.encode(image, quality), runs))
        reference, target = thumbs.target(setting.format, own)
        point = equal_quality(setting, image, reference, target)
        if point is None:
            row.missing += 1
            continue
        row.ours += len(point.data)
        row.pyvips += len(thumbs.pyvips[setting.format])
        row.qualities.append(point.quality)
        row.ours_scores.append(point.scores)
        row.pyvips_scores.append(target)
    row.encode_ms = statistics.fmean(times) if times else float("nan")
    return row


def print_verdicts(rows: list[Row], thumbnails: list[Thumbnails], runs: int) -> None:
    from fileproc_wsgi.encode import DEFAULT_QUALITY

    vips_avif = statistics.fmean(pyvips_avif_ms(thumbs.ours_image, runs) for thumbs in thumbnails)
    chosen = [row for row in rows if row.setting.label == CHOSEN]
    ours_avif = statistics.fmean(
        row.encode_ms for row in chosen if row.setting.format == "avif" and not row.own
    )
    print(
        f"AVIF encode per 400x300 thumbnail at quality {DEFAULT_QUALITY['avif']}: "
        f"encode.py {ours_avif:.0f} ms, libvips' default {vips_avif:.0f} ms ({os.cpu_count()} CPUs)"
    )
    for row in chosen:
        if row.missing:
            ratio, met = f"{row.missing} source(s) never reach pyvips' quality", False
        else:
            ratio, met = f"{row.ratio:.2f}x", row.ratio <= 1.0
        against = "each against its own lossless thumbnail" if row.own else "against the one reference"
        print(
            f"{row.setting.format} {row.kind}: bytes at equal quality {ratio} ({against})   "
            f"target <= 1.00x   {'PASS' if met else 'MISS'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=5, help="timed encodes per thumbnail, setting (default 5)"
    )
    parser.add_argument("--quick", action="store_true", help="one source of each class, to try the script")
    args = parser.parse_args()

    import pyvips
    import skimage
    import ssimulacra2

    sources = [SOURCES[0], SOURCES[3]] if args.quick else list(SOURCES)
    print(
        f"python {sys.version.split()[0]}, Pillow {Image.__version__}, libvips "
        f"{'.'.join(str(pyvips.version(i)) for i in range(3))}, scikit-image {skimage.__version__}, "
        f"ssimulacra2 {ssimulacra2.__version__}, {os.cpu_count()} CPUs"
    )
    print(f"encode.py: {chosen_settings()}")
    with tempfile.TemporaryDirectory(prefix="fp-bench-quality-") as directory:
        start = time.perf_counter()
        for source in sources:
            source.make(Path(directory) / source.name)
        print(f"sources: {len(sources)} of {SIZE[0]}x{SIZE[1]}, made in {time.perf_counter() - start:.1f} s")
        thumbnails = [make_thumbnails(source, Path(directory)) for source in sources]
    print()
    print_ceilings(thumbnails)
    print()
    print_shipped(thumbnails)
    print()
    print("At equal quality: the smallest of ours scoring >= pyvips' default on both metrics, per class")
    print("(Q: the qualities found; n/r: sources never reaching pyvips'; enc ms: at the default quality)")
    print(ROW_HEADER)
    print("-" * len(ROW_HEADER))
    rows = []
    chosen = [setting for setting in SETTINGS if setting.label == CHOSEN]
    for setting, own in [(setting, False) for setting in SETTINGS] + [(setting, True) for setting in chosen]:
        for kind in KINDS:
            group = [thumbs for thumbs in thumbnails if thumbs.source.kind == kind]
            if group:
                rows.append(equal_quality_row(setting, group, args.runs, own=own))
                print_row(rows[-1])
    print()
    print_verdicts(rows, thumbnails, args.runs)


if __name__ == "__main__":
    main()
