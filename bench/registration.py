"""What registering a new text costs a fresh web process, for each source kind of issue 12.

What it measures
    Sources made here in a temporary directory (no network), registered through
    ``Registrar(Config(...)).register(text)`` on a migrated SQLite store there:
      jpeg    a 12 MP (4032x3024) JPEG: Pillow reads its header (the baseline)
      heic    a 12 MP HEIC from pillow-heif's encoder, tiled in 512 px squares as phones
              write it (one coded image when the encoder cannot tile)
      dng     a 12 MP DNG: 12-bit RGGB mosaic in a SubIFD, a 1024 px JPEG preview first,
              as cameras write it (written with tifffile; the preview's strip pointed at
              a JPEG, since tifffile writes JPEG only through imagecodecs)
      svg     an SVG with a viewBox, a few shapes and text
      jxl     a 12 MP JPEG XL from pillow_jxl's encoder (effort 1)
      docx    a one-page letter (``fileproc_wsgi.samples.write_letter``)
      gif     an animated GIF, 640x480, 24 frames
      pdf     a three-page scan (A4 pages at 150 dpi, JPEG images on them, written by Pillow)
      mp4     a 1280x720 MPEG-4 clip, 30 frames (written with PyAV)
      psd     a 2016x1512 Photoshop file (written with Wand)

    Each case runs in a fresh child process (``python -c``), one after the other and
    interleaved round by round, so a slow moment of the machine falls on every kind alike.
    A child imports ``fileproc_wsgi.registrar``, then times:
      first     building the Registrar and its first ``register`` of a new text: lazy
                imports of the engine, the schema check, the header read, the insert
      further   ``--runs`` more new texts of the same source (``fit 101x``, ``fit 102x``,
                ...), each timed; the median over every child
    and reports the native decoders found in its ``sys.modules`` afterwards (pillow_heif,
    rawpy, numpy, pillow_jxl, pillow_lunasvg, pypdfium2, wand, av: the web process should
    load none, ARCHITECTURE.md) and its peak RSS (``ru_maxrss``; a pool worker's is its
    own). A kind whose header is read by its library in a pool worker (camera raw:
    LibRaw; PDF: PDFium; video: FFmpeg; PSD: ImageMagick) is run twice: ``cold``, the
    worker started by the registration itself, and ``warm``, a worker started and ready
    before the clock starts (as on a site whose pool is already up). Which kinds need a
    worker is found, not assumed: a child says whether it started one. Peak RSS is the
    child's ``VmHWM``.

    Ratios are to the JPEG baseline measured in the same run. Information only: no target.

Usage: ``python bench/registration.py [--runs N]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy
import tifffile
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this working tree, installed or not

from fileproc_wsgi.samples import write_letter  # noqa: E402
from fileproc_wsgi.store import upgrade  # noqa: E402

WIDTH, HEIGHT = 4032, 3024
NATIVE = ["pillow_heif", "rawpy", "numpy", "pillow_jxl", "pillow_lunasvg", "pypdfium2", "wand", "av"]

# A child: argv = root, source name, pool ("cold" | "warm"), first text number, further count.
_CHILD = r"""
import json, sys, time
root, name, pool_mode = sys.argv[1:4]
number, further = int(sys.argv[4]), int(sys.argv[5])
import fileproc_wsgi.registrar
from fileproc_wsgi.config import Config
from fileproc_wsgi.registrar import Registrar

def text(k):
    # A new row each time, and a box under every source's width: no upscaling asked.
    return f"{name} | fit {20 + k % 500}x{20 + k // 500}"

if pool_mode == "warm":
    # A site whose pool is up: one worker started and through its imports before the clock.
    # The pool has no public "start one now"; its own spare-worker step is what a site runs.
    from fileproc_wsgi.pool import shared_pool
    pool = shared_pool()
    pool._spare()
    pool._wait_until_ready(pool._idle[-1])
started = time.perf_counter()
registrar = Registrar(Config(
    database_url=f"sqlite:///{root}/fp.db", storage=f"{root}/results",
    source_roots={"default": f"{root}/media"},
))
registrar.register(text(number))
first = (time.perf_counter() - started) * 1000
times = []
for k in range(number + 1, number + 1 + further):
    started = time.perf_counter()
    registrar.register(text(k))
    times.append((time.perf_counter() - started) * 1000)
registrar.close()
# This process's peak, from /proc (ru_maxrss would carry the parent's over from the fork).
with open("/proc/self/status") as status:
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
pool_module = sys.modules.get("fileproc_wsgi.pool")
worker = bool(pool_module and pool_module._pool and (pool_module._pool._idle or pool_module._pool._busy))
print(json.dumps({
    "first": first, "further": times, "worker": worker,
    "native": sorted(set(sys.modules) & set(json.loads(sys.stdin.read()))),
    "rss": rss,
}))
"""


def photo() -> Image.Image:
    """A 12 MP RGB picture: gradients and blotches, not a flat file. Smooth, since x265
    takes a minute over per-pixel noise at this size, and a header read never sees it."""
    across = Image.linear_gradient("L").rotate(90).resize((WIDTH, HEIGHT))
    down = Image.linear_gradient("L").resize((WIDTH, HEIGHT))
    blotches = Image.effect_noise((WIDTH // 8, HEIGHT // 8), 30).resize((WIDTH, HEIGHT))
    return Image.merge("RGB", (across, down, blotches))


def heic(picture: Image.Image) -> tuple[bytes, str]:
    import pillow_heif

    for layout, options in (("grid", {"tile_size": 512}), ("single", {})):
        buffer = io.BytesIO()
        try:
            # x265's fastest preset: the header a registration reads is the same.
            encoder = {"enc_params": {"preset": "ultrafast"}}
            pillow_heif.from_pillow(picture).save(buffer, quality=80, **encoder, **options)
        except (TypeError, ValueError, RuntimeError):
            continue  # this encoder does not tile: one coded image then
        return buffer.getvalue(), layout
    raise SystemExit("bench/registration.py: pillow-heif could not encode a HEIC")


def dng(picture: Image.Image, preview: int = 1024) -> bytes:
    """A camera's DNG of ``picture``: its 1024 px JPEG preview in the first directory, the
    sensor's 12-bit RGGB mosaic in a SubIFD."""
    rgb = numpy.asarray(picture, dtype=numpy.uint16) * 16
    mosaic = numpy.empty(rgb.shape[:2], numpy.uint16)
    for row, column, channel in ((0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 2)):
        mosaic[row::2, column::2] = rgb[row::2, column::2, channel]
    identity = (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1)  # 3x3 rationals
    camera = [
        (271, "s", 0, "Fileproc", True),  # Make
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50708, "s", 0, "Fileproc Bench", True),  # UniqueCameraModel
        (50721, "2i", 9, identity, True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral
    ]
    sensor = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
        (50717, "I", 1, 4095, True),  # WhiteLevel
    ]
    small = picture.resize((preview, preview * picture.height // picture.width))
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as tiff:
        tiff.write(
            numpy.asarray(small), photometric="rgb", subfiletype=1, subifds=1,
            rowsperstrip=small.height, extratags=camera,
        )  # fmt: skip
        tiff.write(mosaic, photometric=32803, subfiletype=0, extratags=sensor)
    data = bytearray(buffer.getvalue())
    # The preview as a JPEG appended at the end, its one strip pointed there.
    encoded = io.BytesIO()
    small.save(encoded, "JPEG", quality=90)
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tiff:
        tags = tiff.pages[0].tags
        at = {code: tags[code].valueoffset for code in (259, 262, 273, 279)}
    struct.pack_into("<H", data, at[259], 7)  # Compression: JPEG
    struct.pack_into("<H", data, at[262], 6)  # Photometric: YCbCr
    struct.pack_into("<I", data, at[273], len(data))  # StripOffsets
    struct.pack_into("<I", data, at[279], encoded.getbuffer().nbytes)  # StripByteCounts
    return bytes(data) + encoded.getvalue()


def jxl(picture: Image.Image) -> bytes:
    import pillow_jxl  # noqa: F401 - registers the plugin's writer in Pillow

    buffer = io.BytesIO()
    picture.save(buffer, "JXL", effort=1, quality=85)
    return buffer.getvalue()


SVG = b"""<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 800 600" width="800" height="600">
<rect width="800" height="600" fill="#eef"/><circle cx="400" cy="300" r="200" fill="#c33"/>
<path d="M100 500 L400 100 L700 500 Z" fill="none" stroke="#236" stroke-width="12"/>
<text x="400" y="560" font-size="48" text-anchor="middle">fileproc</text></svg>"""


def gif() -> bytes:
    frames = [
        Image.effect_mandelbrot((640, 480), (-2 + n / 40, -1.2, 1, 1.2), 40).convert("P") for n in range(24)
    ]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return buffer.getvalue()


def pdf(picture: Image.Image) -> bytes:
    """Three A4 pages at 150 dpi, a JPEG image on each, as a scanner writes them."""
    pages = [picture.resize((1240, 1754)).rotate(turn) for turn in (0, 2, 4)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "PDF", resolution=150.0, save_all=True, append_images=pages[1:])
    return buffer.getvalue()


def mp4(picture: Image.Image) -> bytes:
    import av

    frame = picture.resize((1280, 720))
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for index in range(30):
            shifted = frame.rotate(index)
            container.mux(stream.encode(av.VideoFrame.from_image(shifted)))
        container.mux(stream.encode())
    return buffer.getvalue()


def psd(picture: Image.Image) -> bytes:
    from wand.image import Image as WandImage

    small = picture.resize((WIDTH // 2, HEIGHT // 2))
    with WandImage.from_array(numpy.asarray(small)) as image:
        image.format = "psd"
        return image.make_blob()


def make_sources(media: Path) -> dict[str, str]:
    """Writes every source; returns case name -> what it is."""
    picture = photo()
    picture.save(media / "photo.jpg", quality=90)
    heic_data, layout = heic(picture)
    files = {
        "photo.heic": heic_data,
        "camera.dng": dng(picture),
        "logo.svg": SVG,
        "photo.jxl": jxl(picture),
        "loop.gif": gif(),
        "scan.pdf": pdf(picture),
        "clip.mp4": mp4(picture),
        "art.psd": psd(picture),
    }
    for name, data in files.items():
        (media / name).write_bytes(data)
    write_letter(str(media / "letter.docx"))
    sizes = {path.name: path.stat().st_size // 1024 for path in media.iterdir()}
    return {
        "photo.jpg": f"JPEG 12 MP, {sizes['photo.jpg']} KiB",
        "photo.heic": f"HEIC 12 MP {layout}, {sizes['photo.heic']} KiB",
        "camera.dng": f"DNG 12 MP + 1024 px JPEG preview, {sizes['camera.dng']} KiB",
        "logo.svg": f"SVG, {sizes['logo.svg']} KiB",
        "photo.jxl": f"JXL 12 MP, {sizes['photo.jxl']} KiB",
        "letter.docx": f"DOCX one page, {sizes['letter.docx']} KiB",
        "loop.gif": f"GIF 640x480 x24 frames, {sizes['loop.gif']} KiB",
        "scan.pdf": f"PDF 3 A4 pages (scans), {sizes['scan.pdf']} KiB",
        "clip.mp4": f"MP4 1280x720 x30 frames, {sizes['clip.mp4']} KiB",
        "art.psd": f"PSD 2016x1512, {sizes['art.psd']} KiB",
    }


class Texts:
    """Hands out text numbers no child has used, per source: every registration is new."""

    def __init__(self) -> None:
        self.used: dict[str, int] = {}

    def take(self, name: str, count: int) -> int:
        start = self.used.get(name, 0)
        self.used[name] = start + count
        return start


def child(root: Path, name: str, pool: str, number: int, further: int) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FILEPROC_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), name, pool, str(number), str(further)],
        input=json.dumps(NATIVE), capture_output=True, text=True, timeout=120, env=env, cwd=root,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"bench/registration.py: the child for {name} ({pool}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=5, help="fresh processes per case, and further texts in each (default 5)"
    )
    arguments = parser.parse_args()
    if not 1 <= arguments.runs <= 30:
        parser.error("--runs: 1 to 30")
    runs = arguments.runs

    with tempfile.TemporaryDirectory(prefix="fp-bench-registration-") as name:
        root = Path(name)
        media = root / "media"
        media.mkdir()
        made = time.perf_counter()
        labels = make_sources(media)
        made = time.perf_counter() - made
        upgrade(f"sqlite:///{root / 'fp.db'}")  # migrated first, as in production

        texts = Texts()
        cases = [(source, "cold") for source in labels]
        found: dict[tuple[str, str], list[dict]] = {case: [] for case in cases}
        measured = time.perf_counter()
        for round_ in range(runs):
            # Interleaved, so a slow moment of the machine falls on every kind alike, and
            # each round starts at another case, so none is always the first after a pause.
            shift = round_ % len(cases)
            for case in cases[shift:] + cases[:shift]:
                source, pool = case
                report = child(root, source, pool, texts.take(source, runs + 1), runs)
                found[case].append(report)
                if pool == "cold" and report["worker"] and (source, "warm") not in found:
                    # This kind's header is read in a worker: measure it with one ready, too.
                    warm = (source, "warm")
                    cases.insert(cases.index(case) + 1, warm)
                    found[warm] = [child(root, source, "warm", texts.take(source, runs + 1), runs)]
        measured = time.perf_counter() - measured

    baseline = found[("photo.jpg", "cold")]
    base_first = statistics.median(r["first"] for r in baseline)
    base_further = statistics.median(t for r in baseline for t in r["further"])
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; SQLite; {runs} fresh processes per case, "
        f"{runs} further texts in each; sources made in {made:.1f} s, measured in {measured:.1f} s"
    )
    print()
    header = (
        f"{'source':<44}{'pool':>6}{'first ms':>10}{'x jpeg':>8}{'further ms':>12}{'x jpeg':>8}"
        f"{'RSS MiB':>9}  native"
    )
    print(header)
    print("-" * (len(header) + 8))
    for (source, pool), reports in found.items():
        first = statistics.median(r["first"] for r in reports)
        further = statistics.median(t for r in reports for t in r["further"])
        rss = max(r["rss"] for r in reports)
        native = sorted({module for r in reports for module in r["native"]}) or ["none"]
        shown = pool if any(r["worker"] for r in reports) else "-"
        print(
            f"{labels[source]:<44}{shown:>6}{first:>10.1f}{first / base_first:>8.2f}"
            f"{further:>12.2f}{further / base_further:>8.2f}{rss:>9.0f}  {', '.join(native)}"
        )
    print()
    print("first: Registrar built + first register of a new text (lazy imports, schema check, header")
    print("read, insert), after `import fileproc_wsgi.registrar`; further: each later new text;")
    print("medians. pool: cold = the registration started the worker, warm = one was ready, - = none.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
