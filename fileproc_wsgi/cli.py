"""The ``fileproc`` command: demo, serve, register, show and retry.

Settings come from ``FILEPROC_*`` environment variables (see the README), the same
names as the :class:`~fileproc_wsgi.config.Config` fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import math
import sys

from .config import Config
from .errors import FileProcError
from .instructions import is_checksum


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fileproc", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="serve a page of thumbnails made from sample images")
    demo.add_argument("--directory", default="fileproc-demo", help="where the sample sources go")
    _server_options(demo)

    serve = commands.add_parser("serve", help="run the standalone processing server")
    _server_options(serve)

    register = commands.add_parser("register", help="register instructions and print their representation")
    register.add_argument("text", help="instructions, e.g. 'photos/a.jpg | fit 400x300'")

    show = commands.add_parser("show", help="print what is stored under a checksum")
    show.add_argument("checksum")

    retry = commands.add_parser(
        "retry", help="set failed jobs back to pending, so the next request makes them again"
    )
    retry.add_argument("checksums", nargs="*", metavar="CHECKSUM", help="failed jobs to reset")
    retry.add_argument("--all-failed", action="store_true", help="reset every failed job")

    arguments = parser.parse_args(argv)
    if arguments.command == "retry":
        if bool(arguments.checksums) == arguments.all_failed:
            parser.error("retry: give the checksums of failed jobs, or --all-failed (not both)")
        malformed = [text for text in arguments.checksums if not is_checksum(text)]
        if malformed:
            parser.error(f"retry: not a checksum (32 hex digits): {', '.join(malformed)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return _COMMANDS[arguments.command](arguments)
    except FileProcError as error:
        print(f"fileproc: error: {error}", file=sys.stderr)
        return 2


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

    return _serve(FileProcessor(None, Config.from_env()), arguments, "processing server")


def _register(arguments: argparse.Namespace) -> int:
    from .registrar import Registrar

    representation = Registrar(Config.from_env()).register(arguments.text)
    print(json.dumps({**dataclasses.asdict(representation), "html": representation.html}, indent=2))
    return 0


def _show(arguments: argparse.Namespace) -> int:
    from .store import InstructionStore

    store = InstructionStore(Config.from_env().database_url)
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
    from .store import InstructionStore

    store = InstructionStore(Config.from_env().database_url)
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


_COMMANDS = {"demo": _demo, "serve": _serve_command, "register": _register, "show": _show, "retry": _retry}

if __name__ == "__main__":
    sys.exit(main())
