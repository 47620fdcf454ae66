"""Serve the example gallery with waitress, in one command::

    python examples/django_site/serve.py [--host 127.0.0.1] [--port 8000] [--directory DIR]

DIR (default ``examples/django_site/instance``, whatever the current directory) holds the SQLite
database (``site.db``: the gallery's photos and the instruction store) and ``media/``
(the sample photos, written when missing, and the results in ``media/fileproc/``). The
gallery is at ``/``; the URL is printed once the port is open.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve the fileproc_django example gallery.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--directory", help="where files are kept (default: examples/django_site/instance)")
    arguments = parser.parse_args(argv)

    # settings.py reads these when the WSGI module imports it.
    if arguments.directory:
        os.environ["DJANGO_SITE_DIRECTORY"] = str(Path(arguments.directory).resolve())
    os.environ["DJANGO_SITE_HOST"] = arguments.host
    sys.path.insert(0, str(EXAMPLES))
    if importlib.util.find_spec("fileproc_django") is None:
        # A checkout whose virtualenv was installed before the adapter existed.
        sys.path.insert(0, str(EXAMPLES.parent / "integrations"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import waitress

    from django_site.wsgi import application

    server = waitress.create_server(application, host=arguments.host, port=arguments.port)
    port = getattr(server, "effective_port", arguments.port)
    print(f"fileproc_django example on http://{arguments.host}:{port}/", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
