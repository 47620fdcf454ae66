"""The first registration of a new process against a warm one, on SQLite and PostgreSQL.

What it measures
    A temporary directory holds a 640x480 JPEG and local result storage; the store is a
    SQLite file there and (unless ``--no-postgresql``) a database on a PostgreSQL the script
    starts itself (``postgresql()`` of ``tests/support.py``, as the tests start theirs:
    ``initdb``/``pg_ctl`` on a free loopback port, stopped at the end). Each store is
    migrated first (``fileproc migrate``), as in production, and holds a few hundred rows.

    warm         a long-lived child process builds ``Registrar(Config(...))``, registers
                 once, then registers ``--warm`` new instruction texts (new rows: header
                 read, insert, commit) one at a time; the median of those. It then stays,
                 holding the database open as a running site's processes do, while:
    first        ``--processes`` fresh children (``python -c``), one after the other; each
                 imports what a first registration imports, then times from there to the
                 end of its first ``register`` of a new text: building the Config and the
                 Registrar, the schema check, the generation read, the header read and
                 the insert. Module imports are outside the timing: the modules a first
                 registration would import on its own (the SQLite or PostgreSQL driver, the
                 raster engine, Pillow's plugins) are found by one discovery child and
                 imported by the others before the clock starts.
    as shipped   the same children, timed from after ``import fileproc_wsgi.registrar``,
                 so those lazy imports are counted (information only).
    baseline     the same children forced onto the path before issue 11: the schema check
                 through Alembic on first use (``InstructionStore.recorded`` answering
                 nothing), every engine imported, the insert compiled by SQLAlchemy
                 (information only; Alembic's import is counted, as it was).
    alone        "first" again once the long-lived process has exited (information only):
                 SQLite then removes its write-ahead log when a process's last connection
                 closes, and every process's first write makes it again.
    connect      (PostgreSQL) a bare ``psycopg.connect`` in each first child: PostgreSQL
                 forks a backend per connection, which no client code can avoid and a
                 warm process does not pay (its pool keeps the connection).

Target
    first <= warm + 5 ms (medians), on each database. On PostgreSQL the connection itself
    is printed beside it, and the target is checked on first - connect.

Usage: ``python bench/firstuse.py [--processes N] [--warm N] [--no-postgresql]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this working tree, installed or not
sys.path.insert(1, str(ROOT / "tests"))

from support import PG_BIN, postgresql  # noqa: E402 - the PostgreSQL starter of the tests

TARGET_MS = 5.0
SOURCE = "photo.jpg"

# A child: argv = mode, database URL, media directory, results directory, text, preloads.
_CHILD = r"""
import json, sys, time
mode, url, media, results, text = sys.argv[1:6]
preload = json.loads(sys.argv[6])
import fileproc_wsgi.registrar
from fileproc_wsgi.config import Config
from fileproc_wsgi.registrar import Registrar
from fileproc_wsgi.store import InstructionStore

for name in preload:
    __import__(name)
if "PIL.Image" in preload:
    from PIL import Image
    Image.preinit()  # Pillow imports its common plugins on the first open
if mode == "baseline":
    import fileproc_wsgi.engines.magick, fileproc_wsgi.engines.pdf, fileproc_wsgi.engines.video
    InstructionStore.recorded = lambda store: (None, None)
    _setup = InstructionStore._setup
    def _old_setup(store, engine, clock):
        _setup(store, engine, clock)
        store._row_values = None
    InstructionStore._setup = _old_setup
figures = {}
if url.startswith("postgresql"):
    import psycopg, sqlalchemy
    parts = sqlalchemy.make_url(url)
    started = time.perf_counter()
    psycopg.connect(host=parts.host, port=parts.port, user=parts.username, dbname=parts.database).close()
    figures["connect"] = (time.perf_counter() - started) * 1000
before = set(sys.modules)
started = time.perf_counter()
registrar = Registrar(Config(database_url=url, source_roots={"default": media}, storage=results))
registrar.register(text.format(0))
figures["first"] = (time.perf_counter() - started) * 1000
figures["imported"] = sorted(set(sys.modules) - before)
if mode == "warm":
    times = []
    for number in range(1, int(sys.argv[7]) + 1):
        started = time.perf_counter()
        registrar.register(text.format(number))
        times.append((time.perf_counter() - started) * 1000)
    figures["warm"] = times
    # Stay, holding the database open as a running site's processes do, until told.
    print(json.dumps(figures), flush=True)
    sys.stdin.read()
registrar.close()
if mode != "warm":
    print(json.dumps(figures))
"""


class Counter:
    """Hands out instruction texts no store has seen, so every registration is a new row."""

    def __init__(self) -> None:
        self.next = 1000

    def text(self) -> str:
        self.next += 1
        # {} is the child's own number: each of its registrations is new as well.
        return f"{SOURCE} | fit {self.next}x{{}}1"


def _command(mode: str, url: str, media: Path, results: Path, text: str, preload: list[str], warm: int):
    command = [sys.executable, "-c", _CHILD, mode, url, str(media), str(results), text, json.dumps(preload)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("FILEPROC_")}
    env["PYTHONPATH"] = str(ROOT)
    return [*command, str(warm)], env


def child(mode: str, url: str, media: Path, results: Path, text: str, preload: list[str]) -> dict:
    command, env = _command(mode, url, media, results, text, preload, 0)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=media)
    if done.returncode != 0:
        sys.exit(f"bench/firstuse.py: a child failed ({mode}, {url.split(':')[0]}):\n{done.stderr}")
    return json.loads(done.stdout)


@contextlib.contextmanager
def long_lived(url: str, media: Path, results: Path, text: str, preload: list[str], warm: int):
    """The warm process: it times its registrations, then stays with the database open."""
    command, env = _command("warm", url, media, results, text, preload, warm)
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=media
    ) as process:
        line = process.stdout.readline()
        if not line:
            sys.exit(f"bench/firstuse.py: the warm process failed ({url.split(':')[0]})")
        try:
            yield json.loads(line)["warm"]
        finally:
            process.stdin.close()
            process.wait(timeout=60)


def measure(url: str, media: Path, results: Path, args, counter: Counter) -> dict[str, list[float]]:
    from fileproc_wsgi.config import Config
    from fileproc_wsgi.registrar import Registrar
    from fileproc_wsgi.store import upgrade

    upgrade(url)
    config = Config(database_url=url, source_roots={"default": str(media)}, storage=str(results))
    registrar = Registrar(config)
    registrar.register_many([f"{SOURCE} | fit {width}x" for width in range(10, 310)])
    registrar.close()

    # The modules a first registration imports by itself, beyond fileproc_wsgi.registrar.
    preload = child("shipped", url, media, results, counter.text(), [])["imported"]
    figures: dict[str, list[float]] = {
        kind: [] for kind in ("first", "shipped", "baseline", "alone", "connect")
    }
    with long_lived(url, media, results, counter.text(), preload, args.warm) as warm:
        figures["warm"] = warm
        for _ in range(args.processes):
            # Interleaved, so a slow moment of the machine falls on every kind alike.
            first = child("first", url, media, results, counter.text(), preload)
            figures["first"].append(first["first"])
            if "connect" in first:
                figures["connect"].append(first["connect"])
            figures["shipped"].append(child("shipped", url, media, results, counter.text(), [])["first"])
            figures["baseline"].append(
                child("baseline", url, media, results, counter.text(), preload)["first"]
            )
    # No other process holding the database: SQLite removes its write-ahead log when the
    # last connection closes, and each process's first write makes it again.
    for _ in range(args.processes):
        figures["alone"].append(child("first", url, media, results, counter.text(), preload)["first"])
    return figures


@contextlib.contextmanager
def databases(directory: Path, with_postgresql: bool) -> Iterator[list[tuple[str, str]]]:
    found = [("SQLite", f"sqlite:///{directory / 'fileproc.db'}")]
    if not with_postgresql:
        yield found
        return
    with postgresql() as url:
        yield [*found, ("PostgreSQL", url)]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=15, help="fresh processes of each kind (default 15)")
    parser.add_argument("--warm", type=int, default=200, help="warm registrations to time (default 200)")
    parser.add_argument("--no-postgresql", action="store_true", help="SQLite only")
    args = parser.parse_args()
    if not 1 <= args.processes <= 200 or not 10 <= args.warm <= 5000:
        parser.error("--processes: 1 to 200; --warm: 10 to 5000")
    with_postgresql = not args.no_postgresql
    if with_postgresql and not (PG_BIN / "initdb").exists():
        parser.error(f"no PostgreSQL at {PG_BIN} (set FILEPROC_TEST_PG_BIN, or pass --no-postgresql)")

    counter = Counter()
    results_by_database = []
    with tempfile.TemporaryDirectory(prefix="fp-bench-firstuse-") as name:
        directory = Path(name)
        media, results = directory / "media", directory / "results"
        media.mkdir()
        Image.effect_mandelbrot((640, 480), (-2, -1.2, 1, 1.2), 60).convert("RGB").save(media / SOURCE)
        with databases(directory, with_postgresql) as found:
            for label, url in found:
                results_by_database.append((label, measure(url, media, results, args, counter)))

    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; one 640x480 JPEG, a new "
        f"'fit' text per registration; {args.processes} fresh processes of each kind, "
        f"{args.warm} warm registrations"
    )
    print()
    columns = ("warm", "first", "first-warm", "alone", "as shipped", "baseline")
    print(f"{'database':<11}" + "".join(f"{column:>11}" for column in columns) + "  (ms, medians)")
    print("-" * 92)
    ok = True
    verdicts = []
    for label, figures in results_by_database:
        warm, first = median(figures["warm"]), median(figures["first"])
        shown = (warm, first, first - warm, *(median(figures[k]) for k in ("alone", "shipped", "baseline")))
        print(f"{label:<11}" + "".join(f"{value:>11.2f}" for value in shown))
        # PostgreSQL forks a backend for every new connection: no client code avoids it.
        connect = median(figures["connect"]) if figures["connect"] else 0.0
        beyond = first - warm - connect
        passed = beyond <= TARGET_MS
        ok &= passed
        what = "first - warm" + (f" - connect ({connect:.2f})" if connect else "")
        verdicts.append(
            f"  {label:<11} {what} = {beyond:.2f} ms <= {TARGET_MS:g} ms  {'PASS' if passed else 'FAIL'}"
        )
    print()
    print("target: a first registration within 5 ms of a warm one (medians)")
    print("\n".join(verdicts))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
