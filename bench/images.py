"""Thumbnail speed and memory: this project's pipeline against naive Pillow and pyvips.

What it measures
    A 24-megapixel (6000x4000) JPEG with photographic-like content (gradients, several
    octaves of smooth random fields, textured regions with sharp edges, fine grain;
    quality 90) is generated into a temporary directory. Each variant turns it into a
    ``fit 400x300`` JPEG (400x267):

    ours    ``produce(parse("big.jpg | fit 400x300 | format jpeg"), ...)``: the whole
            decode -> operations -> encode pipeline (parse and source resolution included).
    naive   Pillow: open, ``resize((400, 267), LANCZOS)`` without ``draft``, save quality 85.
    pyvips  ``pyvips.Image.thumbnail(path, 400, height=300).write_to_buffer(".jpg[Q=85]")``
            with the libvips operation cache off (so every run really decodes) and
            libvips' default thread count.

    Time: one untimed warm-up each, then the median and best of ``--runs`` in-process
    runs, taken in rounds (every variant once per round, so background load hits all
    alike), fewer if the rounds use up ``--budget`` seconds. Memory: each variant runs once in
    a fresh subprocess (``python bench/images.py --child VARIANT PATH``), which reports
    its resident set size just before the work (after imports and setup) and its peak
    at the end (``VmHWM`` on Linux, because ``ru_maxrss`` is inherited across fork+exec
    from this parent; ``ru_maxrss`` elsewhere); "delta" is peak minus before-work.

Targets
    ours median time <= 0.8x pyvips median time
    ours peak RSS <= 30 MiB, compared on the delta the work adds (the interpreter and
    its imports are not the pipeline's memory); the absolute peak is printed too.

Usage: ``python bench/images.py [--runs N] [--budget SECONDS]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
SIZE = (6000, 4000)
BOX = (400, 300)
EXPECTED = (400, 267)
INSTRUCTIONS = "big.jpg | fit 400x300 | format jpeg"
VARIANTS = ("ours", "naive", "pyvips")
TIME_TARGET = 0.8  # ours / pyvips
RSS_TARGET_MIB = 30.0

Work = Callable[[], bytes]


# -- fixture -----------------------------------------------------------------------------------


def _random_rgb(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


def _value_noise(rng: random.Random, octaves: int = 9) -> Image.Image:
    """Random fields of 12x8 up to 3072x2048 cells upscaled smoothly, coarse octaves weighted most."""
    field = _random_rgb(rng, (12, 8)).resize(SIZE, Image.Resampling.BICUBIC)
    for octave in range(1, octaves):
        cells = (12 << octave, 8 << octave)
        layer = _random_rgb(rng, cells).resize(SIZE, Image.Resampling.BICUBIC)
        field = Image.blend(field, layer, 0.5 / (octave + 1))
    return field


def _gradients() -> Image.Image:
    """A sky-like backdrop: horizontal, vertical and radial gradients as R, G, B."""
    linear = Image.linear_gradient("L")
    red = linear.rotate(90).resize(SIZE, Image.Resampling.BICUBIC)
    green = linear.resize(SIZE, Image.Resampling.BICUBIC)
    blue = Image.radial_gradient("L").resize(SIZE, Image.Resampling.BICUBIC)
    return Image.merge("RGB", (red, green, blue))


def _edge_mask(rng: random.Random) -> Image.Image:
    """Hard-edged shapes (polygons, ellipses, rectangles) as a mask."""
    mask = Image.new("L", SIZE, 0)
    draw = ImageDraw.Draw(mask)
    width, height = SIZE
    for _ in range(40):
        x, y = rng.randrange(width), rng.randrange(height)
        w, h = rng.randrange(100, 1500), rng.randrange(100, 1200)
        shape = rng.choice(("polygon", "ellipse", "rectangle"))
        if shape == "polygon":
            corners = rng.randrange(3, 7)
            points = [(x + rng.randrange(-w, w), y + rng.randrange(-h, h)) for _ in range(corners)]
            draw.polygon(points, fill=255)
        elif shape == "ellipse":
            draw.ellipse((x, y, x + w, y + h), fill=255)
        else:
            draw.rectangle((x, y, x + w, y + h), fill=255)
    return mask


def _draw_lines(image: Image.Image, rng: random.Random) -> None:
    """Thin dark and light strokes: branches, wires, text-like high frequencies."""
    draw = ImageDraw.Draw(image)
    width, height = SIZE
    for _ in range(300):
        start = (rng.randrange(width), rng.randrange(height))
        end = (start[0] + rng.randrange(-800, 800), start[1] + rng.randrange(-800, 800))
        shade = rng.choice((rng.randrange(0, 60), rng.randrange(200, 256)))
        draw.line((start, end), fill=(shade, shade, shade), width=rng.randrange(1, 5))


def make_photo(path: Path, seed: int = 20240601) -> None:
    """A 6000x4000 quality-90 JPEG that compresses like a photograph, from Pillow alone."""
    rng = random.Random(seed)
    noise = _value_noise(rng)
    image = Image.blend(_gradients(), noise, 0.55)
    texture = noise.transpose(Image.Transpose.ROTATE_180).filter(
        ImageFilter.UnsharpMask(radius=4, percent=300, threshold=0)
    )
    image = Image.composite(texture, image, _edge_mask(rng))
    _draw_lines(image, rng)
    image = image.filter(ImageFilter.GaussianBlur(0.8))  # a lens is never perfectly sharp
    image = Image.blend(image, _random_rgb(rng, SIZE), 0.07)  # sensor grain
    image.save(path, "JPEG", quality=90)


# -- variants ----------------------------------------------------------------------------------


def prepare_ours(path: Path) -> Work:
    sys.path.insert(0, str(ROOT))  # measure this working tree, installed or not
    from fileproc_wsgi.config import Config
    from fileproc_wsgi.instructions import parse
    from fileproc_wsgi.processing import produce
    from fileproc_wsgi.sources import Sources

    directory = path.parent
    config = Config(
        source_roots={"default": str(directory)},
        database_url=f"sqlite:///{directory / 'bench.db'}",
        storage=str(directory / "results"),
    )
    sources = Sources(config.source_roots)

    def work() -> bytes:
        instructions = parse(INSTRUCTIONS)
        return produce(instructions, sources.resolve(instructions.source), "jpeg", config).data

    return work


def prepare_naive(path: Path) -> Work:
    def work() -> bytes:
        with Image.open(path) as image:
            small = image.resize(EXPECTED, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        small.save(buffer, "JPEG", quality=85)
        return buffer.getvalue()

    return work


def prepare_pyvips(path: Path) -> Work:
    import pyvips

    pyvips.cache_set_max(0)  # otherwise repeated runs could be answered from libvips' cache

    def work() -> bytes:
        return pyvips.Image.thumbnail(str(path), BOX[0], height=BOX[1]).write_to_buffer(".jpg[Q=85]")

    return work


PREPARE: dict[str, Callable[[Path], Work]] = {
    "ours": prepare_ours,
    "naive": prepare_naive,
    "pyvips": prepare_pyvips,
}


def pyvips_description() -> str | None:
    """``libvips X.Y.Z, N threads`` when pyvips imports, else None."""
    try:
        import pyvips
    except Exception:  # ImportError, or the binary library failing to load
        return None
    version = ".".join(str(pyvips.version(i)) for i in range(3))
    threads = pyvips.vips_lib.vips_concurrency_get() if hasattr(pyvips, "vips_lib") else "?"
    return f"libvips {version}, {threads} threads"


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Timing:
    median: float
    best: float
    runs: int
    output: bytes


@dataclass
class Memory:
    before_kib: int
    peak_kib: int

    @property
    def delta_kib(self) -> int:
        return self.peak_kib - self.before_kib


def time_variants(works: dict[str, Work], runs: int, budget: float) -> dict[str, Timing]:
    """One untimed warm-up each, then up to ``runs`` rounds or until ``budget`` seconds pass.

    A round runs every variant once, so a change in background load hits all of them alike.
    """
    outputs = {name: work() for name, work in works.items()}
    times: dict[str, list[float]] = {name: [] for name in works}
    deadline = time.perf_counter() + budget
    for _ in range(runs):
        for name, work in works.items():
            start = time.perf_counter()
            work()
            times[name].append(time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return {name: Timing(statistics.median(t), min(t), len(t), outputs[name]) for name, t in times.items()}


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def current_rss_kib() -> int:
    """Resident set size now (Linux ``/proc``), else the peak so far."""
    now = _proc_status_kib("VmRSS")
    return now if now is not None else peak_rss_kib()


def peak_rss_kib() -> int:
    """Peak resident set size of this process image.

    On Linux this is ``VmHWM``: ``ru_maxrss`` survives fork+exec there, so a child of a
    parent that once held the 24-megapixel fixture would report the parent's peak.
    Elsewhere ``ru_maxrss`` (bytes on macOS, KiB on the BSDs).
    """
    peak = _proc_status_kib("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def child(variant: str, path: Path) -> None:
    """Run one variant once in this fresh process and print its memory figures as JSON."""
    work = PREPARE[variant](path)
    before = current_rss_kib()
    data = work()
    print(json.dumps({"before_kib": before, "peak_kib": peak_rss_kib(), "bytes": len(data)}))


def measure_memory(variant: str, path: Path) -> Memory:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, str(path)]
    completed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    return Memory(figures["before_kib"], figures["peak_kib"])


# -- report ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def output_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def print_table(timings: dict[str, Timing], memory: dict[str, Memory]) -> None:
    header = (
        f"{'variant':<8} {'median ms':>10} {'best ms':>8} {'runs':>4} {'x naive':>8} {'x pyvips':>9} "
        f"{'RSS before':>10} {'RSS peak':>9} {'delta':>6}  {'output':>8} {'bytes':>7}"
    )
    print(header)
    print("-" * len(header))
    naive = timings["naive"].median
    pyvips = timings["pyvips"].median if "pyvips" in timings else None
    for name, timing in timings.items():
        mem = memory[name]
        width, height = output_size(timing.output)
        dimensions = f"{width}x{height}"
        versus_pyvips = f"{timing.median / pyvips:.2f}" if pyvips else "-"
        print(
            f"{name:<8} {timing.median * 1e3:>10.1f} {timing.best * 1e3:>8.1f} {timing.runs:>4} "
            f"{timing.median / naive:>8.2f} {versus_pyvips:>9} {mib(mem.before_kib):>10} "
            f"{mib(mem.peak_kib):>9} {mib(mem.delta_kib):>6}  {dimensions:>8} {len(timing.output):>7}"
        )
    print("(times in ms; RSS columns in MiB; ratios are median / median)")


def print_checks(timings: dict[str, Timing], memory: dict[str, Memory]) -> None:
    ours = timings["ours"]
    print()
    print(f"ours / naive time (median): {ours.median / timings['naive'].median:.2f}x")
    if "pyvips" in timings:
        ratio = ours.median / timings["pyvips"].median
        best = ours.best / timings["pyvips"].best
        print(
            f"ours / pyvips time (median): {ratio:.2f}x   target <= {TIME_TARGET}x   "
            f"{verdict(ratio <= TIME_TARGET)}   (best / best: {best:.2f}x)"
        )
    else:
        print(f"ours / pyvips time: pyvips not installed   target <= {TIME_TARGET}x   n/a")
    delta = memory["ours"].delta_kib / 1024
    print(
        f"ours peak RSS added by the work: {delta:.1f} MiB   target <= {RSS_TARGET_MIB:.0f} MiB   "
        f"{verdict(delta <= RSS_TARGET_MIB)}"
    )
    absolute = memory["ours"].peak_kib / 1024
    print(
        f"  note: compared on the delta (peak - RSS just before the work); the absolute peak is "
        f"{absolute:.1f} MiB ({verdict(absolute <= RSS_TARGET_MIB)} against the same 30 MiB), "
        f"most of it the interpreter and imports"
    )
    sizes = {name: output_size(t.output) for name, t in timings.items()}
    close = all(abs(w - EXPECTED[0]) <= 1 and abs(h - EXPECTED[1]) <= 1 for w, h in sizes.values())
    listed = ", ".join(f"{name} {w}x{h}" for name, (w, h) in sizes.items())
    print(f"outputs about {EXPECTED[0]}x{EXPECTED[1]}: {'yes' if close else 'NO'} ({listed})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="timed rounds (default 9)")
    parser.add_argument(
        "--budget",
        type=float,
        default=25.0,
        help="seconds of timed rounds before stopping early (default 25)",
    )
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return

    vips = pyvips_description()
    variants = [name for name in VARIANTS if name != "pyvips" or vips]
    with tempfile.TemporaryDirectory(prefix="fp-bench-images-") as directory:
        path = Path(directory) / "big.jpg"
        start = time.perf_counter()
        make_photo(path)
        print(
            f"fixture: {SIZE[0]}x{SIZE[1]} JPEG q90, {path.stat().st_size / 2**20:.1f} MiB, "
            f"made in {time.perf_counter() - start:.1f} s"
        )
        print(
            f"python {sys.version.split()[0]}, Pillow {Image.__version__}, "
            f"{vips or 'pyvips not installed'}, {os.cpu_count()} CPUs"
        )
        print(
            f"task: fit {BOX[0]}x{BOX[1]} -> JPEG; up to {args.runs} rounds of one run per variant "
            f"(budget {args.budget:.0f} s)"
        )
        print()
        timings = time_variants({name: PREPARE[name](path) for name in variants}, args.runs, args.budget)
        memory = {name: measure_memory(name, path) for name in variants}
    print_table(timings, memory)
    print_checks(timings, memory)


if __name__ == "__main__":
    main()
