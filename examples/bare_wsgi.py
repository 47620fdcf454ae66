"""The smallest site using fileproc_wsgi: a plain WSGI function and the middleware.

Run it with one command (sample pictures are written on first run)::

    python examples/bare_wsgi.py            # http://127.0.0.1:8000

The page registers its thumbnails while it renders; the middleware makes each one when
the browser first asks for it. ``--directory`` (default ``.fileproc-bare-example``) holds
the sources (``media/``), the SQLite database and the results; ``FILEPROC_*`` variables
override any setting.
"""

from __future__ import annotations

import argparse
import html
import os

from fileproc_wsgi import Config, FileProcError, FileProcessor, Registrar

THUMBNAILS = (
    "landscape.jpg | fit 400x300",
    "landscape.jpg | fill 200x200 | format webp",
    "phone.jpg | fit 300x300",
    "logo.png | pad 240x240 color=#e2e8f0",
    "missing.jpg | fit 200x200",
)


def make_app(config: Config) -> FileProcessor:
    registrar = Registrar(config)

    def page(environ, start_response):
        pictures = []
        for text in THUMBNAILS:
            try:
                pictures.append(registrar.register(text).render(alt=text))
            except FileProcError as error:  # a missing or bad source never breaks the page
                pictures.append(f'<p class="missing">{html.escape(str(error))}</p>')
        body = ("<!doctype html><title>fileproc_wsgi</title>\n" + "\n".join(pictures)).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]

    # Given the registrar, the middleware writes a page's new registrations in one commit.
    return FileProcessor(page, config, registrar=registrar)


def config_for(directory: str) -> Config:
    """Everything under ``directory``, unless a ``FILEPROC_*`` variable says otherwise."""
    from fileproc_wsgi.demo import make_samples

    media = os.path.join(directory, "media")
    make_samples(media)
    defaults = {
        "source_roots": {"default": media},
        "database_url": f"sqlite:///{os.path.abspath(os.path.join(directory, 'fileproc.db'))}",
        "storage": os.path.join(directory, "results"),
    }
    unset = {name: value for name, value in defaults.items() if f"FILEPROC_{name.upper()}" not in os.environ}
    return Config.from_env(**unset)


def main(argv: list[str] | None = None) -> None:
    import waitress

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--directory", default=".fileproc-bare-example")
    arguments = parser.parse_args(argv)
    application = make_app(config_for(arguments.directory))
    print(f"bare WSGI example on http://{arguments.host}:{arguments.port}/", flush=True)
    waitress.serve(application, host=arguments.host, port=arguments.port)


if __name__ == "__main__":
    main()
