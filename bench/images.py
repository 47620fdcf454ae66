"""Thumbnail speed and memory: this project's pipeline against the decode floor, naive Pillow and pyvips.

What it measures
    A 24-megapixel (6000x4000) JPEG with photographic-like content (gradients, several
    octaves of smooth random fields, textured regions with sharp edges, fine grain;
    quality 90) is generated into a temporary directory. Each variant turns it into a
    ``fit 400x300`` JPEG (400x267):

    ours    ``produce(parse("big.jpg | fit 400x300 | format jpeg"), ...)``: the whole
            decode -> operations -> encode pipeline (parse and source resolution included).
    floor   libjpeg-turbo decoding the same file at the same scale and nothing else:
            Pillow ``Image.open``, ``draft("RGB", (400, 267))`` (the size our pipeline asks
            the decoder for, so the same 1/8 DCT scale) and ``load()``. No resize, no
            encode: what no Pillow-based pipeline can go below.
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

    Stages (``--stages N``, default 9 runs): where ours spends its time between the
    file and the bytes, from the real ``produce`` with the library calls it makes
    timed in place (source open and sniff, header, EXIF orientation, draft, decode,
    EXIF transpose, mode normalising, the Fit resample, the encoder; parse and source
    resolution around it; "other" is what is left: plan checks, error boundaries,
    Python glue). Each stage is timed where it is not inside another timed stage.
    Beside it, alternatives measured on the same decoded image (resample filter and
    reducing_gap, JPEG encoder settings) and the top of a cProfile of ``produce``.

    First request (``--requests N``, default 7 rounds): the cost of the whole first
    request for a new thumbnail in a warm server, not only of the pipeline. A
    ``FileProcessor`` (no application behind it) on SQLite and local storage in the
    temporary directory, its worker pool and database warmed by one untimed request;
    each round a ``Registrar`` registers ``big-N.jpg | fit 400x300 | format jpeg``
    (a hard link to the fixture, so every round is a new checksum on the same bytes)
    and ``webob.Request.blank(url).get_response(app)`` asks for the ``/_fp/`` URL,
    once with ``isolate_jobs=True`` (the default: the pipeline in a worker process) and
    once with ``isolate_jobs=False`` (in the web process), beside the pipeline alone
    (``produce``) in the same round. Inside the request the store's calls (generation,
    find, claim, get, complete), ``Processor.make`` (the pipeline, with the worker's
    round trip when isolated) and ``LocalStorage.put`` are timed in place; "fsync" is
    ``os.fsync`` of a file of the result's size in the same directory, timed apart.

Targets
    ours median time <= 1.10x the floor's and <= 0.9x pyvips' (same run)
    ours peak RSS <= 30 MiB, compared on the delta the work adds (the interpreter and
    its imports are not the pipeline's memory); the absolute peak is printed too.

Usage: ``python bench/images.py [--runs N] [--budget SECONDS] [--stages N] [--requests N]``
(``--stages 0`` or ``--requests 0`` leaves that part out)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFile, ImageFilter, ImageOps, JpegImagePlugin

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this working tree, installed or not

SIZE = (6000, 4000)
BOX = (400, 300)
EXPECTED = (400, 267)
INSTRUCTIONS = "big.jpg | fit 400x300 | format jpeg"
VARIANTS = ("ours", "floor", "naive", "pyvips")
FLOOR_TARGET = 1.10  # ours / floor
TIME_TARGET = 0.9  # ours / pyvips
RSS_TARGET_MIB = 30.0

Work = Callable[[], bytes | None]


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


def our_pipeline(path: Path, **settings) -> tuple[object, Callable[[str], bytes]]:
    """The Config for a fixture directory and a function making one text's result in-process."""
    from fileproc_wsgi.config import Config
    from fileproc_wsgi.instructions import parse
    from fileproc_wsgi.processing import produce
    from fileproc_wsgi.sources import Sources

    directory = path.parent
    config = Config(
        source_roots={"default": str(directory)},
        database_url=f"sqlite:///{directory / 'bench.db'}",
        storage=str(directory / "results"),
        **settings,
    )
    sources = Sources(config.source_roots)

    def make(text: str) -> bytes:
        instructions = parse(text)
        return produce(instructions, sources.resolve(instructions.source), "jpeg", config).data

    return config, make


def prepare_ours(path: Path) -> Work:
    _, make = our_pipeline(path)
    return lambda: make(INSTRUCTIONS)


def prepare_floor(path: Path) -> Work:
    def work() -> None:
        with Image.open(path) as image:
            image.draft("RGB", EXPECTED)
            image.load()

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
    "floor": prepare_floor,
    "naive": prepare_naive,
    "pyvips": prepare_pyvips,
}


def floor_size(path: Path) -> tuple[int, int]:
    """The size the floor decodes to (the DCT-scaled image the pipeline starts from)."""
    with Image.open(path) as image:
        image.draft("RGB", EXPECTED)
        return image.size


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
    output: bytes | None


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
    print(json.dumps({"before_kib": before, "peak_kib": peak_rss_kib(), "bytes": len(data or b"")}))


def measure_memory(variant: str, path: Path) -> Memory:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", variant, str(path)]
    completed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    return Memory(figures["before_kib"], figures["peak_kib"])


# -- stages of ours ----------------------------------------------------------------------------


class Stopwatch:
    """Time per stage, summed over the calls of the functions it wraps. A wrapped call made
    inside another wrapped call counts for the outer stage only, so stages never overlap."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._depth = 0

    def reset(self) -> None:
        self.totals = {}

    def wrap(self, stage: str, function: Callable) -> Callable:
        def timed(*args, **kwargs):
            if self._depth:
                return function(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.totals[stage] = self.totals.get(stage, 0.0) + time.perf_counter() - start
                self._depth -= 1

        return timed


@contextlib.contextmanager
def timed_in_place(watch: Stopwatch, targets: list[tuple[object, str, str]]) -> Iterator[None]:
    """``owner.name`` replaced by its timed self for each ``(owner, name, stage)``, then put back."""
    saved = []
    for owner, name, stage in targets:
        own = vars(owner).get(name) if isinstance(owner, type) else getattr(owner, name)
        saved.append((owner, name, own))
        setattr(owner, name, watch.wrap(stage, getattr(owner, name)))
    try:
        yield
    finally:
        for owner, name, own in reversed(saved):
            if own is None:
                delattr(owner, name)  # the class inherited it
            else:
                setattr(owner, name, own)


def pipeline_targets() -> list[tuple[object, str, str]]:
    """What ``produce`` calls on the way from a JPEG file to JPEG bytes, in order."""
    from fileproc_wsgi import engines, processing
    from fileproc_wsgi.engines import raster
    from fileproc_wsgi.sources import LocalSource

    return [
        (LocalSource, "open", "source open (open, fstat)"),
        (engines, "_engine", "sniff (read head, pick engine)"),
        (Image, "open", "header (Image.open)"),
        (raster, "_orientation", "EXIF orientation"),
        (JpegImagePlugin.JpegImageFile, "draft", "draft (choose DCT scale)"),
        (ImageFile.ImageFile, "load", "decode at 1/8 (load)"),
        (ImageOps, "exif_transpose", "EXIF transpose"),
        (raster, "normalise", "mode normalise"),
        (Image.Image, "resize", "resize (Fit, Lanczos)"),
        (processing, "encode", "encode (flatten + JPEG save)"),
    ]


@dataclass
class Stages:
    ms: dict[str, float]  # stage: median milliseconds
    total_ms: float
    runs: int


def measure_stages(path: Path, runs: int) -> Stages:
    """Medians per stage over ``runs`` runs of parse + resolve + produce, timed in place."""
    from fileproc_wsgi.instructions import parse
    from fileproc_wsgi.processing import produce
    from fileproc_wsgi.sources import Sources

    config, make = our_pipeline(path)
    make(INSTRUCTIONS)  # warm-up: imports, the engine module, caches
    sources = Sources(config.source_roots)
    targets = pipeline_targets()
    names = ["parse instructions", "resolve source", *(stage for _, _, stage in targets), "other (produce)"]
    samples: dict[str, list[float]] = {name: [] for name in names}
    totals: list[float] = []
    watch = Stopwatch()
    for _ in range(runs):
        watch.reset()
        with timed_in_place(watch, targets):
            start = time.perf_counter()
            instructions = parse(INSTRUCTIONS)
            parsed = time.perf_counter()
            source = sources.resolve(instructions.source)
            resolved = time.perf_counter()
            produce(instructions, source, "jpeg", config)
            done = time.perf_counter()
        inside = sum(watch.totals.values())
        found = {
            "parse instructions": parsed - start,
            "resolve source": resolved - parsed,
            **watch.totals,
            "other (produce)": done - resolved - inside,
        }
        for name in names:
            samples[name].append(found.get(name, 0.0))
        totals.append(done - start)
    return Stages(
        {name: statistics.median(values) * 1e3 for name, values in samples.items()},
        statistics.median(totals) * 1e3,
        runs,
    )


def median_ms(work: Callable[[], object], runs: int) -> float:
    """Median milliseconds of ``runs`` calls of ``work``, after one untimed call."""
    work()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _striped(image: Image.Image, size: tuple[int, int], threads: ThreadPoolExecutor) -> Image.Image:
    """A Lanczos resize made as two stripes of rows at once (Pillow releases the GIL). The
    filter reads past a stripe's box, so the result is the whole-image one, give or take
    one level where the box's float arithmetic rounds differently."""
    width, height = size
    scale = image.height / height
    cuts = (0, height // 2, height)

    def stripe(top: int, bottom: int) -> Image.Image:
        box = (0, top * scale, image.width, bottom * scale)
        return image.resize((width, bottom - top), Image.Resampling.LANCZOS, box=box)

    result = Image.new(image.mode, size)
    for top, piece in zip(cuts, threads.map(stripe, cuts[:-1], cuts[1:]), strict=False):
        result.paste(piece, (0, top))
    return result


def measure_alternatives(
    path: Path, runs: int
) -> tuple[list[tuple[str, float]], list[tuple[str, float, int]]]:
    """Resample choices on the decoded 1/8 image, and JPEG encoder settings on the result:
    ``[(what, ms)]`` and ``[(what, ms, bytes)]``."""
    with Image.open(path) as image:
        image.draft("RGB", EXPECTED)
        image.load()
        decoded = image.copy()
    lanczos = Image.Resampling.LANCZOS
    resamples = [
        (f"LANCZOS, reducing_gap=3.0 (ours) {decoded.width}x{decoded.height} -> {EXPECTED[0]}x{EXPECTED[1]}",
         lambda: decoded.resize(EXPECTED, lanczos, reducing_gap=3.0)),
        ("LANCZOS, no reducing_gap", lambda: decoded.resize(EXPECTED, lanczos)),
        ("BICUBIC", lambda: decoded.resize(EXPECTED, Image.Resampling.BICUBIC)),
        ("LANCZOS in two stripes of rows on two threads", lambda: _striped(decoded, EXPECTED, threads)),
        ("copy of the decoded image (what exif_transpose costs)", decoded.copy),
    ]  # fmt: skip
    with ThreadPoolExecutor(2) as threads:
        resampled = [(what, median_ms(work, runs)) for what, work in resamples]
    result = decoded.resize(EXPECTED, lanczos, reducing_gap=3.0)
    from fileproc_wsgi.encode import DEFAULT_QUALITY

    ours = {"quality": DEFAULT_QUALITY["jpeg"], "optimize": True}  # what ``format jpeg`` writes
    settings = [
        (f"quality={ours['quality']}, optimize=True (ours)", ours),
        ("  optimize=False", {**ours, "optimize": False}),
        ("  progressive=True", {**ours, "progressive": True}),
        ("  subsampling=4:4:4", {**ours, "subsampling": 0}),
        ("quality=85, optimize=True (the quality pyvips is asked for)", {**ours, "quality": 85}),
    ]

    def encoder(params: dict) -> Callable[[], bytes]:
        def work() -> bytes:
            buffer = io.BytesIO()
            result.save(buffer, "JPEG", **params)
            return buffer.getvalue()

        return work

    encoded = [(what, median_ms(encoder(params), runs), len(encoder(params)())) for what, params in settings]
    return resampled, encoded


def profile_top(path: Path, runs: int, count: int = 12) -> list[tuple[float, float, str]]:
    """``(tottime ms per run, calls per run, function)`` of the costliest functions in
    ``runs`` runs of ours under cProfile."""
    work = prepare_ours(path)
    work()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(runs):
        work()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, function), (_, calls, tottime, _, _) in stats.items():
        where = function if filename == "~" else f"{Path(filename).name}:{line} {function}"
        rows.append((tottime / runs * 1e3, calls / runs, where))
    return sorted(rows, reverse=True)[:count]


# -- first request -----------------------------------------------------------------------------

FIRST_MODES = ("isolated", "in-process")
STORE_CALLS = ("generation", "find", "claim", "get", "complete")


@dataclass
class Server:
    registrar: object
    app: object
    watch: Stopwatch
    results: Path


def _server(path: Path, mode: str) -> Server:
    from fileproc_wsgi.config import Config
    from fileproc_wsgi.middleware import FileProcessor
    from fileproc_wsgi.registrar import Registrar

    home = path.parent / f"first-{mode}"
    home.mkdir()
    config = Config(
        source_roots={"default": str(path.parent)},
        database_url=f"sqlite:///{home / 'fp.db'}",
        storage=str(home / "results"),
        isolate_jobs=mode == "isolated",
        background_jobs=0,  # the request makes the result, not a job started by the page
    )
    registrar = Registrar(config)
    # Not given the registrar: a paired one would start the job when it is registered.
    app = FileProcessor(None, config, store=registrar.store)
    watch = Stopwatch()
    for name in STORE_CALLS:
        setattr(app.store, name, watch.wrap(f"store.{name}", getattr(app.store, name)))
    app.storage.put = watch.wrap("storage.put", app.storage.put)
    app.processor.make = watch.wrap("Processor.make", app.processor.make)
    return Server(registrar, app, watch, home / "results")


def _fsync_ms(directory: Path, size: int) -> float:
    """``os.fsync`` of a new file of ``size`` bytes in ``directory``, as LocalStorage.put makes one."""
    handle, name = tempfile.mkstemp(dir=directory, prefix=".bench-", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(os.urandom(size))
            stream.flush()
            start = time.perf_counter()
            os.fsync(stream.fileno())
            return (time.perf_counter() - start) * 1e3
    finally:
        os.unlink(name)


@dataclass
class FirstRequests:
    pipeline_ms: float  # produce alone, in-process, same rounds
    register_ms: dict[str, float]
    request_ms: dict[str, float]
    parts_ms: dict[str, dict[str, float]]  # mode: part: median ms
    fsync_ms: float
    rounds: int


def measure_first_requests(path: Path, rounds: int) -> FirstRequests:
    """Each round: the pipeline alone, then per mode a new registration and its first request."""
    from webob import Request

    _, pipeline = our_pipeline(path)
    servers = {mode: _server(path, mode) for mode in FIRST_MODES}
    pipeline_times: list[float] = []
    register: dict[str, list[float]] = {mode: [] for mode in FIRST_MODES}
    requests: dict[str, list[float]] = {mode: [] for mode in FIRST_MODES}
    parts: dict[str, list[dict[str, float]]] = {mode: [] for mode in FIRST_MODES}
    fsyncs: list[float] = []
    for index in range(rounds + 1):  # round 0 warms the database, the worker pool, the caches
        start = time.perf_counter()
        data = pipeline(INSTRUCTIONS)
        pipeline_times.append(time.perf_counter() - start)
        for mode, server in servers.items():
            name = f"big-{mode}-{index}.jpg"
            os.link(path, path.parent / name)
            start = time.perf_counter()
            url = server.registrar.register(f"{name} | fit 400x300 | format jpeg").url
            register[mode].append(time.perf_counter() - start)
            server.watch.reset()
            start = time.perf_counter()
            response = Request.blank(url).get_response(server.app)
            requests[mode].append(time.perf_counter() - start)
            if response.status_int != 301:
                sys.exit(f"first request ({mode}): expected a 301 for {url}, got {response.status}")
            parts[mode].append(dict(server.watch.totals))
            fsyncs.append(_fsync_ms(server.results, len(data)))
    for server in servers.values():
        server.registrar.close()

    def median(values: list[float]) -> float:
        return statistics.median(values[1:]) * 1e3

    def medians(found: list[dict[str, float]]) -> dict[str, float]:
        names = {name for totals in found for name in totals}
        return {name: median([totals.get(name, 0.0) for totals in found]) for name in names}

    return FirstRequests(
        median(pipeline_times),
        {mode: median(times) for mode, times in register.items()},
        {mode: median(times) for mode, times in requests.items()},
        {mode: medians(found) for mode, found in parts.items()},
        statistics.median(fsyncs[len(FIRST_MODES) :]),
        rounds,
    )


# -- report ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def output_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def _ratio(value: float, baseline: float | None) -> str:
    return f"{value / baseline:.2f}" if baseline else "-"


def print_table(timings: dict[str, Timing], memory: dict[str, Memory], decoded: tuple[int, int]) -> None:
    header = (
        f"{'variant':<8} {'median ms':>10} {'best ms':>8} {'runs':>4} {'x floor':>8} {'x naive':>8} "
        f"{'x pyvips':>9} {'RSS before':>10} {'RSS peak':>9} {'delta':>6}  {'output':>8} {'bytes':>7}"
    )
    print(header)
    print("-" * len(header))
    floor = timings["floor"].median
    naive = timings["naive"].median
    pyvips = timings["pyvips"].median if "pyvips" in timings else None
    for name, timing in timings.items():
        mem = memory[name]
        if timing.output is None:  # the floor: decoded pixels, never encoded
            dimensions, size = f"{decoded[0]}x{decoded[1]}", "-"
        else:
            width, height = output_size(timing.output)
            dimensions, size = f"{width}x{height}", str(len(timing.output))
        print(
            f"{name:<8} {timing.median * 1e3:>10.1f} {timing.best * 1e3:>8.1f} {timing.runs:>4} "
            f"{timing.median / floor:>8.2f} {timing.median / naive:>8.2f} {_ratio(timing.median, pyvips):>9} "
            f"{mib(mem.before_kib):>10} {mib(mem.peak_kib):>9} {mib(mem.delta_kib):>6}  "
            f"{dimensions:>8} {size:>7}"
        )
    print("(times in ms; RSS columns in MiB; ratios are median / median; the floor's output is")
    print(" the decoded image it stops at)")


def print_checks(timings: dict[str, Timing], memory: dict[str, Memory]) -> None:
    ours, floor = timings["ours"], timings["floor"]
    pyvips = timings.get("pyvips")
    print()
    side = f"ours {ours.median * 1e3:.1f} ms | floor {floor.median * 1e3:.1f} ms"
    side += f" | pyvips {pyvips.median * 1e3:.1f} ms" if pyvips else " | pyvips not installed"
    print(f"side by side (medians): {side}")
    ratio = ours.median / floor.median
    print(
        f"ours / floor time (median): {ratio:.3f}x   target <= {FLOOR_TARGET:.2f}x   "
        f"{verdict(ratio <= FLOOR_TARGET)}   (best / best: {ours.best / floor.best:.3f}x; "
        f"above the floor: {(ours.median - floor.median) * 1e3:.1f} ms)"
    )
    if pyvips:
        ratio = ours.median / pyvips.median
        print(
            f"ours / pyvips time (median): {ratio:.2f}x   target <= {TIME_TARGET}x   "
            f"{verdict(ratio <= TIME_TARGET)}   (best / best: {ours.best / pyvips.best:.2f}x; "
            f"floor / pyvips: {floor.median / pyvips.median:.2f}x)"
        )
    else:
        print(f"ours / pyvips time: pyvips not installed   target <= {TIME_TARGET}x   n/a")
    print(f"ours / naive time (median): {ours.median / timings['naive'].median:.2f}x")
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
    sizes = {name: output_size(t.output) for name, t in timings.items() if t.output is not None}
    close = all(abs(w - EXPECTED[0]) <= 1 and abs(h - EXPECTED[1]) <= 1 for w, h in sizes.values())
    listed = ", ".join(f"{name} {w}x{h}" for name, (w, h) in sizes.items())
    print(f"outputs about {EXPECTED[0]}x{EXPECTED[1]}: {'yes' if close else 'NO'} ({listed})")


def print_stages(stages: Stages, floor_ms: float | None) -> None:
    print()
    print(f"stages of ours (medians of {stages.runs} runs, each stage timed in place):")
    for name, ms in stages.ms.items():
        print(f"  {name:<34} {ms:>7.2f} ms  {ms / stages.total_ms:>6.1%}")
    print(f"  {'total (parse + resolve + produce)':<34} {stages.total_ms:>7.2f} ms")
    decode = stages.ms.get("decode at 1/8 (load)", 0.0)
    print(f"  everything but the decode: {stages.total_ms - decode:.2f} ms", end="")
    print(f" (floor in the timed rounds: {floor_ms:.1f} ms)" if floor_ms else "")


def print_alternatives(resampled: list[tuple[str, float]], encoded: list[tuple[str, float, int]]) -> None:
    print()
    print("resampling the decoded image (median ms):")
    for what, ms in resampled:
        print(f"  {what:<62} {ms:>6.2f}")
    print("JPEG encoder on the 400x267 result (median ms, bytes):")
    for what, ms, size in encoded:
        print(f"  {what:<62} {ms:>6.2f} {size:>7}")


def print_profile(rows: list[tuple[float, float, str]], runs: int) -> None:
    print()
    print(f"cProfile of ours, {runs} runs (tottime per run; profiling slows Python code, not C):")
    for ms, calls, where in rows:
        print(f"  {ms:>7.2f} ms {calls:>7.0f} calls  {where}")


def print_first_requests(first: FirstRequests) -> None:
    print()
    print(
        f"first request for a new thumbnail in a warm server (medians of {first.rounds} rounds, ms; "
        f"SQLite, local storage):"
    )
    print(f"  {'':<38} " + " ".join(f"{mode:>11}" for mode in FIRST_MODES))
    rows = [
        "store.generation",
        "store.find",
        "store.claim",
        "Processor.make",
        "storage.put",
        "store.complete",
        "store.get",
    ]
    labels = {
        "store.generation": "store.generation (read once a second)",
        "store.find": "store.find (row, fencing check)",
        "store.claim": "store.claim (UPDATE + commit)",
        "Processor.make": "Processor.make (the pipeline)",
        "storage.put": "storage.put (write, fsync, rename)",
        "store.complete": "store.complete (UPDATE + commit)",
        "store.get": "store.get (rows read back)",
    }
    for part in rows:
        values = " ".join(f"{first.parts_ms[mode].get(part, 0.0):>11.2f}" for mode in FIRST_MODES)
        print(f"  {labels[part]:<38} {values}")
    other = {
        mode: first.request_ms[mode] - sum(first.parts_ms[mode].get(part, 0.0) for part in rows)
        for mode in FIRST_MODES
    }
    print(
        f"  {'other (WSGI, webob, locks)':<38} " + " ".join(f"{other[mode]:>11.2f}" for mode in FIRST_MODES)
    )
    print(f"  {'whole request':<38} " + " ".join(f"{first.request_ms[mode]:>11.2f}" for mode in FIRST_MODES))
    print(
        f"  {'registration before it (page render)':<38} "
        + " ".join(f"{first.register_ms[mode]:>11.2f}" for mode in FIRST_MODES)
    )
    print(f"  pipeline alone (produce in-process, same rounds): {first.pipeline_ms:.2f} ms")
    print(f"  fsync of a result-sized file in the same directory: {first.fsync_ms:.2f} ms")
    for mode in FIRST_MODES:
        request = first.request_ms[mode]
        print(
            f"  first request ({mode}) / pipeline alone: {request / first.pipeline_ms:.2f}x "
            f"(+{request - first.pipeline_ms:.1f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="timed rounds (default 9)")
    parser.add_argument(
        "--budget",
        type=float,
        default=25.0,
        help="seconds of timed rounds before stopping early (default 25)",
    )
    parser.add_argument(
        "--stages", type=int, default=9, help="runs for the stage breakdown (default 9; 0: none)"
    )
    parser.add_argument("--requests", type=int, default=7, help="first-request rounds (default 7; 0: none)")
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
        print_table(timings, memory, floor_size(path))
        print_checks(timings, memory)
        if args.stages > 0:
            print_stages(measure_stages(path, args.stages), timings["floor"].median * 1e3)
            print_alternatives(*measure_alternatives(path, args.stages))
            print_profile(profile_top(path, min(args.stages, 5)), min(args.stages, 5))
        if args.requests > 0:
            print_first_requests(measure_first_requests(path, args.requests))


if __name__ == "__main__":
    main()
