"""The standalone processing server as a WSGI application, for production servers.

``gunicorn fileproc_wsgi.wsgi:application`` runs what ``fileproc serve`` runs under
waitress: :class:`~fileproc_wsgi.middleware.FileProcessor` with no application behind
it, configured from ``FILEPROC_*`` environment variables. ``application`` is built the
first time something asks for it, not when the module is imported, so that importing
reads no settings and opens no database; a pre-forking server that loads the
application in each worker gets one store (and one connection pool) per worker.
"""

from __future__ import annotations

from .config import Config
from .middleware import FileProcessor


def create_application() -> FileProcessor:
    """A new processing server configured from ``FILEPROC_*`` environment variables."""
    return FileProcessor(None, Config.from_env())


def __getattr__(name: str) -> FileProcessor:
    if name != "application":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    application = create_application()
    globals()["application"] = application
    return application
