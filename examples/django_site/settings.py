"""Settings of the example gallery: one app with a model, fileproc_django, no FILEPROCESSOR.

Without ``FILEPROCESSOR`` the adapter takes everything from Django's own settings: the
instruction store lives in ``DATABASES["default"]`` (migrated by ``manage.py migrate``),
results go under ``MEDIA_ROOT/fileproc`` and sources are read through the default
storage. Files are kept in ``DJANGO_SITE_DIRECTORY`` (serve.py's ``--directory``; default
``examples/django_site/instance``, next to this file, so serve.py and manage.py find the
same site from any directory): the database ``site.db`` and ``media/`` (the photos, and
the results in ``media/fileproc/``).
"""

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE_DIRECTORY = Path(os.environ.get("DJANGO_SITE_DIRECTORY") or HERE / "instance").resolve()

# A development example: bad instruction text in the template shows as Django's error
# page naming the template line, instead of an empty space on the page.
DEBUG = True
SECRET_KEY = "an-example-only-key-never-use-it-in-production"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", os.environ.get("DJANGO_SITE_HOST", "127.0.0.1")]
ROOT_URLCONF = "django_site.urls"
# manage.py runserver serves this application too, wrapped by the middleware.
WSGI_APPLICATION = "django_site.wsgi.application"
INSTALLED_APPS = ["django_site.gallery", "fileproc_django"]
MIDDLEWARE = []
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [HERE / "templates"]}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": EXAMPLE_DIRECTORY / "site.db"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
MEDIA_ROOT = EXAMPLE_DIRECTORY / "media"
MEDIA_URL = "/media/"
USE_TZ = True
