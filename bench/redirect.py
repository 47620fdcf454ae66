"""Per-request cost of the middleware: a warm redirect and a pass-through, against bare WSGI.

What it measures
    A temporary directory holds a small JPEG, a SQLite database and local result storage.
    One instruction text is registered with ``Registrar`` and its URL requested once
    through ``FileProcessor`` so the result exists. Then, calling the WSGI callables
    in-process (no server, no sockets; ``start_response`` is a no-op, the body is iterated
    and closed as a server would; each call gets a fresh copy of an environ built once
    with ``webob.Request.blank``; the garbage collector is off while a batch runs, as in
    ``timeit``):

    warm hit     ``GET /_fp/<checksum>.jpg`` through ``FileProcessor`` (lookup + 301)
    bare 301     a plain WSGI function answering 301 from a ``{path: location}`` dict
    pass-through ``GET /page`` through ``FileProcessor`` to the wrapped app
    direct app   the same request straight to the wrapped app
    first hit    (information only) the warm hit in a fresh worker: a new
                 ``FileProcessor`` on the same store and storage, whose first request for
                 the finished result goes to the database; one call per instance

    Each figure is the median and best, over ``--repeats`` batches of ``--calls`` calls
    (``--first-hits`` instances for the first hit), of the time per call.

Targets
    warm hit <= 5x bare 301 (medians). The pass-through ratio is printed, without a target.

Usage: ``python bench/redirect.py [--calls N] [--repeats R] [--first-hits M]``
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from webob import Request

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this working tree, installed or not

from fileproc_wsgi.config import Config  # noqa: E402
from fileproc_wsgi.middleware import FileProcessor  # noqa: E402
from fileproc_wsgi.registrar import Registrar  # noqa: E402

INSTRUCTIONS = "small.jpg | fit 200x150 | format jpeg"
TARGET = 5.0  # warm hit / bare 301
PAGE_BODY = b"<html>a page of the wrapped application</html>"

Environ = dict[str, Any]
WSGIApp = Callable[[Environ, Callable[..., Any]], Iterable[bytes]]


@dataclass
class Figure:
    median_us: float
    best_us: float


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
    return _write


def _write(data: bytes) -> None:
    pass


def wrapped_app(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The application behind the middleware: a constant page."""
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(PAGE_BODY)))])
    return [PAGE_BODY]


def bare_redirects(table: dict[str, str]) -> WSGIApp:
    """The least a WSGI redirect can cost: one dict lookup and a 301."""

    def application(environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        location = table.get(environ["PATH_INFO"])
        if location is None:
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        start_response(
            "301 Moved Permanently",
            [
                ("Location", location),
                ("Cache-Control", "public, max-age=31536000, immutable"),
                ("Content-Length", "0"),
            ],
        )
        return [b""]

    return application


def call(app: WSGIApp, environ: Environ) -> None:
    """One request the way a server makes it: call, iterate the body, close it."""
    body = app(dict(environ), start_response)
    for _chunk in body:
        pass
    close = getattr(body, "close", None)
    if close is not None:
        close()


def capture(app: WSGIApp, environ: Environ) -> tuple[str, dict[str, str]]:
    """Status line and headers of one request, to check what is being timed."""
    seen: dict[str, Any] = {}

    def remember(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
        seen["status"], seen["headers"] = status, dict(headers)
        return _write

    body = app(dict(environ), remember)
    b"".join(body)
    return seen["status"], seen["headers"]


def time_calls(app: WSGIApp, environ: Environ, calls: int, repeats: int) -> Figure:
    """Median and best time per call over ``repeats`` batches of ``calls`` calls."""
    for _ in range(min(calls, 1000)):  # warm-up
        call(app, environ)
    per_call: list[float] = []
    for _ in range(repeats):
        gc.disable()
        try:
            start = time.perf_counter_ns()
            for _ in range(calls):
                call(app, environ)
            elapsed = time.perf_counter_ns() - start
        finally:
            gc.enable()
        per_call.append(elapsed / calls / 1000)
    return Figure(statistics.median(per_call), min(per_call))


def time_first_hits(make: Callable[[], WSGIApp], environ: Environ, instances: int) -> Figure:
    """Time of the first request to each of ``instances`` freshly made apps (construction not timed)."""
    per_call: list[float] = []
    for _ in range(instances):
        app = make()
        start = time.perf_counter_ns()
        call(app, environ)
        per_call.append((time.perf_counter_ns() - start) / 1000)
    return Figure(statistics.median(per_call), min(per_call))


def make_fixture(directory: Path) -> Config:
    sources = directory / "media"
    sources.mkdir()
    Image.radial_gradient("L").convert("RGB").resize((640, 480)).save(sources / "small.jpg", quality=90)
    return Config(
        source_roots={"default": str(sources)},
        database_url=f"sqlite:///{directory / 'fp.db'}",
        storage=str(directory / "results"),
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_row(name: str, figure: Figure, baseline: Figure | None, note: str) -> None:
    ratio = f"{figure.median_us / baseline.median_us:.2f}x" if baseline else "1.00x"
    print(f"{name:<14} {figure.median_us:>10.2f} {figure.best_us:>9.2f} {ratio:>8}  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per batch (default 20000)")
    parser.add_argument("--repeats", type=int, default=7, help="batches per figure (default 7)")
    parser.add_argument(
        "--first-hits",
        type=int,
        default=200,
        help="fresh middleware instances for the first-hit figure (default 200)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fp-bench-redirect-") as name:
        config = make_fixture(Path(name))
        registrar = Registrar(config)
        representation = registrar.register(INSTRUCTIONS)
        middleware = FileProcessor(wrapped_app, config, store=registrar.store)
        hit = Request.blank(representation.url).environ
        page = Request.blank("/page").environ
        status, headers = capture(middleware, hit)  # processes the image once
        if not status.startswith("301"):
            sys.exit(f"expected a 301 for {representation.url}, got {status!r}")
        bare = bare_redirects({representation.url: headers["Location"]})
        if capture(bare, hit) != (status, headers):
            print(f"note: bare 301 headers differ from the middleware's: {capture(bare, hit)} vs {headers}")

        print(
            f"python {sys.version.split()[0]}; {args.repeats} batches of {args.calls} calls; "
            f"times in microseconds per request"
        )
        print(f"warm hit: GET {representation.url} -> {status}, Location {headers['Location']}")
        print()
        print(f"{'request':<14} {'median us':>10} {'best us':>9} {'ratio':>8}  baseline")
        print("-" * 60)
        bare_figure = time_calls(bare, hit, args.calls, args.repeats)
        warm = time_calls(middleware, hit, args.calls, args.repeats)
        direct = time_calls(wrapped_app, page, args.calls, args.repeats)
        through = time_calls(middleware, page, args.calls, args.repeats)
        first = time_first_hits(
            lambda: FileProcessor(wrapped_app, config, store=registrar.store, storage=middleware.storage),
            hit,
            args.first_hits,
        )
        print_row("bare 301", bare_figure, None, "baseline")
        print_row("warm hit", warm, bare_figure, "vs bare 301")
        print_row("direct app", direct, None, "baseline")
        print_row("pass-through", through, direct, "vs direct app")
        print_row("first hit", first, bare_figure, f"vs bare 301 (info; {args.first_hits} fresh instances)")
        registrar.store.engine.dispose()

    ratio = warm.median_us / bare_figure.median_us
    print()
    print(
        f"warm hit / bare 301 (median): {ratio:.2f}x   target <= {TARGET:.0f}x   {verdict(ratio <= TARGET)}"
    )
    print(
        f"pass-through / direct app (median): {through.median_us / direct.median_us:.2f}x   "
        f"(+{through.median_us - direct.median_us:.2f} us per request)"
    )


if __name__ == "__main__":
    main()
