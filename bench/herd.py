"""A thundering herd on two real servers, and warm-hit redirect throughput under gunicorn.

What it measures
    The script starts its own PostgreSQL 15 (``initdb`` and ``pg_ctl`` as the ``postgres``
    user when run as root, on a free loopback port, in a temporary directory; stopped at
    the end) and generates a 6000x4000 JPEG. Every server is gunicorn on 127.0.0.1 with
    threaded workers, running ``fileproc_wsgi.wsgi:application`` configured by
    ``FILEPROC_*`` variables; the servers share the one database and one results directory.
    Both kinds of server are started as the tests start them (``tests/support.py``).

    herd         two servers, 2 workers x 16 threads each; ``--herd`` (50) concurrent
                 first GETs for a newly registered checksum, spread evenly over both
                 servers and released together by a barrier. Wall time from the first
                 request sent to the last answer received. The store row is then read:
                 ``attempts`` (claims) and ``token`` must both be 1, the job processed once.
    uncontended  one GET for another new checksum with the same work (the same steps on a
                 hard link to the same source, so only the checksum differs), to server A.
    The job is ``blur 4 | fit 400x300``: blurring first defeats JPEG draft decoding, so it
    takes long enough (about 1.5 s) for the whole herd to arrive while it runs. Each of
    ``--rounds`` rounds does one uncontended request, then one herd; medians are reported.

    warm hits    ``wrk -t2 -c16 -d<--duration>s`` on ``/_fp/<checksum>.jpg`` of a finished
                 result, against gunicorn serving the FileProcessor, and against the same
                 gunicorn command serving a bare WSGI app that answers the same 301 (the
                 status line and headers the FileProcessor sent) from a dict. Both servers
                 have 2 workers x 4 threads and are warmed up for 1 s first; the two are
                 measured alternately, ``--rounds`` times each, and the medians compared.

Targets
    herd: processed exactly once, every answer a 301 to the same Location (every round).
    warm hits: >= 90 % of the bare app's requests per second (medians).
    The herd's wall time against one uncontended request is printed without a target: the
    waiting requests poll the store with a back-off capped at 0.5 s, so up to that much on
    top of the work itself is expected.

Usage: ``python bench/herd.py [--herd N] [--rounds R] [--duration SECONDS]``
(needs ``wrk``: ``bin/dev`` installs it)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # measure this working tree, installed or not
sys.path.insert(1, str(ROOT / "tests"))

# The servers are started as the tests start them.
from support import PG_BIN, WSGI_APPLICATION, Gunicorn, ServerError, gunicorn, postgresql  # noqa: E402

SIZE = (6000, 4000)
STEPS = "blur 4 | fit 400x300 | format jpeg"
HERD_THREADS = 16  # per worker: 2 servers x 2 workers x 16 threads hold the whole herd at once
WARM_THREADS = 4
WRK_THREADS = 2
WRK_CONNECTIONS = 16
THROUGHPUT_TARGET = 0.90  # FileProcessor req/s / bare app req/s
BARE_ENV = "HERD_BARE_REDIRECT"  # the bare app's one answer, as JSON
REQUEST_TIMEOUT = 120.0
GUNICORN_HEADERS = ("Server", "Date", "Connection", "Transfer-Encoding")


# -- the bare app gunicorn serves as the baseline -----------------------------------------------


def bare_application() -> Callable[..., Iterable[bytes]]:
    """A WSGI app answering one path with a fixed redirect (read from the environment) and 404 otherwise.

    Loaded by gunicorn as ``herd:bare_application()``, with ``bench/`` on its path.
    """
    answer = json.loads(os.environ[BARE_ENV])
    table = {answer["path"]: (answer["status"], [tuple(header) for header in answer["headers"]])}
    not_found = ("404 Not Found", [("Content-Length", "0")])

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status, headers = table.get(environ["PATH_INFO"], not_found)
        start_response(status, headers)
        return [b""]

    return application


# -- servers ------------------------------------------------------------------------------------


def serving(name: str, env: dict[str, str], threads: int, logs: Path, app: str = WSGI_APPLICATION):
    """One gunicorn (an arbiter and two workers) with ``bench/`` on its path, for the bare app."""
    return gunicorn(
        name, env=env, logs=logs, threads=threads, timeout=30, app=app, pythonpath=str(ROOT / "bench")
    )


# -- requests -----------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int | None = None
    location: str | None = None
    headers: list[tuple[str, str]] | None = None
    started: float = 0.0
    finished: float = 0.0
    error: str | None = None


def get(port: int, path: str, answer: Answer | None = None, timeout: float = REQUEST_TIMEOUT) -> Answer:
    """One GET on a new connection; a failure is recorded in the answer, never raised."""
    answer = answer or Answer()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    answer.started = time.perf_counter()
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        answer.status, answer.location = response.status, response.getheader("Location")
        answer.headers = response.getheaders()
    except (OSError, http.client.HTTPException) as error:
        answer.error = f"{type(error).__name__}: {error}"
    finally:
        answer.finished = time.perf_counter()
        connection.close()
    return answer


def herd(ports: list[int], path: str, count: int) -> list[Answer]:
    """``count`` GETs for ``path`` released together, spread evenly over ``ports``."""
    answers = [Answer() for _ in range(count)]
    barrier = threading.Barrier(count)

    def one(index: int) -> None:
        try:
            barrier.wait(timeout=30)
        except threading.BrokenBarrierError:
            answers[index].error = "never released: the barrier broke"
            return
        get(ports[index % len(ports)], path, answers[index])

    threads = [threading.Thread(target=one, args=(index,), daemon=True) for index in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + REQUEST_TIMEOUT + 30
    for thread in threads:
        thread.join(timeout=max(0.1, deadline - time.monotonic()))
    for thread, answer in zip(threads, answers, strict=True):
        if thread.is_alive():
            answer.error = "no answer in time"
    return answers


# -- the two measurements -----------------------------------------------------------------------


@dataclass
class HerdRound:
    uncontended_s: float
    herd_s: float
    statuses: dict[str, int]
    locations: int
    attempts: int
    token: int

    @property
    def once(self) -> bool:
        return self.attempts == 1 and self.token == 1

    @property
    def all_redirected(self) -> bool:
        return set(self.statuses) == {"301"} and self.locations == 1


def make_source(path: Path) -> None:
    from PIL import Image

    noise = Image.effect_noise(SIZE, 60)
    gradient = Image.linear_gradient("L").resize(SIZE)
    Image.merge("RGB", (noise, gradient, noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT))).save(
        path, quality=90
    )


def measure_herd(registrar, servers: list[Gunicorn], media: Path, rounds: int, count: int) -> list[HerdRound]:
    figures = []
    for number in range(rounds):
        texts = []
        for kind in ("alone", "herd"):
            link = media / f"big-{number}-{kind}.jpg"
            os.link(media / "big.jpg", link)  # the same bytes under a new name: a new checksum, same work
            texts.append(f"{link.name} | {STEPS}")
        alone, crowded = (registrar.register(text) for text in texts)
        single = get(servers[0].port, alone.url)
        if single.status != 301:
            sys.exit(f"uncontended request: expected a 301, got {single.status or single.error}")
        answers = herd([server.port for server in servers], crowded.url, count)
        job = registrar.store.get(crowded.checksum)
        statuses: dict[str, int] = {}
        for answer in answers:
            key = str(answer.status) if answer.error is None else "error"
            statuses[key] = statuses.get(key, 0) + 1
        errors = sorted({answer.error for answer in answers if answer.error})
        if errors:
            print(f"  round {number + 1}: request errors: {'; '.join(errors[:3])}")
        figures.append(
            HerdRound(
                uncontended_s=single.finished - single.started,
                herd_s=max(a.finished for a in answers) - min(a.started for a in answers),
                statuses=statuses,
                locations=len({answer.location for answer in answers}),
                attempts=job.attempts,
                token=job.token,
            )
        )
    return figures


def run_wrk(url: str, seconds: int) -> tuple[float, str]:
    """Requests per second wrk measured, and a note of any errors it counted."""
    command = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{seconds}s", url]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    if rate is None:
        sys.exit(f"could not read wrk's output:\n{output}")
    problems = re.findall(r"^\s*(Non-2xx or 3xx responses: \d+|Socket errors: .*)$", output, re.MULTILINE)
    return float(rate.group(1)), "; ".join(problems)


def undated(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(key, value) for key, value in headers if key != "Date"]


def measure_throughput(env: dict[str, str], path: str, logs: Path, rounds: int, seconds: int):
    """Median req/s of (bare app, FileProcessor) under wrk, measured alternately."""
    with serving("warm", env, WARM_THREADS, logs) as ours:
        first = get(ours.port, path)
        if first.status != 301:
            sys.exit(f"warm-hit server: expected a 301 for {path}, got {first.status or first.error}")
        # The bare app sends the FileProcessor's status and headers, except those gunicorn
        # adds to every answer anyway.
        headers = [(key, value) for key, value in first.headers if key not in GUNICORN_HEADERS]
        answer = {"path": path, "status": f"{first.status} Moved Permanently", "headers": headers}
        bare_env = {**env, BARE_ENV: json.dumps(answer)}
        with serving("bare", bare_env, WARM_THREADS, logs, app="herd:bare_application()") as bare:
            check = get(bare.port, path)
            if undated(check.headers or []) != undated(first.headers):
                sys.exit(f"the bare app answers {check.headers}, the FileProcessor {first.headers}")
            for server in (bare, ours):  # every worker has seen the URL (and cached its redirect)
                run_wrk(server.url(path), 1)
            figures: dict[str, list[float]] = {"bare": [], "ours": []}
            notes = set()
            for _ in range(rounds):
                for name, server in (("bare", bare), ("ours", ours)):
                    rate, problems = run_wrk(server.url(path), seconds)
                    figures[name].append(rate)
                    if problems:
                        notes.add(f"{name}: {problems}")
    return figures, sorted(notes)


# -- report -------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def measure(args: argparse.Namespace) -> tuple[list[HerdRound], dict[str, list[float]], list[str]]:
    """Both measurements, on a PostgreSQL and gunicorn servers of their own, stopped at the end."""
    from fileproc_wsgi.config import Config
    from fileproc_wsgi.registrar import Registrar

    with (
        tempfile.TemporaryDirectory(prefix="fp-bench-herd-") as name,
        postgresql("herd", max_connections="200") as database_url,
    ):
        directory = Path(name)
        media = directory / "media"
        media.mkdir()
        make_source(media / "big.jpg")
        settings = {
            "FILEPROC_DATABASE_URL": database_url,
            "FILEPROC_SOURCE_ROOTS": f"default={media}",
            "FILEPROC_STORAGE": str(directory / "results"),
            "FILEPROC_WAIT_TIMEOUT": "90",
        }
        env = {key: value for key, value in os.environ.items() if not key.startswith("FILEPROC_")}
        env.update(settings)
        registrar = Registrar(Config.from_env(settings))
        registrar.store.create_tables()
        try:
            with contextlib.ExitStack() as stack:
                servers = [
                    stack.enter_context(serving(label, env, HERD_THREADS, directory)) for label in ("A", "B")
                ]
                rounds = measure_herd(registrar, servers, media, args.rounds, args.herd)
            warm = registrar.register(f"big.jpg | {STEPS}")
            throughput, notes = measure_throughput(env, warm.url, directory, args.rounds, args.duration)
        finally:
            registrar.store.dispose()
    return rounds, throughput, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--herd", type=int, default=50, help="concurrent first requests (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each measurement (default 3)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    args = parser.parse_args()
    if not 1 <= args.herd <= 2 * 2 * HERD_THREADS:
        parser.error(f"--herd: between 1 and {2 * 2 * HERD_THREADS} (the servers' threads)")
    if not 1 <= args.rounds <= 20 or not 1 <= args.duration <= 60:
        parser.error("--rounds: 1 to 20; --duration: 1 to 60 seconds")
    if shutil.which("wrk") is None:
        print(
            "bench/herd.py: wrk is not installed; bin/dev installs it (apt-get install wrk)", file=sys.stderr
        )
        return 1

    from gunicorn import __version__ as gunicorn_version

    try:
        rounds, throughput, notes = measure(args)
    except ServerError as error:
        print(f"bench/herd.py: {error}", file=sys.stderr)
        return 1

    print(
        f"python {sys.version.split()[0]}, gunicorn {gunicorn_version}, PostgreSQL "
        f"{PG_BIN.parent.name}, {os.cpu_count()} CPUs; source {SIZE[0]}x{SIZE[1]} JPEG, job '{STEPS}'"
    )
    print()
    print(
        f"herd: {args.herd} concurrent first requests over 2 servers "
        f"(each 2 gthread workers x {HERD_THREADS} threads), one PostgreSQL, one results directory"
    )
    print(f"{'round':<6} {'uncontended s':>13} {'herd s':>8} {'ratio':>7}  {'answers':<22} processed")
    print("-" * 72)
    for number, figure in enumerate(rounds, 1):
        answers = ", ".join(f"{n} x {status}" for status, n in sorted(figure.statuses.items()))
        answers += f", {figure.locations} URL" + ("s" if figure.locations != 1 else "")
        print(
            f"{number:<6} {figure.uncontended_s:>13.2f} {figure.herd_s:>8.2f} "
            f"{figure.herd_s / figure.uncontended_s:>6.2f}x  {answers:<22} "
            f"attempts {figure.attempts}, token {figure.token}"
        )
    alone = statistics.median(figure.uncontended_s for figure in rounds)
    crowd = statistics.median(figure.herd_s for figure in rounds)
    print(f"{'median':<6} {alone:>13.2f} {crowd:>8.2f} {crowd / alone:>6.2f}x")
    print()
    print(
        f"warm hits: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{args.duration}s on one finished URL, "
        f"gunicorn 2 gthread workers x {WARM_THREADS} threads, {args.rounds} alternating runs each"
    )
    print(f"{'server':<22} {'median req/s':>13} {'runs':>30}")
    print("-" * 67)
    bare = statistics.median(throughput["bare"])
    ours = statistics.median(throughput["ours"])
    for label, key in (("bare WSGI 301", "bare"), ("FileProcessor", "ours")):
        runs = " ".join(f"{rate:.0f}" for rate in throughput[key])
        print(f"{label:<22} {statistics.median(throughput[key]):>13.0f} {runs:>30}")
    for note in notes:
        print(f"wrk reported: {note}")
    print()
    once = all(figure.once for figure in rounds)
    redirected = all(figure.all_redirected for figure in rounds)
    ratio = ours / bare
    print("targets")
    print(f"  herd processed exactly once, every round          {verdict(once)}")
    print(f"  every herd answer a 301 to the same URL           {verdict(redirected)}")
    print(
        f"  warm hits >= {THROUGHPUT_TARGET:.0%} of the bare app's req/s     "
        f"{ratio:.1%}  {verdict(ratio >= THROUGHPUT_TARGET)}"
    )
    print(f"  (herd wall time / one uncontended request: {crowd / alone:.2f}x, no target)")
    return 0 if once and redirected and ratio >= THROUGHPUT_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
