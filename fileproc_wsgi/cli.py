"""The ``fileproc`` command: demo, serve, register and show.

Settings come from ``FILEPROC_*`` environment variables (see the README), the same
names as the :class:`~fileproc_wsgi.config.Config` fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from .config import Config
from .errors import FileProcError


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

    arguments = parser.parse_args(argv)
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

    job = InstructionStore(Config.from_env().database_url).get(arguments.checksum)
    print(json.dumps(dataclasses.asdict(job), indent=2))
    return 0


_COMMANDS = {"demo": _demo, "serve": _serve_command, "register": _register, "show": _show}

if __name__ == "__main__":
    sys.exit(main())
