"""What an animated result costs against the first-frame still of the same source.

What it measures
    A real-ish animated GIF is generated into a temporary directory: 480x270, 48 frames
    of 40 ms (two seconds at 25 fps), a soft gradient with grain, a ball bouncing across
    and a bar growing, each frame quantised to its own 256-colour palette the way GIF
    makers do. Each variant runs ``produce()`` (decode -> steps -> encode, in this
    process, no store and no worker) for ``fit 240x``:

    still-gif    ``anim.gif | page 1 | fit 240x``: the first frame as a GIF, what every
                 animated source gave before animations were kept (the baseline)
    still-webp   ``anim.gif | page 1 | fit 240x | format webp``
    anim-gif     ``anim.gif | fit 240x``: the default output of a GIF source, animated
    anim-webp    ``anim.gif | fit 240x | format webp``: animated WebP
    anim-avif    not offered: the same 48 result frames written by Pillow as an AVIF
                 sequence (``save_all``, speed 6, quality 60), to show why

    Time: one untimed warm-up each, then the median of ``--runs`` runs taken in rounds
    (every variant once per round, so background load hits all alike). Memory: each
    variant runs once in a fresh subprocess, which reports its peak resident set
    (``VmHWM``) minus its resident set just before the work.

    ``--at-limit`` also makes a GIF of 500x500 x 400 frames (10^8 pixels, the default
    ``max_animation_pixels``) and measures the worst cases the limit allows: the result
    at full size (every result frame held until it is written), as GIF and WebP, and a
    240-pixel thumbnail, each in a fresh subprocess.

Usage: ``python bench/animations.py [--runs N] [--at-limit]``
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZE = (480, 270)
FRAMES = 48
DURATION = 40
VARIANTS = {
    "still-gif": ("anim.gif | page 1 | fit 240x", "gif"),
    "still-webp": ("anim.gif | page 1 | fit 240x | format webp", "webp"),
    "anim-gif": ("anim.gif | fit 240x", "gif"),
    "anim-webp": ("anim.gif | fit 240x | format webp", "webp"),
    "anim-avif": (None, "avif"),
}
BASELINE = "still-gif"
AT_LIMIT = {
    "full-gif": ("big.gif | fit 500x", "gif"),
    "full-webp": ("big.gif | fit 500x | format webp", "webp"),
    "thumb-webp": ("big.gif | fit 240x | format webp", "webp"),
}


def make_animation(path: Path, size: tuple[int, int], count: int, *, grain: bool = True) -> None:
    width, height = size
    rng = random.Random(12)
    background = Image.linear_gradient("L").rotate(30, expand=False).resize(size)
    backdrop = Image.merge(
        "RGB", (background, background.transpose(Image.Transpose.FLIP_LEFT_RIGHT), background)
    )
    if grain:
        noise = Image.effect_noise(size, 24).convert("RGB")
        backdrop = Image.blend(backdrop, noise, 0.15).filter(ImageFilter.SMOOTH)
    frames = []
    for index in range(count):
        frame = backdrop.copy()
        draw = ImageDraw.Draw(frame)
        phase = index / count
        x = int((width - 60) * abs(math.sin(math.pi * phase * 2)))
        y = int((height - 60) * abs(math.cos(math.pi * phase * 3)))
        draw.ellipse((x, y, x + 60, y + 60), fill=(230, 60 + rng.randrange(40), 40))
        draw.rectangle((10, height - 20, 10 + int((width - 20) * phase), height - 10), fill=(30, 30, 200))
        frames.append(frame.quantize(256, dither=Image.Dither.FLOYDSTEINBERG))
    first, *rest = frames
    first.save(path, save_all=True, append_images=rest, duration=DURATION, loop=0)


def run(directory: Path, variant: str, table: dict) -> bytes:
    from fileproc_wsgi.config import Config
    from fileproc_wsgi.instructions import parse
    from fileproc_wsgi.processing import produce
    from fileproc_wsgi.sources import Sources

    text, output = table[variant]
    config = Config(
        source_roots={"default": str(directory)},
        database_url=f"sqlite:///{directory / 'unused.db'}",
        storage=str(directory / "results"),
    )
    if text is None:  # Pillow's AVIF sequence of the result frames anim-webp makes
        return _avif_sequence(directory / "anim.gif")
    instructions = parse(text)
    source = Sources.for_config(config).resolve(instructions.source)
    return produce(instructions, source, output, config, deadline=time.monotonic() + 600).data


def _avif_sequence(path: Path) -> bytes:
    from fileproc_wsgi.operations import Fit

    frames, durations = [], []
    with Image.open(path) as image:
        for index in range(image.n_frames):
            image.seek(index)
            frames.append(Fit(240, None).apply(image.convert("RGB")))
            durations.append(image.info.get("duration", DURATION))
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="AVIF",
        save_all=True,
        append_images=frames[1:],
        duration=durations,
        quality=60,
        speed=6,
    )
    return buffer.getvalue()


def _resident_mib(key: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(variant: str, directory: str, limit: bool) -> None:
    table = AT_LIMIT if limit else VARIANTS
    import fileproc_wsgi.engines.raster  # noqa: F401 - imports are not the work's memory
    import fileproc_wsgi.processing  # noqa: F401

    before = _resident_mib("VmRSS")
    started = time.perf_counter()
    data = run(Path(directory), variant, table)
    seconds = time.perf_counter() - started
    print(
        json.dumps({"before": before, "peak": _resident_mib("VmHWM"), "seconds": seconds, "bytes": len(data)})
    )


def measure_memory(variant: str, directory: Path, *, limit: bool = False) -> dict:
    command = [sys.executable, __file__, "--child", variant, str(directory)] + (["--limit"] if limit else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def frames_of(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as image:
        return getattr(image, "n_frames", 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--at-limit", action="store_true")
    arguments = parser.parse_args()
    import PIL

    print(f"python {sys.version.split()[0]}, Pillow {PIL.__version__}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="fileproc-anim-bench-") as temporary:
        directory = Path(temporary)
        make_animation(directory / "anim.gif", SIZE, FRAMES)
        source_bytes = (directory / "anim.gif").stat().st_size
        print(f"source: GIF {SIZE[0]}x{SIZE[1]}, {FRAMES} frames of {DURATION} ms, {source_bytes} bytes")
        outputs = {variant: run(directory, variant, VARIANTS) for variant in VARIANTS}  # warm-up
        times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
        for _ in range(arguments.runs):
            for variant in VARIANTS:
                started = time.perf_counter()
                run(directory, variant, VARIANTS)
                times[variant].append((time.perf_counter() - started) * 1000)
        memory = {variant: measure_memory(variant, directory) for variant in VARIANTS}

        base_ms = statistics.median(times[BASELINE])
        base_bytes = len(outputs[BASELINE])
        header = ("variant", "frames", "median ms", "x still", "bytes", "x still", "+MiB")
        print("\n{:<11} {:>6} {:>10} {:>8} {:>8} {:>8} {:>6}".format(*header))
        print("-" * 64)
        for variant in VARIANTS:
            median = statistics.median(times[variant])
            data = outputs[variant]
            added = memory[variant]["peak"] - memory[variant]["before"]
            print(
                f"{variant:<11} {frames_of(data):>6} {median:>10.1f} {median / base_ms:>8.1f} "
                f"{len(data):>8} {len(data) / base_bytes:>8.1f} {added:>6.1f}"
            )
        webp, gif = len(outputs["anim-webp"]), len(outputs["anim-gif"])
        print(
            f"\nanimated WebP / animated GIF: {webp / gif:.2f}x the bytes, "
            f"{statistics.median(times['anim-webp']) / statistics.median(times['anim-gif']):.2f}x the time"
        )
        print(
            f"AVIF sequence / animated WebP: {len(outputs['anim-avif']) / webp:.2f}x the bytes, "
            f"{statistics.median(times['anim-avif']) / statistics.median(times['anim-webp']):.2f}x the time"
        )
        print("(+MiB: peak resident set minus the resident set before the work, in a fresh process)")

        if arguments.at_limit:
            make_animation(directory / "big.gif", (500, 500), 400, grain=False)
            print("\nat the limit: GIF 500x500 x 400 frames = 10^8 pixels (max_animation_pixels default)")
            for variant, (text, _) in AT_LIMIT.items():
                found = measure_memory(variant, directory, limit=True)
                print(
                    f"  {text:<36} {found['seconds']:6.1f} s  +{found['peak'] - found['before']:6.0f} MiB"
                    f"  {found['bytes']:>9} bytes"
                )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3], "--limit" in sys.argv[4:])
    else:
        main()
