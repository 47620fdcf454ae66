"""Settings of the example gallery: no database models, one template, fileproc_django.

``serve.py`` passes the working directory in ``DJANGO_SITE_DIRECTORY`` (default
``.fileproc-django-example`` in the current directory): sample sources in ``media/``,
the instruction database in ``fileproc.db`` and the results in ``results/``.
"""

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE_DIRECTORY = Path(os.environ.get("DJANGO_SITE_DIRECTORY", ".fileproc-django-example")).resolve()

# A development example: bad instruction text in the template shows as Django's error
# page naming the template line, instead of an empty space on the page.
DEBUG = True
SECRET_KEY = "an-example-only-key-never-use-it-in-production"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", os.environ.get("DJANGO_SITE_HOST", "127.0.0.1")]
ROOT_URLCONF = "django_site.urls"
INSTALLED_APPS = ["fileproc_django"]
MIDDLEWARE = []
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [HERE / "templates"]}]

FILEPROCESSOR = {
    "database_url": f"sqlite:///{EXAMPLE_DIRECTORY / 'fileproc.db'}",
    "storage": str(EXAMPLE_DIRECTORY / "results"),
    "source_roots": {"default": str(EXAMPLE_DIRECTORY / "media")},
}
