"""The ``fileproc`` command: demo, serve, check, register, show, retry, warm, gc, stats and purge.

Settings come from ``FILEPROC_*`` environment variables (see docs/configuration.md), the same
names as the :class:`~fileproc_wsgi.config.Config` fields, and from a TOML file given
by ``--config FILE`` or ``FILEPROC_CONFIG`` (:mod:`fileproc_wsgi.settings_file`), whose
relative paths are its own directory's. Commands that read what a site registered
(everything but ``migrate``, ``serve``, ``check`` and ``demo``) never make a store:
pointed where none exists, they say where they looked and exit with status 2.

``check`` is ``manage.py check``'s engine check for sites outside Django: every library
and plugin this installation lacks, with what to install. ``serve`` runs it once at start
in a child process (it imports every engine, which the web process otherwise never does)
and logs each line as a warning.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import math
import os
import subprocess
import sys

from .config import Config
from .errors import ConfigError, FileProcError
from .instructions import is_checksum
from .settings_file import VARIABLE, config_from_file


def build_parser(prog: str = "fileproc", *, hosted: bool = False) -> argparse.ArgumentParser:
    """The command line's parser: every command and its options (``hosted``: inside an
    application that gives the settings, so no ``--config`` and no ``demo``)."""
    parser = argparse.ArgumentParser(prog=prog)
    if not hosted:
        parser.add_argument("--config", dest="config_file", metavar="FILE", help=_CONFIG_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    if not hosted:
        demo = commands.add_parser("demo", help="serve a page of thumbnails made from sample images")
        demo.add_argument("--directory", default="fileproc-demo", help="where the sample sources go")
        _server_options(demo)

    serve = commands.add_parser("serve", help="run the standalone processing server")
    _server_options(serve)

    check = commands.add_parser(
        "check", help="list the libraries and plugins this installation lacks (exit status 1 if any)"
    )
    check.add_argument("--quiet", action="store_true", help="print nothing; answer with the exit status")

    register = commands.add_parser("register", help="register instructions and print their representation")
    register.add_argument("text", help="instructions, e.g. 'photos/a.jpg | fit 400x300'")

    show = commands.add_parser("show", help="print what is stored under a checksum")
    show.add_argument("checksum")

    retry = commands.add_parser(
        "retry", help="set failed jobs back to pending, so the next request makes them again"
    )
    retry.add_argument("checksums", nargs="*", metavar="CHECKSUM", help="failed jobs to reset")
    retry.add_argument("--all-failed", action="store_true", help="reset every failed job")

    warm = commands.add_parser("warm", help="make pending jobs (and failed ones due for retry) now")
    warm.add_argument("--workers", type=_positive, default=4, help="worker threads (default 4)")

    gc = commands.add_parser(
        "gc", help="find results not requested for N days and orphan files; --delete removes them"
    )
    gc.add_argument("--days", type=float, default=30.0, help="not requested for this many days (default 30)")
    gc.add_argument("--delete", action="store_true", help="delete them (the default is a dry run)")

    stats = commands.add_parser("stats", help="jobs by state, failures by reason, storage used")
    stats.add_argument("--json", action="store_true", help="print JSON")

    purge = commands.add_parser("purge", help="delete every result and row made from a source")
    purge.add_argument("source", metavar="SOURCE", help="the source reference, as in the instructions")

    commands.add_parser("migrate", help="bring the database's tables to this release's schema")

    # Also after the command (``fileproc stats --config site.toml``); SUPPRESS keeps the
    # command's parser from resetting a --config given before it.
    for command in () if hosted else commands.choices.values():
        command.add_argument(
            "--config", dest="config_file", metavar="FILE", default=argparse.SUPPRESS, help=_CONFIG_HELP
        )

    *others, last = commands.choices
    parser.description = f"The {prog} command: {', '.join(others)} and {last}."
    return parser


def main(argv: list[str] | None = None, *, config: Config | None = None, prog: str = "fileproc") -> int:
    """Run one command; ``config`` replaces ``FILEPROC_*`` (Django's ``manage.py fileproc``
    passes the one its settings build). Given a ``config``, the command offers neither
    ``--config`` nor ``demo`` (which builds its own site): the host application's
    settings are the only ones."""
    parser = build_parser(prog, hosted=config is not None)
    arguments = parser.parse_args(argv)
    arguments.config = config
    arguments.prog = prog
    if arguments.command == "gc" and arguments.days < 0:
        parser.error("gc: --days must not be negative")
    if arguments.command == "retry":
        if bool(arguments.checksums) == arguments.all_failed:
            parser.error("retry: give the checksums of failed jobs, or --all-failed (not both)")
        malformed = [text for text in arguments.checksums if not is_checksum(text)]
        if malformed:
            parser.error(f"retry: not a checksum (32 hex digits): {', '.join(malformed)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the store's migrations, run on first use
    try:
        return _COMMANDS[arguments.command](arguments)
    except FileProcError as error:
        detail = getattr(error, "detail", None)  # an outage's own words: an operator wants them
        print(f"fileproc: error: {error}" + (f" ({detail})" if detail else ""), file=sys.stderr)
        return 2


_CONFIG_HELP = (
    "a TOML file of settings (relative paths are the file's directory's); "
    f"FILEPROC_* variables win over it; default: ${VARIABLE}"
)


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=8)


def _serve(application, arguments: argparse.Namespace, what: str) -> int:
    import waitress

    print(f"fileproc: {what} on http://{arguments.host}:{arguments.port}/", flush=True)
    waitress.serve(
        application, host=arguments.host, port=arguments.port, threads=arguments.threads, ident="fileproc"
    )
    return 0


def _demo(arguments: argparse.Namespace) -> int:
    from .demo import build

    return _serve(build(arguments.directory), arguments, "demo")


def _serve_command(arguments: argparse.Namespace) -> int:
    from .middleware import FileProcessor

    application = FileProcessor(None, _config(arguments))
    _log_missing()
    return _serve(application, arguments, "processing server")


def _check(arguments: argparse.Namespace) -> int:
    lines = _missing_lines()
    if not arguments.quiet:
        for line in lines:
            print(line)
        if not lines:
            print("fileproc: every library and plugin that fileproc_wsgi can use is installed")
    return 1 if lines else 0


def _missing_lines() -> list[str]:
    """One line for each library or plugin this installation lacks, with its advice."""
    from . import engines, plugins

    # The plugins' own load warnings would repeat the lines printed here.
    logging.getLogger(plugins.__name__).setLevel(logging.ERROR)
    logging.getLogger(engines.__name__).setLevel(logging.ERROR)
    lines = []
    for missing in engines.missing(load=True):
        line = f"missing {missing.engine}: {missing.why}"
        if missing.extra:
            line += f": pip install 'fileproc-wsgi[{missing.extra}]'"
        kind, _, name = missing.engine.partition(":")
        problem = plugins.find_problem(name) if kind == "plugin" and ":" not in name else None
        if problem is not None:
            line += f"; fix or uninstall {problem.distribution.rsplit(' ', 1)[0]}"
        lines.append(line)
    return lines


def _log_missing() -> None:
    """Log what ``fileproc check`` finds, once, one warning a line: run in a child process
    so the server never imports the engines it will not use (jobs run in workers)."""
    log = logging.getLogger("fileproc_wsgi.cli")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "fileproc_wsgi.cli", "check"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("fileproc check could not be run to list missing libraries: %s", error)
        return
    if done.returncode not in (0, 1):  # the check itself broke: an engine that cannot even be imported
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        log.warning("fileproc check failed, so missing libraries are not listed: %s", last)
    for line in done.stdout.splitlines():
        if line.startswith("missing "):
            log.warning("%s", line)


def _register(arguments: argparse.Namespace) -> int:
    from .registrar import Registrar

    config, store = _existing_store(arguments)
    try:
        representation = Registrar(config, store=store).register(arguments.text)
    finally:
        store.dispose()
    print(json.dumps({**dataclasses.asdict(representation), "html": representation.html}, indent=2))
    return 0


def _show(arguments: argparse.Namespace) -> int:
    _, store = _existing_store(arguments)
    try:
        job = store.get(arguments.checksum)
        shown = dataclasses.asdict(job)
        shown["next_attempt"] = _next_attempt(job, store.now())
        for name in _TIMES:
            if shown[name] is not None:
                shown[name] = _iso(shown[name])
    finally:
        store.dispose()
    print(json.dumps(shown, indent=2))
    return 0


# Unix seconds in the store; shown as UTC dates, which a person can read.
_TIMES = ("lease_until", "retry_at", "created_at", "completed_at", "accessed_at")


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")


def _next_attempt(job, now: float) -> str | None:
    """When the job will be tried again, in words: None for a job that is not failed."""
    if job.state != "failed":
        return None
    if job.retry_at is None:
        return "never by itself: a permanent failure; `fileproc retry` resets it"
    if job.retry_at <= now:
        return "on the next request"
    return f"on the first request after {_iso(job.retry_at)} (in {math.ceil(job.retry_at - now)} s)"


def _retry(arguments: argparse.Namespace) -> int:
    _, store = _existing_store(arguments)
    try:
        if arguments.all_failed:
            reset = store.reset()
            left: list[str] = []
        else:
            wanted = list(dict.fromkeys(arguments.checksums))
            failed = {job.checksum for job in map(store.find, wanted) if job and job.state == "failed"}
            reset = store.reset(failed)
            left = [checksum for checksum in wanted if checksum not in failed]
        unknown = 0
        for checksum in left:
            job = store.find(checksum)
            if job is None:
                unknown += 1
                print(f"fileproc: {checksum}: no instructions registered under it", file=sys.stderr)
            else:
                print(f"fileproc: {checksum} is {job.state}, not failed; left as it is", file=sys.stderr)
    finally:
        store.dispose()
    print(f"{reset} failed job{'' if reset == 1 else 's'} reset to pending")
    return 1 if unknown else 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("expected a whole number of at least 1")
    return value


def _config(arguments: argparse.Namespace) -> Config:
    if arguments.config is not None:
        return arguments.config
    path = arguments.config_file or os.environ.get(VARIABLE)
    return config_from_file(path) if path else Config.from_env()


def _existing_store(arguments: argparse.Namespace):
    """The config and the store it names; a ConfigError saying where it looked when no
    store was ever made there (a wrong working directory, a relative SQLite URL)."""
    from .store import find_store, location

    config = _config(arguments)
    store = find_store(config.database_url)
    if store is None:
        where = location(config.database_url)
        prog = arguments.prog
        if arguments.config is not None:
            hint = f"the settings given to {prog} name it; `{prog} migrate` makes an empty one"
        else:
            hint = (
                f"run from the site's directory, or give the site's settings: FILEPROC_DATABASE_URL "
                f"or --config FILE; `{prog} migrate` makes an empty store there"
            )
        raise ConfigError(f"no store at {where} ({hint})")
    return config, store


def _open(arguments: argparse.Namespace):
    from .storage import open_storage

    config, store = _existing_store(arguments)
    try:
        return config, store, open_storage(config)
    except BaseException:
        store.dispose()
        raise


def _warm(arguments: argparse.Namespace) -> int:
    from . import maintenance

    config, store, storage = _open(arguments)
    interactive = sys.stderr.isatty()

    def progress(report: maintenance.WarmReport) -> None:
        line = (
            f"warm: {report.handled}/{report.total} ({report.done} made, {report.failed} failed, "
            f"{report.skipped} taken elsewhere) {report.rate:.1f} jobs/s"
        )
        print(
            ("\r" + line) if interactive else line,
            end="" if interactive else "\n",
            file=sys.stderr,
            flush=True,
        )

    try:
        report = maintenance.warm(config, store, storage, workers=arguments.workers, progress=progress)
    finally:
        store.dispose()
    if interactive:
        print(file=sys.stderr)
    print(
        f"{report.done} made, {report.failed} failed, {report.skipped} taken elsewhere"
        f" in {report.seconds:.1f} s"
    )
    for reason, count in report.reasons.most_common(10):
        print(f"  {count:>6}  {reason}")
    return 1 if report.failed else 0


def _gc(arguments: argparse.Namespace) -> int:
    from . import maintenance

    _, store, storage = _open(arguments)
    try:
        report = maintenance.gc(store, storage, days=arguments.days, delete=arguments.delete)
    finally:
        store.dispose()
    size = maintenance.human_bytes
    verb = "deleted" if report.deleted else "to delete"
    print(
        f"results not requested for {report.days:g} days: {report.stale} ({size(report.stale_bytes)}) {verb}"
    )
    print(f"orphan result files (no row): {report.orphans} ({size(report.orphan_bytes)}) {verb}")
    print(f"leftover temporary files: {report.temporary} ({size(report.temporary_bytes)}) {verb}")
    if report.unknown:
        print(f"other files, left alone: {report.unknown}")
    if not report.deleted:
        print("dry run: nothing was deleted; run again with --delete to delete these")
    return 0


def _stats(arguments: argparse.Namespace) -> int:
    from . import maintenance
    from .store import STATES, location

    config, store = _existing_store(arguments)
    try:
        found = maintenance.stats(store)
    finally:
        store.dispose()
    oldest = found["oldest_pending"]
    where = location(config.database_url)
    if arguments.json:
        shown = {"store": where, **{key: found[key] for key in ("states", "results", "result_bytes")}}
        shown["failures"] = [{"reason": reason, "count": count} for reason, count in found["failures"]]
        shown["oldest_pending"] = None if oldest is None else _iso(oldest)
        print(json.dumps(shown, indent=2))
        return 0
    states = found["states"]
    print(f"store: {where}")
    print("jobs: " + ", ".join(f"{states.get(state, 0)} {state}" for state in STATES))
    print(f"storage used: {maintenance.human_bytes(found['result_bytes'])} in {found['results']} results")
    if oldest is None:
        print("oldest pending: none")
    else:
        print(f"oldest pending: {_iso(oldest)} ({_age(found['now'] - oldest)} ago)")
    if found["failures"]:
        print("failures by reason:")
        for reason, count in found["failures"]:
            print(f"  {count:>6}  {reason}")
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{max(0, seconds):.0f} s"


def _purge(arguments: argparse.Namespace) -> int:
    from . import maintenance

    _, store, storage = _open(arguments)
    try:
        report = maintenance.purge(store, storage, arguments.source)
    finally:
        store.dispose()
    freed = maintenance.human_bytes(report.result_bytes)
    print(
        f"{arguments.source}: {report.rows} row{'' if report.rows == 1 else 's'} and {report.files} "
        f"result file{'' if report.files == 1 else 's'} ({freed}) deleted"
    )
    return 0


def _migrate(arguments: argparse.Namespace) -> int:
    from .store import location, upgrade

    url = _config(arguments).database_url
    before, after = upgrade(url)
    if before == after:
        print(f"fileproc_jobs: already at revision {after} ({location(url)})")
    else:
        print(f"fileproc_jobs: upgraded from {before or 'no revision'} to {after} ({location(url)})")
    return 0


_COMMANDS = {
    "demo": _demo,
    "serve": _serve_command,
    "check": _check,
    "register": _register,
    "show": _show,
    "retry": _retry,
    "warm": _warm,
    "gc": _gc,
    "stats": _stats,
    "purge": _purge,
    "migrate": _migrate,
}

if __name__ == "__main__":
    sys.exit(main())
