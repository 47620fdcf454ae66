"""A Flask site with an app factory, a blueprint and fileproc_flask.

Run it with Flask's own command, or with waitress in one command (sample pictures are
made on the first run)::

    flask --app examples/flask_app.py run --debug
    python examples/flask_app.py [--host 127.0.0.1] [--port 8000] [--directory DIR]

DIR is the app's instance folder (default ``examples/instance``): the uploaded pictures
in ``uploads/`` (the app's ``UPLOAD_FOLDER``), the SQLite store and the results in
``fileproc/``. ``flask --app examples/flask_app.py fileproc stats`` reports on that store
from any directory. The page at ``/`` registers its thumbnails while it renders; the
middleware that ``init_app`` wrapped around the app makes each one when the browser
first asks for it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, render_template

from fileproc_flask import FileProcessor
from fileproc_wsgi.demo import make_samples

HERE = os.path.dirname(os.path.abspath(__file__))

# One extension object for every app the factory makes; each app keeps its own state.
fileproc = FileProcessor()
gallery = Blueprint("gallery", __name__)

# What a user table would hold: a picture's name under UPLOAD_FOLDER, or None.
PEOPLE = [
    {"name": "Ada", "picture": "phone.jpg"},
    {"name": "Grace", "picture": None},
    {"name": "Linus", "picture": "landscape.jpg"},
    {"name": "Margaret", "picture": ""},
]


@gallery.get("/")
def index():
    return render_template(
        "flask_app.html",
        landscape={"path": "landscape.jpg", "title": 'Hills at "dusk" & sun'},
        phone="phone.jpg",
        people=PEOPLE,
    )


def create_app(config: Mapping[str, Any] | None = None, instance_path: str | None = None) -> Flask:
    """The site; ``config`` (keys as in ``app.config``) overrides its settings, and
    ``instance_path`` its instance folder (default ``examples/instance``)."""
    app = Flask(
        __name__,
        root_path=HERE,
        instance_path=os.path.abspath(instance_path or os.path.join(HERE, "instance")),
        template_folder="templates",
        static_folder=None,
    )
    app.config.from_mapping(UPLOAD_FOLDER=os.path.join(app.instance_path, "uploads"))
    if config:
        app.config.from_mapping(config)
    make_samples(app.config["UPLOAD_FOLDER"])  # stands in for pictures users uploaded
    fileproc.init_app(app)
    app.register_blueprint(gallery)
    return app


def main(argv: list[str] | None = None) -> None:
    import waitress

    parser = argparse.ArgumentParser(description="Serve the fileproc_flask example with waitress.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument(
        "--directory", help="the instance folder: uploads, store and results (default: examples/instance)"
    )
    options = parser.parse_args(argv)
    server = waitress.create_server(
        create_app(instance_path=options.directory), host=options.host, port=options.port
    )
    # create_server has bound the socket, so the address printed is already answering.
    host, port = (
        getattr(server, "effective_host", options.host),
        getattr(server, "effective_port", options.port),
    )
    host = f"[{host}]" if ":" in str(host) else host
    print(f"fileproc_flask example: http://{host}:{port}/", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()
