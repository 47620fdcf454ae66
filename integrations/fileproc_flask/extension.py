"""The Flask extension: one object, ``init_app`` per application, state kept per app.

The extension object holds no app of its own (one module-level ``FileProcessor()``
serves every app an app factory makes); what belongs to one app — its Config, its
registrar, the middleware — is kept in ``app.extensions["fileproc"]``'s per-app table
and found again through ``current_app`` or an explicit ``app``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from flask import Flask, current_app

from fileproc_jinja2 import FileProcessorExtension
from fileproc_wsgi import Config
from fileproc_wsgi import FileProcessor as Middleware
from fileproc_wsgi.registrar import registrar_for

from .settings import config_from_app

if TYPE_CHECKING:
    from fileproc_wsgi.registrar import Registrar
    from fileproc_wsgi.remote import RemoteRegistrar

EXTENSION_KEY = "fileproc"

log = logging.getLogger("fileproc_flask")


@dataclasses.dataclass(frozen=True)
class _AppState:
    config: Config
    registrar: Registrar | RemoteRegistrar
    middleware: Middleware | None


class _JinjaSettings(Protocol):
    """What FileProcessorExtension reads from the environment (its ``extend``)."""

    fileprocessor_registrar: object
    fileprocessor_strict: bool | Callable[[], object]


class FileProcessor:
    """Thumbnails for a Flask app: the ``{% fileprocessor %}`` block in its templates,
    the middleware that makes them, and the ``flask fileproc`` commands.

    ``FileProcessor(app)`` or, with an app factory, ``fp = FileProcessor()`` once and
    ``fp.init_app(app)`` in the factory. Settings are the app's ``FILEPROC_*`` config
    keys (see :mod:`fileproc_flask.settings`), read when ``init_app`` runs, so set them
    before calling it.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._states: weakref.WeakKeyDictionary[Flask, _AppState] = weakref.WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the app's settings, add the block to ``app.jinja_env``, wrap
        ``app.wsgi_app`` and add the ``flask fileproc`` commands.

        Raises :class:`fileproc_wsgi.ConfigError` naming the config key at fault. Calling
        it again for the same app changes nothing; another FileProcessor's ``init_app``
        on that app is a RuntimeError.
        """
        if app in self._states:
            return
        other = app.extensions.get(EXTENSION_KEY)
        if other is not None:
            # A second middleware and registrar would each write half of a page's work.
            raise RuntimeError(
                f"fileproc_flask: the app {app.name!r} already has a FileProcessor; "
                "call init_app once per app, with one FileProcessor"
            )
        config = config_from_app(app)
        _warn_of_a_relative_upload_folder(app, config)
        registrar = registrar_for(config)
        middleware = None
        if not config.registrar_url:
            # Given the template's registrar, the middleware writes each page's new
            # registrations in one transaction, before the page is sent.
            middleware = Middleware(app.wsgi_app, config, registrar=registrar)
            # Flask documents this wrapping; its annotations make wsgi_app a plain method.
            app.wsgi_app = middleware  # type: ignore[method-assign]
        self._states[app] = _AppState(config, registrar, middleware)
        app.extensions[EXTENSION_KEY] = self

        # add_extension works on an environment Flask has already built, which
        # jinja_options (read once, when app.jinja_env is first touched) would not.
        environment = app.jinja_env
        if FileProcessorExtension.identifier not in environment.extensions:
            environment.add_extension(FileProcessorExtension)
        settings = cast(_JinjaSettings, environment)
        settings.fileprocessor_registrar = registrar
        # A callable, read at each render: app.debug set after create_app (app.run(debug=True),
        # flask run --debug) still decides, as Flask's own debug behaviour does. TESTING too,
        # or a project's tests would pass on a page whose block is broken.
        settings.fileprocessor_strict = lambda: app.debug or app.testing

        from .commands import fileproc_command

        app.cli.add_command(fileproc_command)

    def get_config(self, app: Flask | None = None) -> Config:
        """The Config of ``app`` (default: the current app); raises RuntimeError if
        ``init_app`` was not called for it."""
        return self._state(app).config

    def get_registrar(self, app: Flask | None = None):
        """The registrar the templates of ``app`` use (a ``Registrar``, or a
        ``RemoteRegistrar`` when ``FILEPROC_REGISTRAR_URL`` is set)."""
        return self._state(app).registrar

    def get_middleware(self, app: Flask | None = None) -> Middleware | None:
        """The middleware wrapped around ``app.wsgi_app``; None when another server
        processes (``FILEPROC_REGISTRAR_URL``)."""
        return self._state(app).middleware

    def close(self, app: Flask | None = None) -> None:
        """Close the database connections of ``app`` (tests, or an app being dropped).

        Nothing needs it at process exit: connections close with the process, and a
        per-request hook (``teardown_appcontext``) is no place for a registrar the
        whole process shares.
        """
        # The middleware was given the registrar's store: closing one closes both.
        self._state(app).registrar.close()

    def _state(self, app: Flask | None) -> _AppState:
        # Flask annotates current_app as the app itself, not the LocalProxy it is.
        app = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
        state = self._states.get(app)
        if state is None:
            raise RuntimeError(
                f"fileproc_flask: init_app was not called for the app {app.name!r}; "
                "call FileProcessor().init_app(app) in the app factory"
            )
        return state


def _warn_of_a_relative_upload_folder(app: Flask, config: Config) -> None:
    """Say so when fileproc and the app's own ``file.save`` would use two folders.

    Flask's upload pattern, ``os.path.join(app.config["UPLOAD_FOLDER"], name)``, resolves
    a relative folder against the working directory, and fileproc against
    ``app.root_path``: when they differ every picture prints its empty branch, silently.
    """
    uploads = app.config.get("UPLOAD_FOLDER")
    if not isinstance(uploads, (str, os.PathLike)) or not os.fspath(uploads) or os.path.isabs(uploads):
        return
    read = os.path.abspath(os.path.join(app.root_path, uploads))
    if read not in config.source_roots.values():
        return  # FILEPROC_SOURCE_ROOTS chose other roots: fileproc does not read it
    saved = os.path.abspath(uploads)
    if os.path.realpath(read) == os.path.realpath(saved):
        return
    log.warning(
        "fileproc_flask: UPLOAD_FOLDER %r is relative: fileproc reads pictures from %s "
        "(under app.root_path), but os.path.join(app.config['UPLOAD_FOLDER'], name) names a "
        "file in %s (under the working directory); make UPLOAD_FOLDER absolute, such as "
        "os.path.join(app.instance_path, 'uploads')",
        os.fspath(uploads),
        read,
        saved,
    )
