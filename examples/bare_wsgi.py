"""The smallest site using fileproc_wsgi: a plain WSGI function and the middleware.

Run it from a directory with a picture called ``photo.jpg`` in it::

    python examples/bare_wsgi.py            # http://127.0.0.1:8000

The page registers two thumbnails while it renders; the middleware makes them when the
browser asks. Settings come from FILEPROC_* variables (none are needed).
"""

from __future__ import annotations

import html

from fileproc_wsgi import Config, FileProcError, FileProcessor, Registrar


def make_app(config: Config) -> FileProcessor:
    registrar = Registrar(config)

    def page(environ, start_response):
        pictures = []
        for text in ("photo.jpg | fit 400x300", "photo.jpg | fill 200x200 | format webp"):
            try:
                pictures.append(registrar.register(text).render(alt=text))
            except FileProcError as error:  # a missing or bad source never breaks the page
                pictures.append(f"<p>{html.escape(str(error))}</p>")
        body = ("<!doctype html><title>fileproc_wsgi</title>" + "\n".join(pictures)).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [body]

    return FileProcessor(page, config, store=registrar.store)


if __name__ == "__main__":
    import waitress

    waitress.serve(make_app(Config.from_env()), host="127.0.0.1", port=8000)
