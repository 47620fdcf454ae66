"""PDF pages and video frames: this project's engines against the usual command lines.

What it measures
    pdf     page 1 (A4, vector text and shapes; made by ``fileproc_wsgi.samples``) to a
            JPEG 400 px wide:
              ours      ``produce(parse("doc.pdf | fit 400x | format jpeg"), ...)``: the
                        whole pipeline (PDFium renders the page straight at 400 px)
              pdftoppm  ``pdftoppm -jpeg -scale-to-x 400 -scale-to-y -1 -f 1 -l 1 -singlefile``
                        (poppler; the issue's ``-scale-to 400`` sizes the long side)
              pymupdf   ``page.get_pixmap(matrix=...)`` then JPEG, only when PyMuPDF is
                        installed (this project does not depend on it: AGPL)
    video   the frame at 2 s of a 5 s 1080p H.264 clip (made here with PyAV) to a JPEG
            400 px wide:
              ours      ``produce(parse("clip.mp4 | frame 2 | fit 400x | format jpeg"), ...)``
              ffmpeg    ``ffmpeg -ss 2 -i clip.mp4 -frames:v 1 -vf scale=400:-1 out.jpg``

    The command lines are timed as a user runs them, process start included; ours runs
    in-process, as it does in a server. One untimed warm-up each, then rounds (every
    variant once per round, so background load hits all alike): the median and best of
    ``--runs``, fewer if the rounds use up ``--budget`` seconds.

Targets
    pdf: ours <= 1.5x the fastest other; video: ours <= 0.9x ffmpeg.

Usage: ``python bench/documents.py [--runs N] [--budget SECONDS]``
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from fileproc_wsgi.config import Config
from fileproc_wsgi.instructions import parse
from fileproc_wsgi.processing import produce
from fileproc_wsgi.samples import write_clip, write_document
from fileproc_wsgi.sources import Sources

PDF_TARGET = 1.5  # ours / fastest other
VIDEO_TARGET = 0.9  # ours / ffmpeg

Work = Callable[[], bytes]


def ours(directory: Path, text: str) -> Work:
    config = Config(
        source_roots={"default": str(directory)}, database_url="sqlite://", storage=str(directory)
    )
    instructions = parse(text)
    source = Sources(config.source_roots).resolve(instructions.source)
    return lambda: produce(instructions, source, "jpeg", config).data


def command(arguments: list[str], output: Path) -> Work:
    def run() -> bytes:
        subprocess.run(arguments, check=True, capture_output=True, timeout=60)
        return output.read_bytes()

    return run


def pymupdf(path: Path, width: int) -> Work | None:
    if importlib.util.find_spec("fitz") is None:
        return None
    import fitz

    def run() -> bytes:
        with fitz.open(path) as document:
            page = document[0]
            zoom = width / page.rect.width
            pixmap = page.get_pixmap(matrix=fitz.Matrix(zoom, zoom))
            return pixmap.tobytes("jpeg")

    return run


def measure(variants: dict[str, Work], runs: int, budget: float) -> dict[str, list[float]]:
    for name, work in variants.items():
        width = Image.open(io.BytesIO(work())).width  # warm-up, and a check that it works
        if abs(width - 400) > 1:
            raise SystemExit(f"{name} made an image {width} px wide, not 400")
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


def report(title: str, times: dict[str, list[float]], target: float, against: list[str]) -> None:
    print(f"\n{title} ({len(times['ours'])} rounds)")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"  {name:<9} median {medians[name] * 1000:7.1f} ms   best {min(values) * 1000:7.1f} ms")
    baseline = min(against, key=medians.__getitem__)
    ratio = medians["ours"] / medians[baseline]
    verdict = "met" if ratio <= target else "MISSED"
    print(f"  ours / {baseline}: {ratio:.2f}x   target <= {target}x   {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed rounds per part")
    arguments = parser.parse_args()
    missing = [tool for tool in ("pdftoppm", "ffmpeg") if shutil.which(tool) is None]
    if missing:
        print(f"missing command lines: {', '.join(missing)} (bin/dev installs them)", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        write_document(str(directory / "doc.pdf"))
        start = time.perf_counter()
        write_clip(str(directory / "clip.mp4"), width=1920, height=1080, seconds=5, fps=30)
        print(
            f"fixtures: doc.pdf (A4 vector page), clip.mp4 (1080p H.264, 5 s, 30 fps; "
            f"made in {time.perf_counter() - start:.1f} s)"
        )

        pdf = {
            "ours": ours(directory, "doc.pdf | fit 400x | format jpeg"),
            "pdftoppm": command(
                "pdftoppm -jpeg -scale-to-x 400 -scale-to-y -1 -f 1 -l 1 -singlefile".split()
                + [str(directory / "doc.pdf"), str(directory / "poppler")],
                directory / "poppler.jpg",
            ),
        }
        mupdf = pymupdf(directory / "doc.pdf", 400)
        if mupdf is not None:
            pdf["pymupdf"] = mupdf
        report(
            "PDF page 1 -> 400 px JPEG",
            measure(pdf, arguments.runs, arguments.budget),
            PDF_TARGET,
            [name for name in pdf if name != "ours"],
        )

        video = {
            "ours": ours(directory, "clip.mp4 | frame 2 | fit 400x | format jpeg"),
            "ffmpeg": command(
                ["ffmpeg", "-v", "error", "-y", "-ss", "2", "-i", str(directory / "clip.mp4")]
                + ["-frames:v", "1", "-vf", "scale=400:-1", str(directory / "ffmpeg.jpg")],
                directory / "ffmpeg.jpg",
            ),
        }
        report(
            "Video frame at 2 s of 1080p H.264 -> 400 px JPEG",
            measure(video, arguments.runs, arguments.budget),
            VIDEO_TARGET,
            ["ffmpeg"],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
