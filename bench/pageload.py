"""Page load in a real browser: a gallery by fileproc_wsgi, easy-thumbnails and sorl-thumbnail.

What it measures
    A gallery is made once in a temporary directory (or ``--gallery DIR``, kept and
    reused): ``--photos`` photo-like JPEGs of 4000x3000 (12 MP, quality 90; drawn by
    ``bench/images.py``'s ``make_photo``: gradients, smooth random fields, texture,
    strokes, grain; a few drawn, the rest flipped and with channels swapped) and
    ``--pngs`` 1600x1200 PNGs with soft-edged transparency. The same page shows each as a
    ``fit 300x225`` thumbnail, with width, height, alt, ``loading="lazy"`` (fileproc's
    default; ``--loading eager`` for all) and ``decoding="async"``, in a 1280x2000
    viewport that holds the whole grid, served three ways:

    fileproc          a Django project (settings in code, SQLite, local storage: the
                      defaults) with ``fileproc_django`` and the ``{% fileprocessor %}``
                      block, the WSGI application wrapped by ``fileproc_django.wrap``
    easy-thumbnails   the same page with easy-thumbnails' ``{% thumbnail ... as t %}``,
                      its default settings
    sorl-thumbnail    the same page with sorl-thumbnail's ``{% thumbnail %}`` block, its
                      default settings (cached-db key-value store, local-memory cache)

    Each site runs in its own process under waitress (``--threads`` threads) on
    127.0.0.1; that process answers the page and every image: fileproc's results through
    its middleware, the other two's ``MEDIA_URL`` through Django's ``static.serve`` view.
    Before any page is measured, the server renders a page of one unrelated small photo
    and serves its thumbnail, so a "cold" page pays for its own thumbnails, not for the
    process's imports or worker start.

    Headless Chromium (the system's ``/usr/bin/chromium`` through Playwright, flags from
    ``tests/support.py``) loads the page with the network emulated through CDP
    (``Network.emulateNetworkConditions``: ``--latency`` ms, ``--down``/``--up`` Mbit/s of
    10^6 bits).
    Per load, from the page's own clocks (milliseconds since navigation start):

    TTFB        ``responseStart`` of the navigation (Navigation Timing)
    last image  when the last ``<img>`` has loaded and its ``img.decode()`` resolved
                (a capturing ``load`` listener installed before the page's first byte)
    redirects   image responses with a 3xx status (Playwright response events)

    Chromium (156 here) holds each response's body, not its headers, for the emulated
    latency: ``responseStart`` is the server's time, and the latency shows up between
    ``responseStart`` and ``responseEnd`` (and in full in a redirect's hop). TTFB is
    therefore the server's answer time; the page's HTML is in the browser one latency
    later ("HTML end" in the second table).

    Scenarios, the variants interleaved in each round (the order rotated every round):

    cold          a fresh server with a fresh directory (database, results, cache):
                  nothing made; a fresh browser context
    warm server   the server has made everything (one untimed load first); a fresh
                  browser context, so nothing in the browser's cache
    warm browser  a reload in the warm-server load's context

    Figures are medians over the rounds (``--cold-rounds``, ``--warm-rounds``; at least
    one round each, further rounds while ``--budget`` seconds last); "x easy" is the
    median over easy-thumbnails' median in the same scenario. A second table breaks
    the image requests down with Resource Timing (median over loads of the median over
    images): when the first image request started, its redirect, the wait for its first
    byte (the server's time), its download (the emulated latency and the transfer), and
    the CPU time the server and its job workers used during the load.
    ``--detail`` prints every image request of every cold load.

Targets
    cold page, last image            fileproc <= 0.25x easy-thumbnails
    warm server + fresh browser      fileproc <= 1.0x easy-thumbnails (last image)
    cold page, TTFB                  fileproc <= 0.1x easy-thumbnails

Usage: ``python bench/pageload.py [--cold-rounds N] [--warm-rounds N] [--budget SECONDS]
[--latency MS] [--down MBIT] [--up MBIT] [--photos N] [--pngs N] [--threads N]
[--loading lazy|eager] [--gallery DIR] [--detail]``
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(1, str(ROOT / "tests"))

import images  # noqa: E402 - bench/images.py, for its photo-like JPEG

from support import CHROMIUM, CHROMIUM_FLAGS, free_port  # noqa: E402

VARIANTS = ("fileproc", "easy-thumbnails", "sorl-thumbnail")
BASELINE = "easy-thumbnails"
SCENARIOS = ("cold", "warm server", "warm browser")
PHOTO_SIZE = (4000, 3000)
PNG_SIZE = (1600, 1200)
PHOTOS_PER_DRAWING = 6  # drawing a photo takes seconds; its flipped, recoloured copies do not
VIEWPORT = {"width": 1280, "height": 2000}
LOAD_TIMEOUT_MS = 120_000
SERVER_START_S = 120.0
TARGETS = {  # (scenario, figure): fileproc / easy-thumbnails at most
    ("cold", "last"): 0.25,
    ("warm server", "last"): 1.0,
    ("cold", "ttfb"): 0.1,
}

# -- the gallery -------------------------------------------------------------------------------

_TRANSFORMS = (
    None,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.ROTATE_180,
)
_CHANNELS = ((0, 1, 2), (2, 1, 0), (1, 2, 0))


def _draw_photo(path: Path, size: tuple[int, int], seed: int) -> None:
    drawn_at = images.SIZE
    images.SIZE = size  # make_photo draws at its module's SIZE (24 MP there)
    try:
        images.make_photo(path, seed=seed)
    finally:
        images.SIZE = drawn_at


def _variation(image: Image.Image, index: int) -> Image.Image:
    transform = _TRANSFORMS[index % len(_TRANSFORMS)]
    if transform is not None:
        image = image.transpose(transform)
    bands = image.split()
    return Image.merge("RGB", [bands[i] for i in _CHANNELS[index // len(_TRANSFORMS) % len(_CHANNELS)]])


def _cutout(photo: Image.Image, seed: int) -> Image.Image:
    """A part of a photo on a transparent ground, its edges feathered: a product shot, a logo."""
    width, height = PNG_SIZE
    left = (seed * 331) % (photo.width - width + 1)
    picture = photo.crop((left, 0, left + width, height)).convert("RGBA")
    mask = Image.new("L", PNG_SIZE, 0)
    draw = ImageDraw.Draw(mask)
    draw.ellipse((width * 0.1, height * 0.1, width * 0.9, height * 0.9), fill=255)
    draw.rectangle((0, height * 0.7, width * 0.3, height), fill=160)
    picture.putalpha(mask.filter(ImageFilter.GaussianBlur(24)))
    return picture


def make_gallery(directory: Path, photos: int, pngs: int, size: tuple[int, int]) -> list[str]:
    """The gallery's file names, made in ``directory`` unless there already (``--gallery``)."""
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"photo{i:02d}.jpg" for i in range(photos)] + [f"cutout{i:02d}.png" for i in range(pngs)]
    for index in range(photos):
        path = directory / names[index]
        if path.exists():
            continue
        drawn = directory / f".drawn{index // PHOTOS_PER_DRAWING}.jpg"
        if not drawn.exists():
            _draw_photo(drawn, size, seed=20240601 + index // PHOTOS_PER_DRAWING)
        with Image.open(drawn) as opened:
            _variation(opened.convert("RGB"), index % PHOTOS_PER_DRAWING).save(path, "JPEG", quality=90)
    for index in range(pngs):
        path = directory / names[photos + index]
        if path.exists():
            continue
        drawn = directory / ".drawn0.jpg"
        if not drawn.exists():
            _draw_photo(drawn, size, seed=20240601)
        with Image.open(drawn) as opened:
            _cutout(opened.convert("RGB"), index).save(path, "PNG")
    # The warm-up page's photo: small, and never part of the measured page.
    warmup = directory / "warmup.jpg"
    if not warmup.exists():
        Image.radial_gradient("L").resize((800, 600)).convert("RGB").save(warmup, "JPEG", quality=90)
    return names


# -- the sites (each a child: pageload.py --serve VARIANT SITE PORT THREADS LOADING) --------

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Gallery</title>
<style>
body {{ margin: 16px; font-family: sans-serif; }}
.grid {{ display: grid; grid-template-columns: repeat(4, 300px); gap: 8px; }}
img {{ display: block; background: #ddd; }}
</style></head>
<body><h1>Gallery</h1><div class="grid">
{{% for name in photos %}}{item}
{{% endfor %}}</div></body></html>
"""
_ITEMS = {
    "fileproc": (
        "{% load fileprocessor %}",
        "{% fileprocessor source=name alt=name loading=loading %}fit 300x225{% endfileprocessor %}",
    ),
    "easy-thumbnails": (
        "{% load thumbnail %}",
        "{% thumbnail name 300x225 as thumb %}"
        '<img src="{{ thumb.url }}" width="{{ thumb.width }}" height="{{ thumb.height }}" alt="{{ name }}" '
        'loading="{{ loading }}" decoding="async">',
    ),
    "sorl-thumbnail": (
        "{% load thumbnail %}",
        '{% thumbnail name "300x225" as thumb %}'
        '<img src="{{ thumb.url }}" width="{{ thumb.width }}" height="{{ thumb.height }}" alt="{{ name }}" '
        'loading="{{ loading }}" decoding="async">{% endthumbnail %}',
    ),
}
_APPS = {
    "fileproc": ["fileproc_django"],
    "easy-thumbnails": ["easy_thumbnails"],
    "sorl-thumbnail": ["sorl.thumbnail"],
}
_URLCONF = "pageload_urls"


def page_template(variant: str) -> str:
    load, item = _ITEMS[variant]
    return load + _PAGE.format(item=item)


def serve(variant: str, site: Path, port: int, threads: int, loading: str) -> None:
    """Configure Django for ``variant`` on ``site``, migrate, and serve until killed."""
    import types

    sys.path[:0] = [str(ROOT), str(ROOT / "integrations")]  # measure this working tree
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import django
    from django.conf import settings

    media = site / "media"
    settings.configure(
        DEBUG=False,
        SECRET_KEY="pageload-benchmark-only",
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF=_URLCONF,
        INSTALLED_APPS=_APPS[variant],
        MIDDLEWARE=[],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": site / "site.db"}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        MEDIA_ROOT=media,
        MEDIA_URL="/media/",
        USE_TZ=True,
    )
    django.setup()

    import waitress
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from django.http import HttpResponse
    from django.template import engines
    from django.urls import path, re_path
    from django.views.static import serve as serve_media

    call_command("migrate", interactive=False, verbosity=0)
    template = engines["django"].from_string(page_template(variant))
    names = sorted(f"photos/{entry.name}" for entry in (media / "photos").iterdir())

    def gallery(request):
        return HttpResponse(template.render({"photos": names, "loading": loading}, request))

    def warmup(request):
        return HttpResponse(template.render({"photos": ["warmup/warmup.jpg"], "loading": loading}, request))

    # Settings in code want a URL module too: one made here, under the name ROOT_URLCONF gives.
    urls = types.ModuleType(_URLCONF)
    urls.urlpatterns = [
        path("", gallery),
        path("warmup/", warmup),
        re_path(r"^media/(?P<path>.*)$", serve_media, {"document_root": media}),
    ]
    sys.modules[_URLCONF] = urls

    application = get_wsgi_application()
    if variant == "fileproc":
        import fileproc_django

        application = fileproc_django.wrap(application)
    server = waitress.create_server(application, host="127.0.0.1", port=port, threads=threads)
    print("ready", flush=True)
    server.run()


class Site:
    """One variant's server process on a fresh directory whose media holds the gallery."""

    def __init__(self, variant: str, directory: Path, gallery: Path, names: list[str], args) -> None:
        self.variant = variant
        self.directory = directory
        if directory.exists():
            shutil.rmtree(directory)
        for folder, files in (("photos", names), ("warmup", ["warmup.jpg"])):
            target = directory / "media" / folder
            target.mkdir(parents=True)
            for name in files:
                try:  # easy-thumbnails writes beside its sources: links, not the gallery's own files
                    os.link(gallery / name, target / name)
                except OSError:
                    shutil.copyfile(gallery / name, target / name)
        self.port = free_port()
        self.log_path = directory / "server.log"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve",
            variant,
            str(directory),
            str(self.port),
            str(args.threads),
            args.loading,
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=directory, start_new_session=True
            )
        self._wait_until_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_S
        while b"ready" not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.variant} server did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        while True:  # "ready" is printed just before the accept loop
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.variant} server does not accept:\n{self.log_tail()}")
            time.sleep(0.05)

    def get(self, target: str) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request("GET", target)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def warm_up(self) -> None:
        """Render a page of one small photo and fetch its thumbnail (following a redirect):
        the process's imports, its worker pool and its engine are then ready."""
        status, _, body = self.get("/warmup/")
        source = re.search(rb'src="([^"]+)"', body)
        if status != 200 or source is None:
            raise RuntimeError(f"{self.variant} warm-up page: {status}\n{self.log_tail()}")
        target = source.group(1).decode()
        for _ in range(3):
            status, headers, _ = self.get(target)
            if status not in (301, 302, 303, 307, 308):
                break
            target = re.sub(r"^https?://[^/]+", "", headers["Location"])
        if status != 200:
            raise RuntimeError(f"{self.variant} warm-up thumbnail: {status}\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server and its descendants (fileproc's job workers run
        in sessions of their own), with the children they waited for; Linux /proc, else NaN."""
        proc = Path("/proc")
        if not proc.is_dir():
            return float("nan")
        parents: dict[int, int] = {}
        ticks: dict[int, int] = {}
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                # After the command's ")": state ppid pgrp session ... utime stime cutime cstime
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # ended meanwhile
            parents[int(entry.name)] = int(fields[1])
            ticks[int(entry.name)] = sum(int(value) for value in fields[11:15])
        ours = {self.process.pid}
        grown = True
        while grown:
            found = {pid for pid, parent in parents.items() if parent in ours} - ours
            ours |= found
            grown = bool(found)
        return sum(ticks.get(pid, 0) for pid in ours) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


# -- the browser ---------------------------------------------------------------------------------

# Installed before the page's first byte: every image's load, then its decode, timed by the
# page's clock. "load" does not reach window from an element, so the listener is on document.
_RECORDER = """(() => {
    const state = {decoded: [], failed: 0};
    window.__pageload = state;
    document.addEventListener("load", event => {
        const img = event.target;
        if (!(img instanceof HTMLImageElement)) return;
        img.decode().then(() => state.decoded.push(performance.now()), () => { state.failed += 1; });
    }, true);
    document.addEventListener("error", event => {
        if (event.target instanceof HTMLImageElement) state.failed += 1;
    }, true);
})();"""
_SETTLED = """() => {
    const state = window.__pageload;
    return document.readyState === "complete" && document.images.length > 0
        && state.decoded.length + state.failed >= document.images.length;
}"""
_COLLECT = """() => {
    const navigation = performance.getEntriesByType("navigation")[0];
    const state = window.__pageload;
    return {
        ttfb: navigation.responseStart,
        html_end: navigation.responseEnd,
        last: state.decoded.length ? Math.max(...state.decoded) : null,
        images: document.images.length,
        failed: state.failed,
        resources: performance.getEntriesByType("resource")
            .filter(entry => entry.initiatorType === "img")
            .map(entry => ({
                name: entry.name, start: entry.startTime, redirect: entry.redirectEnd - entry.redirectStart,
                request: entry.requestStart, response: entry.responseStart, end: entry.responseEnd,
                bytes: entry.transferSize,
            })),
    };
}"""


@dataclass
class Load:
    """One page load's figures, in milliseconds since its navigation started."""

    variant: str
    scenario: str
    ttfb: float = float("nan")
    last: float = float("nan")
    html_end: float = float("nan")
    images: int = 0
    failed: int = 0
    redirects: int = 0
    server_cpu: float = float("nan")  # seconds, the server's processes, during the load
    resources: list[dict] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.failed == 0 and self.last == self.last

    def timed(self) -> list[dict]:
        """Resource entries that went to the network (a memory-cache hit has no request)."""
        return [r for r in self.resources if r["response"] > 0 and r["request"] > 0]


def emulate_network(context, page, args) -> None:
    session = context.new_cdp_session(page)
    session.send("Network.enable")
    session.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": args.latency,
            "downloadThroughput": args.down * 1e6 / 8,
            "uploadThroughput": args.up * 1e6 / 8,
        },
    )


def measure(page, site: Site, scenario: str, navigate) -> Load:
    """Run ``navigate`` (a goto or a reload) and read the page's figures once every image is in."""
    load = Load(site.variant, scenario)
    cpu_before = site.cpu_seconds()
    statuses: list[int] = []

    def on_response(response) -> None:
        if response.request.resource_type == "image":
            statuses.append(response.status)

    page.on("response", on_response)
    try:
        navigate()
        page.wait_for_function(_SETTLED, timeout=LOAD_TIMEOUT_MS, polling=20)
        figures = page.evaluate(_COLLECT)
        load.server_cpu = site.cpu_seconds() - cpu_before
    except Exception as error:  # a timeout or a crashed page: reported, the run goes on
        load.error = str(error).splitlines()[0]
        return load
    finally:
        page.remove_listener("response", on_response)
    load.ttfb, load.html_end = figures["ttfb"], figures["html_end"]
    load.last = figures["last"] if figures["last"] is not None else float("nan")
    load.images, load.failed, load.resources = figures["images"], figures["failed"], figures["resources"]
    load.redirects = sum(status in (301, 302, 303, 307, 308) for status in statuses)
    return load


def fresh_load(browser, site: Site, scenario: str, args, *, reload_too: bool = False) -> list[Load]:
    """A load in a new browser context (nothing cached); with ``reload_too`` a reload after it."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        context.add_init_script(_RECORDER)
        page = context.new_page()
        emulate_network(context, page, args)
        loads = [measure(page, site, scenario, lambda: page.goto(site.url, timeout=LOAD_TIMEOUT_MS))]
        if reload_too:
            loads.append(measure(page, site, "warm browser", lambda: page.reload(timeout=LOAD_TIMEOUT_MS)))
        return loads
    finally:
        context.close()


# -- report ------------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def fmt(value: float, digits: int = 0) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def describe(load: Load) -> str:
    if load.error:
        return f"error: {load.error}"
    text = (
        f"TTFB {fmt(load.ttfb)} ms, last image {fmt(load.last)} ms, {load.images} images, "
        f"{load.redirects} redirects"
    )
    return text + (f", {load.failed} FAILED" if load.failed else "")


def print_table(loads: list[Load]) -> dict[tuple[str, str], float]:
    """The main table; returns fileproc / easy-thumbnails per (scenario, figure)."""
    header = (
        f"{'scenario':<13} {'variant':<16} {'loads':>5} {'TTFB ms':>8} {'x easy':>7} "
        f"{'last image ms':>13} {'x easy':>7} {'redirects':>9} {'failed':>6}"
    )
    print(header)
    print("-" * len(header))
    ratios: dict[tuple[str, str], float] = {}
    for scenario in SCENARIOS:
        rows = {v: [ld for ld in loads if ld.scenario == scenario and ld.variant == v] for v in VARIANTS}
        base = rows.get(BASELINE, [])
        base_ttfb = median([load.ttfb for load in base if load.ok])
        base_last = median([load.last for load in base if load.ok])
        for variant, group in rows.items():
            if not group:
                continue
            good = [load for load in group if load.ok]
            ttfb = median([load.ttfb for load in good])
            last = median([load.last for load in good])
            ttfb_ratio, last_ratio = ttfb / base_ttfb, last / base_last
            if variant == "fileproc":
                ratios[(scenario, "ttfb")], ratios[(scenario, "last")] = ttfb_ratio, last_ratio
            redirects = median([load.redirects for load in good])
            failed = sum(1 for load in group if not load.ok)
            print(
                f"{scenario:<13} {variant:<16} {len(good):>5} {fmt(ttfb):>8} {fmt(ttfb_ratio, 2):>7} "
                f"{fmt(last):>13} {fmt(last_ratio, 2):>7} {fmt(redirects):>9} {failed:>6}"
            )
    print("(medians over the loads that succeeded; x easy: over easy-thumbnails' median in the same")
    print(" scenario; redirects: image responses with a 3xx status per load; failed: loads with an error")
    print(" or a broken image)")
    return ratios


_BREAKDOWN = ("HTML end", "1st img", "redirect", "wait", "wait max", "download", "last end", "KiB", "srv CPU")


def breakdown(load: Load) -> dict[str, float]:
    """Where one load's time went: the HTML, then its image requests (Resource Timing)."""
    timed = load.timed()
    waits = [r["response"] - r["request"] for r in timed]
    nan = float("nan")
    return {
        "HTML end": load.html_end,
        "1st img": min((r["start"] for r in timed), default=nan),
        "redirect": median([r["redirect"] for r in timed]),
        "wait": median(waits),
        "wait max": max(waits, default=nan),
        "download": median([r["end"] - r["response"] for r in timed]),
        "last end": max((r["end"] for r in timed), default=nan),
        "KiB": sum(r["bytes"] for r in load.resources) / 1024,
        "srv CPU": load.server_cpu * 1000,
    }


def print_breakdown(loads: list[Load]) -> None:
    header = f"{'scenario':<13} {'variant':<16} " + " ".join(f"{name:>8}" for name in _BREAKDOWN)
    print(header)
    print("-" * len(header))
    for scenario in SCENARIOS:
        for variant in VARIANTS:
            group = [ld for ld in loads if ld.scenario == scenario and ld.variant == variant and ld.ok]
            if not group:
                continue
            figures = [breakdown(load) for load in group]
            medians = (median([f[name] for f in figures]) for name in _BREAKDOWN)
            print(f"{scenario:<13} {variant:<16} " + " ".join(f"{fmt(value):>8}" for value in medians))
    print("(ms since navigation start; medians over loads of each load's figure, from the Resource Timing")
    print(" of the image requests that went to the network. 1st img: the first image request's start;")
    print(" redirect, wait, download: medians over the images of redirectEnd - redirectStart, requestStart")
    print(" to responseStart of the final request (the server's time), responseStart to responseEnd (the")
    print(" emulated latency and the transfer); wait max: the slowest image's wait; last end: the last")
    print(" image's responseEnd; KiB: bytes transferred for the images; srv CPU: CPU time the server's")
    print(" processes used during the load, its worker processes included)")


def print_detail(load: Load, round_number: int) -> None:
    print(f"  {load.scenario} round {round_number} {load.variant}: every image request (ms)")
    columns = ("start", "redirect", "request", "wait", "download", "end")
    print(f"    {'image':<44} " + " ".join(f"{name:>8}" for name in columns))
    for r in sorted(load.resources, key=lambda r: r["start"]):
        print(
            f"    {r['name'].split('://', 1)[-1].split('/', 1)[-1][-44:]:<44} {r['start']:>8.0f} "
            f"{r['redirect']:>8.0f} {r['request']:>8.0f} {r['response'] - r['request']:>8.0f} "
            f"{r['end'] - r['response']:>8.0f} {r['end']:>8.0f}"
        )


def print_targets(ratios: dict[tuple[str, str], float]) -> None:
    names = {
        ("cold", "last"): "cold page, time to last image",
        ("warm server", "last"): "warm server + fresh browser, last image",
        ("cold", "ttfb"): "cold page, time to first byte",
    }
    for key, target in TARGETS.items():
        ratio = ratios.get(key, float("nan"))
        verdict = "n/a" if ratio != ratio else ("PASS" if ratio <= target else "MISS")
        print(f"{names[key]:<40} fileproc / easy-thumbnails {fmt(ratio, 2):>5}x   <= {target}x   {verdict}")


# -- the run -----------------------------------------------------------------------------------


def rotated(round_number: int) -> list[str]:
    shift = round_number % len(VARIANTS)
    return list(VARIANTS[shift:] + VARIANTS[:shift])


def run(args, work: Path, gallery: Path, names: list[str]) -> list[Load]:
    from playwright.sync_api import sync_playwright

    loads: list[Load] = []
    deadline = time.monotonic() + args.budget
    sites: dict[str, Site] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            for round_number in range(args.cold_rounds):
                if round_number and time.monotonic() > deadline:
                    print(f"budget of {args.budget:.0f} s used: {round_number} cold rounds")
                    break
                last_round = round_number == args.cold_rounds - 1
                for variant in rotated(round_number):
                    site = Site(variant, work / f"{variant}-cold{round_number}", gallery, names, args)
                    try:
                        site.warm_up()
                        (load,) = fresh_load(browser, site, "cold", args)
                    finally:
                        if last_round:
                            sites[variant] = site  # made everything: the warm rounds' server
                        else:
                            site.stop()
                    loads.append(load)
                    print(f"cold r{round_number + 1} {variant:<16} {describe(load)}", flush=True)
                    if args.detail and load.ok:
                        print_detail(load, round_number + 1)
            for variant in VARIANTS:
                if variant not in sites:
                    sites[variant] = Site(variant, work / f"{variant}-warm", gallery, names, args)
                    sites[variant].warm_up()
                # Untimed: whatever the first load after the cold one still makes or learns.
                (priming,) = fresh_load(browser, sites[variant], "priming", args)
                print(f"priming  {variant:<16} {describe(priming)}", flush=True)
            for round_number in range(args.warm_rounds):
                if round_number and time.monotonic() > deadline:
                    print(f"budget of {args.budget:.0f} s used: {round_number} warm rounds")
                    break
                for variant in rotated(round_number):
                    for load in fresh_load(browser, sites[variant], "warm server", args, reload_too=True):
                        loads.append(load)
                        label = "warm" if load.scenario == "warm server" else "reload"
                        print(f"{label} r{round_number + 1} {variant:<16} {describe(load)}", flush=True)
        finally:
            for site in sites.values():
                site.stop()
            browser.close()
    return loads


def size_argument(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold-rounds", type=int, default=3, help="cold rounds (default 3)")
    parser.add_argument("--warm-rounds", type=int, default=5, help="warm rounds: a load and a reload (5)")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of rounds, then stop (600)")
    parser.add_argument("--latency", type=float, default=40.0, help="emulated latency, ms (default 40)")
    parser.add_argument("--down", type=float, default=10.0, help="emulated download, Mbit/s (default 10)")
    parser.add_argument("--up", type=float, default=10.0, help="emulated upload, Mbit/s (default 10)")
    parser.add_argument("--photos", type=int, default=24, help="photo-like JPEGs (default 24)")
    parser.add_argument("--pngs", type=int, default=4, help="PNGs with transparency (default 4)")
    parser.add_argument("--size", type=size_argument, default=PHOTO_SIZE, help="photo size WxH (4000x3000)")
    parser.add_argument("--threads", type=int, default=4, help="waitress threads per server (default 4)")
    parser.add_argument("--loading", choices=("lazy", "eager"), default="lazy", help="<img loading> (lazy)")
    parser.add_argument("--gallery", type=Path, help="keep the gallery in DIR and reuse it on later runs")
    parser.add_argument("--detail", action="store_true", help="print every image request of every cold load")
    parser.add_argument("--serve", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        variant, site, port, threads, loading = args.serve
        serve(variant, Path(site), int(port), int(threads), loading)
        return
    if args.size[0] < PNG_SIZE[0] or args.size[1] < PNG_SIZE[1]:
        parser.error(f"--size must be at least {PNG_SIZE[0]}x{PNG_SIZE[1]} (the PNGs are cut from a photo)")
    args.cold_rounds, args.warm_rounds = max(1, args.cold_rounds), max(1, args.warm_rounds)

    with tempfile.TemporaryDirectory(prefix="fp-bench-pageload-") as temporary:
        work = Path(temporary)
        gallery = args.gallery.resolve() if args.gallery else work / "gallery"
        start = time.perf_counter()
        names = make_gallery(gallery, args.photos, args.pngs, args.size)
        total = sum((gallery / name).stat().st_size for name in names)
        print(
            f"gallery: {args.photos} JPEGs of {args.size[0]}x{args.size[1]} and {args.pngs} PNGs of "
            f"{PNG_SIZE[0]}x{PNG_SIZE[1]}, {total / 2**20:.0f} MiB, "
            f"ready in {time.perf_counter() - start:.1f} s"
        )
        print(
            f"network: {args.latency:.0f} ms latency, {args.down:g}/{args.up:g} Mbit/s down/up; "
            f"waitress {args.threads} threads; loading={args.loading}; {os.cpu_count()} CPUs; "
            f"python {sys.version.split()[0]}"
        )
        print()
        loads = run(args, work, gallery, names)
    print()
    ratios = print_table(loads)
    print()
    print_breakdown(loads)
    print()
    print_targets(ratios)


if __name__ == "__main__":
    main()
