"""Tiny source files made by the tests themselves, helpers to read results back, and
real servers started on 127.0.0.1 for the tests that need one."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

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


class DictCache:
    """The smallest shared cache a registrar accepts: ``get`` and ``set`` on a dict."""

    def __init__(self):
        self.values = {}

    def get(self, key):
        return self.values.get(key)

    def set(self, key, value):
        self.values[key] = value


# --------------------------------------------------------------------------- real servers
# Started by the tests and by the benchmarks (bench/ puts tests/ on its path): one copy of
# each starter. A server that cannot start raises ServerError with its output.


class ServerError(RuntimeError):
    """A server for a test or a benchmark did not start; the message holds why (its output)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(
    command: list[str],
    *,
    port: int,
    cwd,
    env=None,
    timeout: float = 30,
    log: Path | None = None,
    stop_signal: int = signal.SIGTERM,
) -> Iterator[subprocess.Popen]:
    """Run a server process in a session of its own until the block ends, once it accepts
    connections on ``port``; then its process group gets ``stop_signal``.

    Its output goes to a pipe (``process.stdout``) or, when a long run could fill one, to
    the file ``log``; either is in the ServerError raised if it does not start in time.
    """
    with open(log, "wb") if log else contextlib.nullcontext(subprocess.PIPE) as output:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                said = process.communicate(timeout=10)[0] if log is None else log.read_bytes()[-4000:]
                raise ServerError(f"server did not start: {said.decode(errors='replace')}")
            time.sleep(0.1)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, stop_signal)
        process.wait(timeout=30)
        if process.stdout:
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
    """A real S3-compatible HTTP server (moto_server, its own process) on 127.0.0.1; its URL.

    It runs in ``directory`` and logs there (``moto_server.log``): a line per request would
    fill a pipe in a long run."""
    port = free_port()
    command = [
        os.path.join(os.path.dirname(sys.executable), "moto_server"),
        "-H",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    env = {**os.environ, **S3_CREDENTIALS}
    with serving(command, port=port, cwd=directory, env=env, log=Path(directory, "moto_server.log")):
        yield f"http://127.0.0.1:{port}"


WSGI_APPLICATION = "fileproc_wsgi.wsgi:application"


def gunicorn_command(
    port: int, *, threads: int, timeout: int, app: str = WSGI_APPLICATION, pythonpath: str | None = None
) -> list[str]:
    """A production server for ``app`` (by default the processing app, configured by the
    ``FILEPROC_*`` environment): two threaded gunicorn workers bound to 127.0.0.1."""
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
        *([f"--pythonpath={pythonpath}"] if pythonpath else []),
        app,
    ]


@dataclasses.dataclass
class Gunicorn:
    """A running gunicorn server: its port, its arbiter process and the file of its output."""

    name: str
    port: int
    process: subprocess.Popen
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def workers(self) -> list[int]:
        """The arbiter's live worker processes, read from /proc (no psutil)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue  # gone meanwhile
            # The command name may contain spaces; the fields after it start past its ")".
            state, parent = stat.rpartition(")")[2].split()[:2]
            if int(parent) == self.process.pid and state not in "ZX":
                found.append(int(entry))
        return found


@contextlib.contextmanager
def gunicorn(
    name: str,
    *,
    env: dict[str, str],
    logs: Path,
    threads: int,
    timeout: int,
    app: str = WSGI_APPLICATION,
    pythonpath: str | None = None,
    start_timeout: float = 60,
) -> Iterator[Gunicorn]:
    """``gunicorn_command`` run from the checkout, its output in ``logs/gunicorn-<name>.log``;
    ready once both workers have booted and one answers a result URL nobody registered (the
    processing app's 404). Its whole process group is killed at the end, stopped workers too."""
    port = free_port()
    log = logs / f"gunicorn-{name}.log"
    command = gunicorn_command(port, threads=threads, timeout=timeout, app=app, pythonpath=pythonpath)
    root = Path(__file__).resolve().parent.parent
    with serving(
        command, port=port, cwd=root, env=env, timeout=start_timeout, log=log, stop_signal=signal.SIGKILL
    ) as process:
        server = Gunicorn(name, port, process, log)
        deadline = time.monotonic() + start_timeout
        while not _answers(server):
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServerError(
                    f"gunicorn {name} did not start:\n{log.read_text(errors='replace')[-4000:]}"
                )
            time.sleep(0.1)
        yield server


def _answers(server: Gunicorn) -> bool:
    if len(server.workers()) != 2:
        return False
    with contextlib.suppress(OSError, http.client.HTTPException):
        return http_get(server.port, "/_fp/" + "0" * 32 + ".jpg")[0] == 404
    return False


# PostgreSQL 15's initdb and pg_ctl (bin/dev installs them).
PG_BIN = Path(os.environ.get("FILEPROC_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgreSQL:
    """A throw-away PostgreSQL server on a free loopback port, made by ``initdb`` in a
    temporary directory when built. ``start`` and ``stop`` it as often as needed (a test
    causing an outage); ``close`` (or the end of a ``with`` block) stops it and removes it.

    ``settings`` are extra server settings (``max_connections="200"``). Durability is off:
    the data lives as long as the process using it. PostgreSQL refuses to run as root, so as
    root ``initdb`` and ``pg_ctl`` run as the ``postgres`` user (the interpreter itself
    cannot: it may live in root's home).
    """

    def __init__(self, **settings: str):
        initdb = PG_BIN / "initdb"
        if not os.access(initdb, os.X_OK):
            raise ServerError(f"{initdb} is missing (run bin/dev to install it)")
        self.directory = Path(tempfile.mkdtemp(prefix="fileproc-pg-"))
        self.data, self.log = self.directory / "data", self.directory / "server.log"
        self.port = free_port()
        self.running = False
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.directory),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            **settings,
        }
        self.options = f"-p {self.port} " + " ".join(f"-c {key}={value}" for key, value in settings.items())
        try:
            if os.geteuid() == 0:
                shutil.chown(self.directory, "postgres", "postgres")
            initdb_options = ["-U", "postgres", "-A", "trust", "--no-sync", "--encoding=UTF8", "--locale=C"]
            self._run("initdb", "initdb", "-D", self.data, *initdb_options)
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise

    def start(self) -> None:
        if self.running:
            return
        self.running = True  # a start that fails may still leave a server to stop
        # -l matters: without a log file the server keeps our captured stdout open forever.
        wait = ["-w", "-t", "60"]
        self._run(
            "pg_ctl start", "pg_ctl", "-D", self.data, "-l", self.log, *wait, "-o", self.options, "start"
        )

    def stop(self) -> None:
        self._run("pg_ctl stop", "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        self.running = False

    def database(self, name: str | None = None) -> str:
        """A new empty database (``name``, or a name of its own), its SQLAlchemy URL; the
        server is started first if it is stopped (a test that failed before mending its outage)."""
        import psycopg

        self.start()
        name = name or f"db_{uuid.uuid4().hex[:16]}"
        try:
            with psycopg.connect(
                host="127.0.0.1",
                port=self.port,
                user="postgres",
                dbname="postgres",
                autocommit=True,
                connect_timeout=10,
            ) as connection:
                connection.execute(f'CREATE DATABASE "{name}"')
        except psycopg.Error as error:
            raise ServerError(f"CREATE DATABASE {name} failed: {error}") from error
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        if self.running:
            with contextlib.suppress(ServerError):  # it may have stopped on its own
                self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgreSQL:
        return self

    def __exit__(self, *exception) -> None:
        self.close()

    def _run(self, what: str, program: str, *arguments) -> None:
        command = _as_postgres(str(PG_BIN / program), *map(str, arguments))
        try:
            done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ServerError(f"{what} failed: {error}") from error
        if done.returncode != 0:
            tail = ""
            if self.log.exists():
                tail = "\nserver log:\n" + self.log.read_text(errors="replace")[-4000:]
            raise ServerError(f"{what} exited {done.returncode}:\n{done.stdout}{done.stderr}{tail}")


def _as_postgres(*command: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@contextlib.contextmanager
def postgresql(database: str = "fileproc", **settings: str) -> Iterator[str]:
    """A started :class:`PostgreSQL` holding one empty ``database``: its SQLAlchemy URL."""
    with PostgreSQL(**settings) as server:
        server.start()
        yield server.database(database)


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


# Every native decoder a source kind could bring into a process.
NATIVE_MODULES = ("pypdfium2", "av", "wand", "rawpy", "pillow_heif", "pillow_jxl", "pillow_lunasvg", "numpy")

_REGISTER_FRESH = """
import json, sys
from fileproc_wsgi.config import Config
from fileproc_wsgi.errors import FileProcError
from fileproc_wsgi.registrar import Registrar

root, texts, settings, native = sys.argv[1], *map(json.loads, sys.argv[2:])
registrar = Registrar(Config(
    database_url=f"sqlite:///{root}/fileproc.db", source_roots={"default": root}, storage=f"{root}/results",
    **settings,
))
sizes = {}
for text in texts:
    try:
        registered = registrar.register(text)
        sizes[text] = [registered.width, registered.height]
    except FileProcError as error:
        sizes[text] = f"{type(error).__name__}: {error}"
registrar.close()
print(json.dumps({"sizes": sizes, "loaded": sorted(name for name in native if name in sys.modules)}))
"""


def register_in_a_fresh_process(root, texts, **settings) -> tuple[dict, list[str]]:
    """Register ``texts`` (sources under ``root``) in a new interpreter, as a web process
    whose jobs run in workers would: each text's ``[width, height]`` or ``"Error: message"``,
    and which of :data:`NATIVE_MODULES` that process loaded."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _REGISTER_FRESH,
            str(root),
            *map(json.dumps, (list(texts), settings, NATIVE_MODULES)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    return outcome["sizes"], outcome["loaded"]
