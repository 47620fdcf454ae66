"""The Django app: ``INSTALLED_APPS = [..., "fileproc_django"]``.

It has no models; it provides the ``fileprocessor`` template library and checks the
``FILEPROCESSOR`` settings when Django starts (``manage.py check``, ``runserver``).
"""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class FileProcessorAppConfig(AppConfig):
    name = "fileproc_django"
    verbose_name = "File processor"

    def ready(self) -> None:
        from .conf import check_settings

        checks.register(check_settings)
