"""What ``gravity=smart`` adds to making a thumbnail of a 12-megapixel photo.

What it measures
    A temporary directory holds one 4000x3000 JPEG (a textured, colourful subject off
    centre on a smooth gradient: the work the attention measure does is the same for any
    content of that size). The real pipeline (:func:`fileproc_wsgi.processing.produce`:
    decode with shrink-on-load, the steps, encode) makes ``fill WxH`` with
    ``gravity=east`` and with ``gravity=smart``, alternating, ``--rounds`` times each;
    the figure is the median of each and their difference. East, not center, is the
    baseline because smart crops about the same region: a busier crop costs the JPEG
    encoder more, which is the picture's cost, not the measure's. Also timed alone:
    :func:`fileproc_wsgi.operations.attention_box` on the image as ``fill`` receives it
    (already reduced by the decoder), which is all that smart adds.

Target
    smart - east <= 10 ms per thumbnail

Usage: ``python bench/smart_gravity.py [--rounds N] [--size WxH ...]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this working tree, installed or not

from fileproc_wsgi import engines  # noqa: E402
from fileproc_wsgi.config import Config  # noqa: E402
from fileproc_wsgi.instructions import parse  # noqa: E402
from fileproc_wsgi.operations import Fill, attention_box  # noqa: E402
from fileproc_wsgi.processing import produce  # noqa: E402
from fileproc_wsgi.sources import Sources  # noqa: E402

TARGET_MS = 10.0
SOURCE_SIZE = (4000, 3000)


def make_photo(path: Path) -> None:
    """A smooth gradient with a busy, colourful subject in its right third."""
    image = Image.linear_gradient("L").resize(SOURCE_SIZE).convert("RGB")
    draw = ImageDraw.Draw(image)
    rng = random.Random(12)
    for _ in range(3000):
        x, y = rng.randrange(2700, 3800), rng.randrange(800, 2400)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse([x, y, x + rng.randrange(10, 80), y + rng.randrange(10, 80)], fill=colour)
    image.save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--size", action="append", default=None, help="thumbnail size, e.g. 300x300")
    options = parser.parse_args()
    sizes = options.size or ["300x300", "800x800"]
    with tempfile.TemporaryDirectory() as directory:
        media = Path(directory)
        make_photo(media / "photo.jpg")
        config = Config(source_roots={"default": str(media)}, database_url=f"sqlite:///{media / 'fp.db'}")
        source = Sources.for_config(config).resolve("photo.jpg")
        width, height = SOURCE_SIZE
        print(f"Pillow {Image.__version__}; source {width}x{height} JPEG; {options.rounds} rounds")
        print(
            f"{'thumbnail':<12} {'east ms':>10} {'smart ms':>10} {'extra ms':>10} {'attention ms':>13}",
            end="",
        )
        print("  fill gets  smart crop (source pixels)")
        worst = 0.0
        for size in sizes:
            texts = {
                gravity: parse(f"photo.jpg | fill {size} gravity={gravity}") for gravity in ("east", "smart")
            }
            times: dict[str, list[float]] = {"east": [], "smart": []}
            for _ in range(options.rounds + 1):  # the first round warms caches and is dropped
                for gravity, instructions in texts.items():
                    start = time.perf_counter()
                    produce(instructions, source, "jpeg", config)
                    times[gravity].append(time.perf_counter() - start)
            east = statistics.median(times["east"][1:]) * 1000
            smart = statistics.median(times["smart"][1:]) * 1000
            with source.open(config.max_source_bytes) as handle:
                image = engines.decode(handle, "photo.jpg", texts["smart"], config).image
            fill = texts["smart"].steps[0]
            assert isinstance(fill, Fill)
            box = fill.crop_box(*image.size)
            alone = []
            for _ in range(options.rounds):
                start = time.perf_counter()
                attention_box(image, box[2] - box[0], box[3] - box[1])
                alone.append(time.perf_counter() - start)
            attention = statistics.median(alone) * 1000
            worst = max(worst, smart - east)
            left, top = attention_box(image, box[2] - box[0], box[3] - box[1])
            scale = width / image.width
            crop = f"x {left * scale:.0f}..{(left + box[2] - box[0]) * scale:.0f}"
            if top:
                crop = f"y {top * scale:.0f}..{(top + box[3] - box[1]) * scale:.0f}"
            print(
                f"{size:<12} {east:>10.1f} {smart:>10.1f} {smart - east:>10.1f} {attention:>13.2f}"
                f"  {image.width}x{image.height}  {crop}"
            )
        verdict = "met" if worst <= TARGET_MS else "NOT met"
        print(f"smart - east, worst: {worst:.1f} ms   target <= {TARGET_MS:g} ms   {verdict}")


if __name__ == "__main__":
    main()
