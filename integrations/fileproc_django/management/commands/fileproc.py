"""``manage.py fileproc COMMAND``: the ``fileproc`` command line on the project's settings.

Every command of ``fileproc`` (``stats``, ``warm``, ``gc``, ``retry``, ``purge``,
``migrate``, ``show``, ``register`` ...) runs with the Config the site itself uses (built
from ``FILEPROCESSOR`` and Django's own settings, see :mod:`fileproc_django.conf`)
instead of ``FILEPROC_*`` variables, so it finds the site's store from any directory::

    python manage.py fileproc stats
    python manage.py fileproc gc --days 90 --delete
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from fileproc_django.conf import get_config


class Command(BaseCommand):
    help = "Run a fileproc command (stats, warm, gc, retry, purge, migrate ...) on the site's own settings."

    def add_arguments(self, parser) -> None:
        parser.add_argument("arguments", nargs="*", help="the fileproc command and its arguments")

    def run_from_argv(self, argv: list[str]) -> None:
        # Everything after "fileproc" belongs to fileproc's own parser (its --help included).
        from fileproc_wsgi.cli import main

        status = main(argv[2:], config=get_config(), prog=f"{argv[0]} fileproc")
        if status:
            raise SystemExit(status)

    def handle(self, *arguments: str, **options) -> None:
        from fileproc_wsgi.cli import main

        status = main(list(options["arguments"]), config=get_config(), prog="manage.py fileproc")
        if status:
            raise CommandError(f"fileproc exited with status {status}")
