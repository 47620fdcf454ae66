"""The example's WSGI application: Django behind fileproc_django's middleware.

Any WSGI server can run it (``serve.py`` uses waitress). The sample sources are
written into the example directory the first time.
"""

import os

from django.core.wsgi import get_wsgi_application

import fileproc_django
from fileproc_wsgi.demo import make_samples

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")

application = get_wsgi_application()
make_samples(fileproc_django.get_config().source_roots["default"])
application = fileproc_django.wrap(application)
