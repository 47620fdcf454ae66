"""The example's WSGI application: Django behind fileproc_django's middleware.

Any WSGI server can run it (``serve.py`` uses waitress). The sample sources are
written into the example directory the first time.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402 - needs DJANGO_SETTINGS_MODULE

import fileproc_django  # noqa: E402
from fileproc_wsgi.demo import make_samples  # noqa: E402

application = get_wsgi_application()
make_samples(fileproc_django.get_config().source_roots["default"])
application = fileproc_django.wrap(application)
