"""SVG renderers: LunaSVG (what the SVG engine uses) against resvg-py, on a typical logo.

What it measures
    A 400x400 logo (a gradient rounded square, a star with a blurred shadow, a circle, a
    stroked curve and a line of text) rendered to an RGBA Pillow image of 64, 256, 1024 and
    4096 px a side:
      lunasvg   ``pillow_lunasvg._lunasvg.load(data).render(w, h, scale)``: RGBA bytes
                straight into ``Image.frombytes`` (what engines/svg.py does)
      resvg     ``resvg_py.svg_to_bytes(svg_string=..., width=w, height=h)`` then
                ``Image.open`` of the PNG it returns, only when resvg-py is installed
                (this project does not depend on it)
    and the whole pipeline once: ``produce(parse("logo.svg | fit 256x"), ...)``.
    Then a 40x30 logo enlarged to 600x450, as ``upscale | fit 600x`` gives it: drawn at
    600x450 (what the engine does), against the baseline of drawing it at 40x30 and
    resampling with Lanczos (what it did before, and what a raster source gets).

    In-process, one untimed warm-up each, then the median of ``--runs`` (fewer at 4096 px).
    resvg draws the blurred shadow; LunaSVG leaves filter effects out.

Usage: ``python bench/svg.py [--runs N]``
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def logo() -> str:
    def point(index: int) -> str:
        radius = 150 if index % 2 == 0 else 67.5
        angle = math.pi / 2 + index * math.pi / 5
        return f"{200 + radius * math.cos(angle):.1f},{200 - radius * math.sin(angle):.1f}"

    star = " ".join(point(index) for index in range(10))
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="400" height="400" viewBox="0 0 400 400">
<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1"><stop offset="0" stop-color="#ff8253"/>
<stop offset="1" stop-color="#da1bc6"/></linearGradient>
<filter id="s"><feGaussianBlur stdDeviation="4"/></filter></defs>
<rect x="10" y="10" width="380" height="380" rx="60" fill="url(#g)"/>
<polygon points="{star}" opacity=".3" filter="url(#s)" transform="translate(6 6)"/>
<polygon points="{star}" fill="#ffd34e" stroke="#fff" stroke-width="6" stroke-linejoin="round"/>
<circle cx="200" cy="215" r="30" fill="#fff"/>
<path d="M60 340 C 140 300, 260 380, 340 330" stroke="#fff" stroke-width="10" fill="none"
 stroke-linecap="round"/>
<text x="200" y="385" font-family="DejaVu Sans" font-size="28" text-anchor="middle"
 fill="#fff">fileproc</text>
</svg>"""


def _lunasvg(data: bytes, side: int) -> Image.Image:
    from pillow_lunasvg import _lunasvg

    document = _lunasvg.load(data)
    return Image.frombytes("RGBA", (side, side), document.render(side, side, side / document.width))


def _resvg(data: bytes, side: int) -> Image.Image:
    import resvg_py

    png = resvg_py.svg_to_bytes(svg_string=data.decode(), width=side, height=side)
    image = Image.open(io.BytesIO(bytes(png)))
    image.load()
    return image


def _median_ms(render, data: bytes, side: int, runs: int) -> float:
    render(data, side)
    times = []
    for _ in range(runs if side < 4096 else max(1, runs // 10)):
        started = time.perf_counter()
        render(data, side)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _pipeline_ms(data: bytes, runs: int) -> float:
    from fileproc_wsgi.config import Config
    from fileproc_wsgi.instructions import parse
    from fileproc_wsgi.processing import produce
    from fileproc_wsgi.sources import LocalSource

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "logo.svg"
        path.write_bytes(data)
        config = Config(database_url=f"sqlite:///{directory}/db", storage=directory, isolate_jobs=False)
        instructions = parse("logo.svg | fit 256x")
        source = LocalSource(reference="logo.svg", path=str(path))
        produce(instructions, source, "png", config)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            produce(instructions, source, "png", config)
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


_SMALL_LOGO = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30">'
    b'<circle cx="20" cy="15" r="12" fill="red"/><text x="4" y="28" font-size="8">logo</text></svg>'
)


def _enlarged_ms(runs: int) -> tuple[float, float]:
    """(drawn at 600x450, drawn at 40x30 then resampled), median milliseconds."""
    from pillow_lunasvg import _lunasvg

    def drawn():
        document = _lunasvg.load(_SMALL_LOGO)
        return Image.frombytes("RGBA", (600, 450), document.render(600, 450, 15.0))

    def resampled():
        document = _lunasvg.load(_SMALL_LOGO)
        small = Image.frombytes("RGBA", (40, 30), document.render(40, 30, 1.0))
        return small.resize((600, 450), Image.Resampling.LANCZOS)

    makers = (drawn, resampled)
    return tuple(_median_ms(lambda data, side, make=make: make(), b"", 0, runs) for make in makers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    arguments = parser.parse_args()
    data = logo().encode()
    renderers = {"lunasvg": _lunasvg}
    try:
        import resvg_py  # noqa: F401
    except ImportError:
        print("resvg-py is not installed: pip install resvg-py to compare", file=sys.stderr)
    else:
        renderers["resvg"] = _resvg
    print(f"{'px':>6} " + " ".join(f"{name:>12}" for name in renderers))
    for side in (64, 256, 1024, 4096):
        times = [_median_ms(render, data, side, arguments.runs) for render in renderers.values()]
        cells = " ".join(f"{milliseconds:9.1f} ms" for milliseconds in times)
        print(f"{side:>6} {cells}")
    print(f"pipeline 'logo.svg | fit 256x' to PNG: {_pipeline_ms(data, arguments.runs):.1f} ms")
    drawn, resampled = _enlarged_ms(arguments.runs)
    print(
        f"40x30 logo to 600x450: drawn at that size {drawn:.2f} ms; drawn small and resampled "
        f"(baseline) {resampled:.2f} ms; ratio {drawn / resampled:.2f}x"
    )


if __name__ == "__main__":
    main()
