"""Tiny source files made by the tests themselves, helpers to read results back, and
real servers started on 127.0.0.1 for the tests that need one."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.client
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time

from PIL import Image, ImageCms, ImageDraw

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def halves(width: int = 600, height: int = 400, left=RED, right=BLUE, mode: str = "RGB") -> Image.Image:
    """Left half one colour, right half another: makes crops and flips visible."""
    image = Image.new(mode, (width, height), left if mode == "RGB" else left + (255,))
    ImageDraw.Draw(image).rectangle(
        [width // 2, 0, width, height], fill=right if mode == "RGB" else right + (255,)
    )
    return image


def write(directory, name: str, image: Image.Image, **params) -> str:
    path = os.path.join(directory, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **params)
    return path


@functools.cache
def srgb_profile() -> bytes:
    # Cached: littlecms stamps a new profile with the current time, so two calls differ.
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def colour_at(image: Image.Image, x: float, y: float):
    """The pixel at fractional coordinates, as RGB(A) whatever the mode."""
    pixel = image.convert("RGBA" if "A" in image.getbands() else "RGB").getpixel(
        (min(int(x * image.width), image.width - 1), min(int(y * image.height), image.height - 1))
    )
    return pixel


def close_to(actual, expected, tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=False))


class Site:
    """An embedded-default installation in a temporary directory, driven in-process."""

    def __init__(self, root, **settings):
        from fileproc_wsgi.config import Config
        from fileproc_wsgi.middleware import FileProcessor
        from fileproc_wsgi.registrar import Registrar

        self.root = root
        self.media = root / "media"
        self.media.mkdir(exist_ok=True)
        settings.setdefault("database_url", f"sqlite:///{root / 'fileproc.db'}")
        settings.setdefault("storage", str(root / "results"))
        settings.setdefault("source_roots", {"default": str(self.media)})
        self.config = Config(**settings)
        self.registrar = Registrar(self.config)
        self.store = self.registrar.store
        self.app = FileProcessor(None, self.config, store=self.store)

    def get(self, path: str, **options):
        from webob import Request

        response = Request.blank(path, **options).get_response(self.app)
        response.body  # noqa: B018 - read it all, as a server would, so files get closed
        return response

    def request(self, text: str):
        """Register ``text``, ask for its URL and follow the redirect like a browser."""
        response = self.get(self.registrar.register(text).url)
        if response.status_int in (301, 302, 307, 308):
            response = self.get(response.location)
        return response

    def make(self, text: str):
        representation = self.registrar.register(text)
        response = self.request(text)
        assert response.status_int == 200, response.text
        image = decode(response.body)
        image.fp_bytes = response.body
        return representation, image

    def close(self) -> None:
        self.app.close()
        self.registrar.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(command: list[str], *, port: int, cwd, env=None, timeout: float = 30):
    """Run a server process until the block ends; its output is shown if it fails to start."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                raise AssertionError(f"server did not start: {process.communicate(timeout=10)[0].decode()}")
            time.sleep(0.1)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        process.stdout.close()


def http_get(port: int, path: str, method: str = "GET"):
    """(status, headers, body) of one request to a server on 127.0.0.1."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


class DictCache:
    """The smallest shared cache a registrar accepts: ``get`` and ``set`` on a dict."""

    def __init__(self):
        self.values = {}

    def get(self, key):
        return self.values.get(key)

    def set(self, key, value):
        self.values[key] = value


# Headless Chromium through Playwright, with the system's browser: flags that work as root
# with no network (see ENVIRONMENT.md); Playwright adds --headless and a fresh profile.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# moto's S3 server accepts any credentials; AWS tools insist on having some.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def s3_server(directory):
    """A real S3-compatible HTTP server (moto_server, its own process) on 127.0.0.1; its URL."""
    import sys

    port = free_port()
    command = [
        os.path.join(os.path.dirname(sys.executable), "moto_server"),
        "-H",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    with serving(command, port=port, cwd=directory, env={**os.environ, **S3_CREDENTIALS}):
        yield f"http://127.0.0.1:{port}"


def gunicorn_command(port: int, *, threads: int, timeout: int) -> list[str]:
    """A production server for the processing app (``fileproc_wsgi.wsgi:application``): two
    threaded gunicorn workers bound to 127.0.0.1, configured by the ``FILEPROC_*`` environment."""
    import sys

    import gunicorn

    # gunicorn 25.1 and later open ~/.gunicorn/gunicorn.ctl, which two servers would share.
    no_control_socket = ["--no-control-socket"] if gunicorn.version_info >= (25, 1) else []
    return [
        sys.executable,
        "-m",
        "gunicorn",
        f"--bind=127.0.0.1:{port}",
        "--workers=2",
        "--worker-class=gthread",
        f"--threads={threads}",
        "--graceful-timeout=2",
        f"--timeout={timeout}",
        "--log-level=info",
        *no_control_socket,
        "fileproc_wsgi.wsgi:application",
    ]


# --------------------------------------------------------------------------- the contract
# What a user sees of one source, checked the same way by test_hostile, test_promise and
# test_corpus: registration either refuses with a readable reason or promises a size, and
# the first request either makes exactly that size (301) or refuses for good (422).

REFUSAL_TYPES = ("UnsupportedSourceError", "ProcessingError", "LimitError", "SourceNotFoundError")
# "a EPS", "a HLS", "an PDF": articles that do not match how the name is spoken.
_BAD_ARTICLE = re.compile(
    r"\ba (EPS|HLS|MKV|MP4|MP3|SVG|ICO|AVI|AVIF|MPEG|MPEG-TS|RGB|FLI|SGI|ICC|XBM|XPM)\b"
    r"|\ban (PDF|PNG|JPEG|GIF|TIFF|BMP|PSD|PSB|WebP|WEBP|PostScript|TGA|DDS|PCX|JPEG 2000|QOI|DIB|BLP)\b"
)
_LIBRARY_LEAKS = ("Traceback", "NoneType", "object has no attribute", "PDFium: Success", "((", "))")


@dataclasses.dataclass
class Outcome:
    """What one registration and its first request gave, and every way it broke the contract.

    ``kind`` is ``"made"``, ``"refused at registration"`` or ``"refused at request"`` (or
    ``"broken"`` when neither happened cleanly); ``problems`` is a list of ``(class, detail)``
    pairs, empty when the contract held.
    """

    text: str
    kind: str = "broken"
    reason: str = ""
    error_type: str = ""
    status: int | None = None
    promised: tuple[int, int] | None = None
    made: tuple[int, int] | None = None
    problems: list = dataclasses.field(default_factory=list)

    def problem(self, kind: str, detail: str) -> None:
        self.problems.append((kind, detail))

    def describe(self) -> str:
        found = "; ".join(f"{kind}: {detail}" for kind, detail in self.problems) or "no problem"
        return f"{self.text!r} -> {self.kind} ({self.status}, {self.reason!r}): {found}"


def reason_problems(reason: str, *, root: str, fmt: str | None = None) -> list[str]:
    """Why ``reason`` does not read as a one-line sentence a user may be shown, if it does not."""
    found = []
    if "\n" in reason or "\r" in reason:
        found.append("more than one line")
    if not reason.strip():
        found.append("empty")
    if root and root in reason:
        found.append("names a server path")
    for leak in _LIBRARY_LEAKS:
        if leak in reason:
            found.append(f"contains {leak!r}")
    article = _BAD_ARTICLE.search(reason)
    if article:
        found.append(f"wrong article: {article.group(0)!r}")
    if fmt and fmt.lower() not in reason.lower():
        found.append(f"does not name the format {fmt}")
    return found


def first_request(site: Site, text: str, *, fmt: str | None = None, tolerance: int = 0) -> Outcome:
    """Register ``text`` and ask for its URL once (and again when refused), as a page and a
    browser would; every departure from the contract is recorded, never raised.

    ``fmt`` is the format name a refusal's reason must contain. A made result is decoded with
    Pillow and its size compared with the promised one (``tolerance`` pixels either way).
    """
    from webob import Request

    from fileproc_wsgi.errors import FileProcError

    outcome = Outcome(text)
    root = str(site.root)
    try:
        representation = site.registrar.register(text)
    except FileProcError as error:
        outcome.kind, outcome.reason = "refused at registration", str(error)
        outcome.error_type = type(error).__name__
        if outcome.error_type not in REFUSAL_TYPES:
            outcome.problem("refusal of the wrong type", f"{outcome.error_type}: {error}")
        for problem in reason_problems(str(error), root=root, fmt=fmt):
            outcome.problem("reason reads badly", f"{problem}: {str(error)!r}")
        return outcome
    except Exception as error:  # noqa: BLE001 - this is what the test looks for
        outcome.problem("exception escaped registration", f"{type(error).__name__}: {error}")
        return outcome
    if representation.width is not None:
        outcome.promised = (representation.width, representation.height)

    def ask(path: str):
        response = Request.blank(path).get_response(site.app)
        response.body  # noqa: B018 - read it all, as a server would, so files get closed
        return response

    try:
        response = ask(representation.url)
    except Exception as error:  # noqa: BLE001
        outcome.problem("exception escaped the request", f"{type(error).__name__}: {error}")
        return outcome
    outcome.status = response.status_int
    # Once made, the registrar prints the result's own URL: a 200 with the image itself.
    final = not representation.url.startswith(f"{site.config.prefix}/{representation.checksum}")
    made = response.status_int == 301 or (response.status_int == 200 and final)
    if made:
        try:
            result = ask(response.location) if response.status_int == 301 else response
            image = decode(result.body)
        except Exception as error:  # noqa: BLE001
            outcome.problem("result not readable", f"{type(error).__name__}: {error}")
            return outcome
        outcome.kind, outcome.made = "made", image.size
        pairs = zip(image.size, outcome.promised or image.size, strict=True)
        if any(abs(made - promised) > tolerance for made, promised in pairs):
            outcome.problem(
                "size promised is not size made",
                f"promised {outcome.promised[0]}x{outcome.promised[1]}, made {image.width}x{image.height}",
            )
        return outcome
    outcome.reason = response.text if response.content_type.startswith("text/") else ""
    if response.status_int != 422:
        outcome.problem(f"answered {response.status_int}", response.text[:200])
        return outcome
    outcome.kind = "refused at request"
    if response.content_type != "text/plain":
        outcome.problem("refusal is not text/plain", response.content_type)
    for problem in reason_problems(response.text.strip(), root=root, fmt=fmt):
        outcome.problem("reason reads badly", f"{problem}: {response.text.strip()!r}")
    job = site.store.find(representation.checksum)
    if job is None or job.state != "failed" or job.retry_at is not None:
        state = None if job is None else (job.state, job.retry_at)
        outcome.problem("refusal not recorded as permanent", f"store row: {state}")
    again = ask(representation.url)
    if (again.status_int, again.text) != (response.status_int, response.text):
        outcome.problem("second request differs", f"{again.status_int} {again.text[:120]!r}")
    return outcome


def pip_install_target(source, target) -> None:
    """``pip install`` the project at ``source`` into the directory ``target`` (no
    dependencies, no index, no build isolation): a real install that only a process with
    ``target`` on its PYTHONPATH sees."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--target", str(target), str(source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
