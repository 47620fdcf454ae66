"""The Django app: ``INSTALLED_APPS = [..., "fileproc_django"]``.

When Django starts it registers the ``django:`` kind of source root, the system checks
(``manage.py check``) and the ``post_migrate`` handler that brings the instruction
store's tables up to date on ``manage.py migrate``. The app has no models of its own
(``models.py`` is empty, so that Django sends it ``post_migrate``); the store's tables
come from its own migrations, :mod:`fileproc_wsgi.store.migrations`.
"""

from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class FileProcessorAppConfig(AppConfig):
    name = "fileproc_django"
    verbose_name = "File processor"

    def ready(self) -> None:
        from . import checks, migrate, storages

        storages.register()
        checks.register()
        post_migrate.connect(migrate.upgrade_store, sender=self, dispatch_uid="fileproc_django.migrate")
