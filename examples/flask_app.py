"""A Flask site using the Jinja2 ``fileprocessor`` block with ``<% %>`` block delimiters.

One command runs it (sample pictures are made on the first run)::

    python examples/flask_app.py [--host 127.0.0.1] [--port 8000] [--directory DIR]

DIR (default ``.fileproc-flask-example`` in the current directory) holds the sources in
``media/``, the SQLite database ``fileproc.db`` and the results in ``results/``. The
gallery at ``/`` registers its thumbnails while it renders; the middleware wrapped
around Flask makes each one when the browser first asks for it.
"""

from __future__ import annotations

import argparse
import os

from flask import Flask, render_template

from fileproc_wsgi import Config, FileProcessor, Registrar
from fileproc_wsgi.demo import make_samples

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIRECTORY = ".fileproc-flask-example"


def create_app(directory: str | os.PathLike[str] = DEFAULT_DIRECTORY) -> Flask:
    """The gallery app, its files in ``directory`` (made if missing)."""
    directory = os.path.abspath(directory)
    media = os.path.join(directory, "media")
    make_samples(media)
    config = Config(
        source_roots={"default": media},
        database_url=f"sqlite:///{os.path.join(directory, 'fileproc.db')}",
        storage=os.path.join(directory, "results"),
    )
    registrar = Registrar(config)

    app = Flask(__name__, root_path=HERE, template_folder="templates")
    # Flask builds app.jinja_env from these on first use, so they are set before that.
    app.jinja_options = {
        **app.jinja_options,
        "block_start_string": "<%",
        "block_end_string": "%>",
        "trim_blocks": True,
        "lstrip_blocks": True,
        "extensions": ["fileproc_jinja2.FileProcessorExtension"],
    }
    app.jinja_env.fileprocessor_registrar = registrar
    # Like Django's DEBUG: a developer sees bad instruction text, visitors never do.
    app.jinja_env.fileprocessor_strict = app.debug

    @app.get("/")
    def gallery():
        return render_template(
            "flask_gallery.html",
            landscape={"path": "landscape.jpg", "title": 'Hills at "dusk" & sun'},
            phone="phone.jpg",
        )

    # Given the registrar, the middleware writes each page's new thumbnails in one commit.
    app.wsgi_app = FileProcessor(app.wsgi_app, config, registrar=registrar)
    return app


def main(argv: list[str] | None = None) -> None:
    import waitress

    parser = argparse.ArgumentParser(description="Serve the fileproc_wsgi Flask example with waitress.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument(
        "--directory",
        default=DEFAULT_DIRECTORY,
        help=f"where sources, database and results live (default: ./{DEFAULT_DIRECTORY})",
    )
    options = parser.parse_args(argv)
    server = waitress.create_server(create_app(options.directory), host=options.host, port=options.port)
    # create_server has bound the socket, so the address printed is already answering.
    host, port = (
        getattr(server, "effective_host", options.host),
        getattr(server, "effective_port", options.port),
    )
    host = f"[{host}]" if ":" in str(host) else host
    print(f"fileproc_wsgi Flask example: http://{host}:{port}/", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
