"""The example's WSGI application: Django behind fileproc_django's middleware.

Any WSGI server can run it (``serve.py`` uses waitress). The first time, the sample
photos are written into ``MEDIA_ROOT/photos``, the database is migrated (which creates
the instruction store's tables too) and the gallery is filled from its fixture.
"""

import os

from django.core.wsgi import get_wsgi_application

import fileproc_django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")

application = get_wsgi_application()


def prepare() -> None:
    from django.conf import settings
    from django.core.management import call_command

    from django_site.gallery.models import Photo
    from fileproc_wsgi.demo import make_samples

    make_samples(os.path.join(settings.MEDIA_ROOT, "photos"))
    call_command("migrate", interactive=False, verbosity=0)
    if not Photo.objects.exists():
        call_command("loaddata", "photos", verbosity=0)


prepare()
application = fileproc_django.wrap(application)
