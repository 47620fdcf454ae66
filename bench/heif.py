"""HEIF phone photos: the two readers this project measured, on the same files.

What it measures
    A 12 MP (4032x3024) HEIC made here with pillow-heif's encoder (x265, quality 80) from a
    noisy gradient, in three layouts, each to a JPEG 400 px wide:
      grid      tiled in 512 px squares, as iPhones write
      single    one coded image
      thumb     the grid, plus a 1024 px embedded thumbnail, as cameras write
    Readers, each through the same Pillow resize and JPEG encode:
      ours      ``produce(parse("photo.heic | fit 400x | format jpeg"), ...)``: the whole
                pipeline, the HEIF engine (pillow-heif, libheif 1.2x with libde265)
      wand      ImageMagick's HEIC coder through Wand (the engine used before; Debian 12's
                libheif 1.15): read the blob, export RGB, then the same resize and encode

    In-process, as in a server. One untimed warm-up each, then rounds (every variant once
    per round, so background load hits all alike): the median and best of ``--runs``,
    fewer if the rounds use up ``--budget`` seconds. The ratio is against ``wand``
    measured in the same run.

Target
    ours <= 0.8x wand on every layout (the reason the engine changed).

Usage: ``python bench/heif.py [--runs N] [--budget SECONDS]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy
import pillow_heif
from PIL import Image
from wand.image import Image as WandImage

from fileproc_wsgi.config import Config
from fileproc_wsgi.instructions import parse
from fileproc_wsgi.processing import produce
from fileproc_wsgi.sources import Sources

TARGET = 0.8  # ours / wand
WIDTH, HEIGHT = 4032, 3024

Work = Callable[[], bytes]


def photo() -> Image.Image:
    rng = numpy.random.default_rng(12)
    y, x = numpy.mgrid[0:HEIGHT, 0:WIDTH]
    planes = numpy.dstack([x * 255 // WIDTH, y * 255 // HEIGHT, (x + y) % 256]).astype(numpy.int16)
    planes += rng.integers(-12, 13, planes.shape, dtype=numpy.int16)  # sensor noise: not a flat file
    return Image.fromarray(numpy.clip(planes, 0, 255).astype(numpy.uint8), "RGB")


def heic(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, quality=80, **options)
    return buffer.getvalue()


def ours(directory: Path, name: str) -> Work:
    config = Config(
        source_roots={"default": str(directory)},
        database_url="sqlite://",
        storage=str(directory),
        isolate_jobs=False,
    )
    instructions = parse(f"{name} | fit 400x | format jpeg")
    source = Sources(config.source_roots).resolve(instructions.source)
    return lambda: produce(instructions, source, "jpeg", config).data


def wand(path: Path) -> Work:
    def run() -> bytes:
        data = path.read_bytes()
        with WandImage(blob=data, format="heic") as picture:
            picture.transform_colorspace("srgb")
            picture.depth = 8
            size = picture.size
            pixels = picture.make_blob("rgb")  # 8-bit samples copied out, as the old engine did
        image = Image.frombytes("RGB", size, pixels)
        image = image.resize((400, round(400 * image.height / image.width)), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=85)
        return buffer.getvalue()

    return run


def measure(variants: dict[str, Work], runs: int, budget: float) -> dict[str, list[float]]:
    for work in variants.values():
        work()  # warm-up: imports, first allocations
    times: dict[str, list[float]] = {name: [] for name in variants}
    deadline = time.monotonic() + budget
    for _ in range(runs):
        for name, work in variants.items():
            start = time.perf_counter()
            work()
            times[name].append(time.perf_counter() - start)
        if time.monotonic() > deadline:
            break
    return times


def report(title: str, times: dict[str, list[float]]) -> bool:
    print(f"\n{title} ({len(times['ours'])} rounds)")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"  {name:<6} median {medians[name] * 1000:7.1f} ms   best {min(values) * 1000:7.1f} ms")
    ratio = medians["ours"] / medians["wand"]
    met = ratio <= TARGET
    print(f"  ours / wand: {ratio:.2f}x   target <= {TARGET}x   {'met' if met else 'MISSED'}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed rounds per layout")
    arguments = parser.parse_args()
    print(f"pillow-heif {pillow_heif.__version__}, libheif {pillow_heif.libheif_version()}")
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        picture = photo()
        layouts = {
            "grid": heic(picture, tile_size=512),
            "single": heic(picture),
            "thumb": heic(picture, tile_size=512, thumbnails=[1024]),
        }
        met = True
        for layout, data in layouts.items():
            path = directory / f"{layout}.heic"
            path.write_bytes(data)
            variants = {"ours": ours(directory, path.name), "wand": wand(path)}
            title = f"12 MP HEIC ({layout}, {len(data) // 1024} KiB) -> 400 px JPEG"
            met &= report(title, measure(variants, arguments.runs, arguments.budget))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
