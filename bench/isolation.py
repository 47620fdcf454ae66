"""What running jobs in worker processes costs, and what it buys (fileproc_wsgi.pool).

What it measures
    photo   the 24-megapixel photo-like JPEG of ``bench/images.py`` to ``fit 400x300``
            JPEG: the pipeline in this process (``produce``, the baseline) against the same
            job sent to a worker (``IsolatedJobs.run``). Target: at most 5% slower.
    small   a 100 KB JPEG (800x600) to ``fit 200x150`` JPEG, the same two ways. Target: at
            most 3 ms added.
    pdf     two renders of one heavy PDF page (a path of 10,000 random lines, about half a
            second of PDFium) started at the same moment from two threads, against one
            render alone, in this process (PDFium's lock serialises them) and in workers.
            Target: in workers, two take about as long as one on 2 cores.
    start   how long a fresh worker takes from start to ready (its imports), for information.

    Every variant once per round (so background load hits all alike), after one untimed
    warm-up; the median of ``--runs`` rounds, fewer if they use up ``--budget`` seconds.

Usage: ``python bench/isolation.py [--runs N] [--budget SECONDS]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from images import make_photo  # noqa: E402 - the bench directory, not a package

from fileproc_wsgi import pool  # noqa: E402
from fileproc_wsgi.config import Config  # noqa: E402
from fileproc_wsgi.instructions import parse  # noqa: E402
from fileproc_wsgi.processing import produce  # noqa: E402
from fileproc_wsgi.samples import scribbled_pdf  # noqa: E402
from fileproc_wsgi.sources import Sources  # noqa: E402

PHOTO_TARGET = 1.05  # isolated / in-process
SMALL_TARGET_MS = 3.0  # isolated - in-process
PARALLEL_TARGET = 1.3  # two renders at once / one render, in workers on 2 cores


Work = Callable[[], object]


def two_ways(config: Config, text: str, output_format: str = "jpeg") -> tuple[Work, Work]:
    """(in this process, in a worker) for one job."""
    instructions = parse(text)
    source = Sources.for_config(config).resolve(instructions.source)
    isolated = pool.IsolatedJobs(config)
    canonical = instructions.canonical

    def here() -> object:
        return produce(instructions, source, output_format, config).data

    def there() -> object:
        return isolated.run(canonical, output_format, time.monotonic() + config.max_processing_seconds)[0]

    return here, there


def at_once(work: Work, count: int) -> Work:
    def run() -> None:
        threads = [threading.Thread(target=work) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)

    return run


def measure(variants: dict[str, Work], runs: int, budget: float) -> dict[str, float]:
    for work in variants.values():
        work()  # warm-up: caches, and the workers' start
    times: dict[str, list[float]] = {name: [] for name in variants}
    deadline = time.monotonic() + budget
    for _ in range(runs):
        for name, work in variants.items():
            started = time.perf_counter()
            work()
            times[name].append(time.perf_counter() - started)
        if time.monotonic() > deadline:
            break
    return {name: statistics.median(values) for name, values in times.items()}


def start_time(config: Config, rounds: int = 3) -> float:
    """Median seconds from starting a worker to its first job's answer, minus the job."""
    spent = []
    for _ in range(rounds):
        workers = pool.WorkerPool()
        try:
            started = time.perf_counter()
            worker = workers._start()
            workers._wait_until_ready(worker)
            spent.append(time.perf_counter() - started)
            workers._release(worker)
        finally:
            workers.close()
    return statistics.median(spent)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of timed rounds per part")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        make_photo(directory / "photo.jpg")
        Image.effect_noise((800, 600), 20).convert("RGB").save(directory / "small.jpg", quality=60)
        (directory / "heavy.pdf").write_bytes(scribbled_pdf())
        config = Config(
            source_roots={"default": str(directory)}, database_url="sqlite://", storage=str(directory / "out")
        )
        print(f"100 KB JPEG: {(directory / 'small.jpg').stat().st_size / 1024:.0f} KiB")

        here, there = two_ways(config, "photo.jpg | fit 400x300 | format jpeg")
        photo = measure({"in process": here, "in a worker": there}, arguments.runs, arguments.budget)
        ratio = photo["in a worker"] / photo["in process"]
        print("\n24-megapixel JPEG -> fit 400x300 JPEG")
        for variant, seconds in photo.items():
            print(f"  {variant:<12} median {seconds * 1000:7.1f} ms")
        print(
            f"  in a worker / in process: {ratio:.3f}x   target <= {PHOTO_TARGET}x   "
            f"{verdict(ratio <= PHOTO_TARGET)}"
        )

        here, there = two_ways(config, "small.jpg | fit 200x150 | format jpeg")
        runs = arguments.runs * 10
        tiny = measure({"in process": here, "in a worker": there}, runs, arguments.budget)
        added = (tiny["in a worker"] - tiny["in process"]) * 1000
        print("\n100 KB JPEG -> fit 200x150 JPEG")
        for variant, seconds in tiny.items():
            print(f"  {variant:<12} median {seconds * 1000:7.2f} ms")
        print(
            f"  added by the worker: {added:.2f} ms   target <= {SMALL_TARGET_MS} ms   "
            f"{verdict(added <= SMALL_TARGET_MS)}"
        )

        here, there = two_ways(config, "heavy.pdf | format png", "png")
        renders = measure(
            {
                "one, in process": here,
                "two, in process": at_once(here, 2),
                "one, in workers": there,
                "two, in workers": at_once(there, 2),
            },
            arguments.runs,
            arguments.budget,
        )
        serial = renders["two, in process"] / renders["one, in process"]
        parallel = renders["two, in workers"] / renders["one, in workers"]
        print("\nheavy PDF page, two renders started together / one render")
        for variant, seconds in renders.items():
            print(f"  {variant:<16} median {seconds * 1000:7.1f} ms")
        print(f"  in process (PDFium's lock): {serial:.2f}x")
        print(
            f"  in workers: {parallel:.2f}x   target <= {PARALLEL_TARGET}x   "
            f"{verdict(parallel <= PARALLEL_TARGET)}"
        )

        print(f"\nworker start to ready: {start_time(config) * 1000:.0f} ms (median of 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
