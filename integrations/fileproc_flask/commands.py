"""``flask fileproc …``: every ``fileproc`` command, run on the app's own settings.

The arguments are handed to :func:`fileproc_wsgi.cli.main` as they are, so the commands,
their options and ``--help`` are the ones ``fileproc`` documents, and the store, the
results and the source roots are the app's wherever the command is run from.
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext


@click.command(
    "fileproc",
    # fileproc's own parser reads everything after the word, --help included.
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
    short_help="This app's thumbnails: stats, warm, retry, gc, purge, show, migrate.",
)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def fileproc_command(arguments: tuple[str, ...]) -> None:
    """Run a fileproc command (see `flask fileproc --help`) with this app's settings."""
    from fileproc_wsgi.cli import main

    extension = current_app.extensions.get("fileproc")
    if extension is None:  # the command object added to an app by hand, without init_app
        raise click.UsageError("this app has not called fileproc_flask.FileProcessor().init_app(app)")
    code = main(list(arguments), config=extension.get_config(), prog="flask fileproc")
    if code:
        raise SystemExit(code)
