"""``manage.py fileproc COMMAND``: the ``fileproc`` command line on the project's settings.

Every command of ``fileproc`` (``stats``, ``warm``, ``gc``, ``retry``, ``purge``,
``migrate``, ``show``, ``register`` ...) runs with the Config the site itself uses (built
from ``FILEPROCESSOR`` and Django's own settings, see :mod:`fileproc_django.conf`)
instead of ``FILEPROC_*`` variables, so it finds the site's store from any directory::

    python manage.py fileproc stats
    python manage.py fileproc gc --days 90 --delete
    python manage.py fileproc stats --settings=mysite.prod

Django's own options (``--settings``, ``--pythonpath``, ``-v``, ``--traceback``,
``--no-color``) may stand anywhere; they are Django's, not passed on.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from fileproc_django.conf import get_config


class Command(BaseCommand):
    help = "Run a fileproc command (stats, warm, gc, retry, purge, migrate ...) on the site's own settings."

    def add_arguments(self, parser) -> None:
        parser.add_argument("arguments", nargs="*", help="the fileproc command and its arguments")

    def run_from_argv(self, argv: list[str]) -> None:
        # Everything after "fileproc" belongs to fileproc's own parser (its --help included),
        # except the options every manage.py command takes.
        from fileproc_wsgi.cli import main

        status = main(without_django_options(argv[2:]), config=get_config(), prog=f"{argv[0]} fileproc")
        if status:
            raise SystemExit(status)

    def handle(self, *arguments: str, **options) -> None:
        from fileproc_wsgi.cli import main

        status = main(list(options["arguments"]), config=get_config(), prog="manage.py fileproc")
        if status:
            raise CommandError(f"fileproc exited with status {status}")


# Django's own options, before or after the subcommand: manage.py has applied --settings
# and --pythonpath before loading this command, and the others mean nothing to fileproc.
_FLAGS = frozenset({"--traceback", "--no-color", "--force-color", "--skip-checks"})
_WITH_VALUE = frozenset({"--settings", "--pythonpath", "--verbosity", "-v"})


def without_django_options(arguments: list[str]) -> list[str]:
    """``arguments`` without the options of Django's command line (up to a ``--``)."""
    kept: list[str] = []
    rest = iter(arguments)
    for argument in rest:
        if argument == "--":
            kept.append(argument)
            kept.extend(rest)
            break
        if argument in _FLAGS or ("=" in argument and argument.split("=", 1)[0] in _WITH_VALUE):
            continue
        if argument in _WITH_VALUE:
            next(rest, None)
            continue
        if argument.startswith("-v") and argument[2:].isdigit():  # -v2
            continue
        kept.append(argument)
    return kept
